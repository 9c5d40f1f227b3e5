"""Resume = never stopped (issue 18 item 3): the training stream is a function of (seed, position)
at any worker and process count, and a train_net run SIGKILLed after its checkpoint then --resumed
ends with the bitwise weights and optimizer state of an uninterrupted run."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from tiny import TINY_TRAIN_OPTS  # tests/tiny.py

from detr_d2.data.resumable_loader import ResumableTrainLoader

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _draws(d):
    """A mapper that shows which image it got and what the global RNGs gave it."""
    return (d["image_id"], int(np.random.randint(1 << 30)), random.random())


def _dicts(n, wide=lambda i: True):
    return [
        {"image_id": i, "width": 60 if wide(i) else 40, "height": 40 if wide(i) else 60}
        for i in range(n)
    ]


def _take(loader, steps):
    return [next(loader) for _ in range(steps)]


def test_stream_is_the_same_at_any_worker_count_process_count_and_restart():
    kw = dict(total_batch_size=4, seed=3, aspect_ratio_grouping=False)
    one = _take(ResumableTrainLoader(_dicts(10), _draws, **kw), 6)
    # 6 batches of 4 = 2.4 epochs of 10 images: each epoch is a permutation, and a new one
    ids = [d[0] for batch in one for d in batch]
    assert sorted(ids[:10]) == sorted(ids[10:20]) == list(range(10)) and ids[:10] != ids[10:20]
    assert len({d[1] for batch in one for d in batch}) == 24  # every position its own draws

    for workers in (0, 2):
        ranks = [
            _take(ResumableTrainLoader(_dicts(10), _draws, num_workers=workers, rank=r,
                                       world_size=2, **kw), 6)  # fmt: skip
            for r in (0, 1)
        ]
        for t in range(6):  # rank r of 2 holds every other image of the 1-process batch
            assert ranks[0][t] == one[t][0::2] and ranks[1][t] == one[t][1::2]

    stopped = ResumableTrainLoader(_dicts(10), _draws, num_workers=2, **kw)
    assert _take(stopped, 3) == one[:3]
    state = stopped.state_dict()
    assert state == {"seed": 3, "position": 12}  # in images, whatever the process count
    resumed = ResumableTrainLoader(_dicts(10), _draws, total_batch_size=4, seed=0)
    resumed.load_state_dict(state)
    assert _take(resumed, 3) == one[3:6]
    halves = [ResumableTrainLoader(_dicts(10), _draws, rank=r, world_size=2, **kw) for r in (0, 1)]
    for half in halves:
        half.load_state_dict(state)
    assert [x for pair in zip(*(next(h) for h in halves)) for x in pair] == one[3]


def test_trainer_state_holds_the_stream_and_an_older_checkpoint_resumes_by_iteration():
    from detectron2.engine import TrainerBase

    from detr_d2.data.resumable_loader import ResumableStream

    kw = dict(total_batch_size=4, seed=3, aspect_ratio_grouping=False)
    one = _take(ResumableTrainLoader(_dicts(10), _draws, **kw), 4)
    trainers, loaders = [TrainerBase(), TrainerBase()], []
    for trainer in trainers:
        loaders.append(ResumableTrainLoader(_dicts(10), _draws, **kw))
        trainer.register_hooks([ResumableStream(loaders[-1])])
    _take(loaders[0], 2)
    state = trainers[0].state_dict()  # what the checkpointer saves as "trainer"
    assert state["hooks"]["ResumableStream"] == {"seed": 3, "position": 8}
    trainers[1].load_state_dict(state)
    assert next(loaders[1]) == one[2]
    # a checkpoint written before the stream had a state: its iteration gives the position
    old = TrainerBase()
    loader = ResumableTrainLoader(_dicts(10), _draws, **kw)
    old.register_hooks([ResumableStream(loader)])
    old.start_iter = 3
    old._hooks[0].before_train()
    assert next(loader) == one[3]


def test_aspect_ratio_grouping_gives_batches_of_one_orientation():
    dicts = _dicts(12, wide=lambda i: i % 3 == 0)  # 4 wide, 8 tall
    loader = ResumableTrainLoader(dicts, _draws, total_batch_size=4, seed=5)
    for batch in _take(loader, 6):  # 2 epochs of 3 batches
        assert len({dicts[d[0]]["width"] for d in batch}) == 1
    with pytest.raises(ValueError, match="IMS_PER_BATCH"):
        ResumableTrainLoader(dicts, _draws, total_batch_size=3, seed=0, world_size=2, rank=0)


# train_net on tiny shapes, with every random draw of DETR training on: flips, multi-scale
# resize, the crop branch, dropout. MAX_ITER 2 * HALF iterations with a checkpoint after HALF.
HALF = 20
TRAIN = TINY_TRAIN_OPTS + [
    "MODEL.DETR.DROPOUT", "0.1", "INPUT.MIN_SIZE_TRAIN", "(56, 64, 72)",
    "INPUT.CROP.ENABLED", "True", "INPUT.DETR_CROP_PRE_RESIZE", "(64, 80)",
    "INPUT.CROP.SIZE", "(40, 64)", "DATALOADER.ASPECT_RATIO_GROUPING", "True",
    "SOLVER.MAX_ITER", str(2 * HALF), "SOLVER.STEPS", (f"({HALF + 1},)"),
    "SOLVER.CHECKPOINT_PERIOD", str(HALF), "DATASETS.TEST", "()",
]  # fmt: skip


def train(out_dir, *opts, flags=(), num_gpus=1):
    """Start train_net.py ``flags`` (e.g. --resume) on TRAIN + ``opts`` in a subprocess."""
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), "--num-gpus", str(num_gpus)]
    cmd += ["--config-file", os.path.join(ROOT, "configs", "Base-DETR.yaml"), *flags]
    cmd += TRAIN + ["OUTPUT_DIR", str(out_dir), *opts]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    log = open(os.path.join(out_dir, f"train{time.time_ns()}.log"), "w")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(proc, timeout=300):
    assert proc.wait(timeout=timeout) == 0, f"train_net failed: see {proc.args}"


def load_state(path):
    """(model state dict, optimizer state) of a checkpoint file."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt["model"], ckpt["trainer"]["_trainer"]["optimizer"]


def assert_bitwise_equal(a, b, where=""):
    """Every tensor of nested dicts / lists a and b is torch.equal; every other value ==."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_bitwise_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), f"{where} differs by {(a.double() - b.double()).abs().max()}"
    else:
        assert a == b, where


def kill_after_checkpoint(proc, out_dir, name, timeout=300):
    """SIGKILL ``proc`` once ``last_checkpoint`` names ``name`` (written after the file)."""
    path, start = os.path.join(out_dir, "last_checkpoint"), time.time()
    while not (os.path.exists(path) and open(path).read() == name):
        assert proc.poll() is None, "training exited before its checkpoint"
        assert time.time() - start < timeout, "timed out"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


@pytest.mark.usefixtures("datasets_root")  # conftest.py
def test_sigkill_then_resume_is_bitwise_an_uninterrupted_run(tmp_path):
    """One uninterrupted run with 0 workers; runs with 0 and 2 workers SIGKILLed after the
    checkpoint of iteration HALF and resumed: all three end bitwise equal (model and optimizer)."""
    dirs = {k: tmp_path / k for k in ("never_stopped", "workers0", "workers2")}
    for d in dirs.values():
        d.mkdir()
    finish(train(dirs["never_stopped"]))
    reference = load_state(dirs["never_stopped"] / "model_final.pth")
    for workers in (0, 2):
        out, opts = dirs[f"workers{workers}"], ("DATALOADER.NUM_WORKERS", str(workers))
        kill_after_checkpoint(train(out, *opts), out, f"model_{HALF - 1:07d}.pth")
        assert not (out / "model_final.pth").exists()
        finish(train(out, *opts, flags=["--resume"]))
        log = "".join(open(out / f).read() for f in sorted(os.listdir(out)) if f.endswith(".log"))
        assert f"Starting training from iteration {HALF}" in log
        assert_bitwise_equal(load_state(out / "model_final.pth"), reference, f"workers{workers}")
