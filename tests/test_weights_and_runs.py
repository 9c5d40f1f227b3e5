"""Reliability II, weights and runs: no code runs from a weights file (every entry point), weights
that fit nothing or cannot be read stop the run naming the file, one training per OUTPUT_DIR, and
SIGTERM checkpoints the current iteration for --resume (1 and 2 processes)."""

import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from tiny import TINY_MODEL_OPTS, TINY_TRAIN_OPTS  # tests/tiny.py
from wait import wait_for  # tests/wait.py

from detr_d2.checkpoint import UnsafeCheckpointError
from detr_d2.engine import DetrCheckpointer, WeightsFileError, WeightsMismatchError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BASE = os.path.join(ROOT, "configs", "Base-DETR.yaml")
TINY = TINY_TRAIN_OPTS + ["DATASETS.TEST", "()", "SOLVER.CHECKPOINT_PERIOD", "100"]
ENV = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.usefixtures("datasets_root")  # conftest.py


def _args(out_dir, *extra, eval_only=False, resume=False):
    import train_net

    argv = ["--config-file", BASE] + ["--eval-only"] * eval_only + ["--resume"] * resume
    return train_net.argument_parser().parse_args(
        argv + TINY + ["OUTPUT_DIR", str(out_dir), *extra]
    )


class _Payload:
    """Unpickling it runs ``touch <marker>``, as a malicious weights file would run anything."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _payload_pkl(tmp_path):
    marker, path = tmp_path / "payload_ran", tmp_path / "evil.pkl"
    weights = {"backbone.res2.0.conv1.weight": np.zeros((64, 64, 1, 1), np.float32)}
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": _Payload(marker)}, f)
    return str(path), marker


# ---- 1. no code from a .pkl ---------------------------------------------------------------------


def test_detectron2_style_pkl_loads_and_a_payload_does_not_run(tmp_path):
    model = torch.nn.Sequential()
    model.add_module("stem", torch.nn.Conv2d(3, 4, 3))
    model.add_module("head", torch.nn.Linear(4, 2))
    state = {k: v.detach().numpy() + 1.5 for k, v in model.state_dict().items()}
    good = tmp_path / "zoo.pkl"
    with open(good, "wb") as f:  # numpy arrays pickled by Python 3, protocol 2 (uses _codecs)
        pickle.dump({"model": state, "__author__": "zoo", "matching_heuristics": True}, f, 2)
    DetrCheckpointer(model).load(str(good))
    assert torch.equal(model.head.bias, torch.from_numpy(state["head.bias"]))
    # as the model zoo's files name numpy's globals (numpy 1: numpy.core), in a Caffe2-style
    # file of bare blobs (name-matched, "_momentum" entries dropped)
    blobs = {k: v * 2 for k, v in state.items()} | {"head.bias_momentum": state["head.bias"]}
    old = pickle.dumps({"blobs": blobs}, 2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray\n_reconstruct" in old
    (tmp_path / "c2.pkl").write_bytes(old)
    DetrCheckpointer(model).load(str(tmp_path / "c2.pkl"))
    assert torch.equal(model.head.bias, torch.from_numpy(state["head.bias"] * 2))

    path, marker = _payload_pkl(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil.pkl.*pickled posix.system"):
        DetrCheckpointer(model).load(path)
    assert not marker.exists()


def test_payload_pkl_runs_in_no_entry_point(tmp_path):
    import train_net

    path, marker = _payload_pkl(tmp_path)
    for eval_only in (False, True):  # training (and so --resume's fallback) and --eval-only
        with pytest.raises(UnsafeCheckpointError, match="evil.pkl"):
            train_net.main(_args(tmp_path / "out", "MODEL.WEIGHTS", path, eval_only=eval_only))
    # a panoptic stage-2's FROZEN_WEIGHTS
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from detr_d2 import add_detr_config

    cfg = add_detr_config(get_cfg())
    cfg.merge_from_file(os.path.join(ROOT, "configs", "quickstart", "detr_shapes_panoptic.yaml"))
    cfg.merge_from_list(TINY_MODEL_OPTS + ["MODEL.DETR.FROZEN_WEIGHTS", path])
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4"]  # the mask head's
    cfg.MODEL.DETR.MASK_HEAD_GROUPS = 2
    with pytest.raises(UnsafeCheckpointError, match="evil.pkl"):
        build_model(cfg)
    # the demo and a tool, as a user runs them
    image = tmp_path / "image.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    model_opts = TINY_MODEL_OPTS[:2] + TINY_MODEL_OPTS[4:] + ["MODEL.WEIGHTS", path]
    for cmd in (
        ["demo.py", "--input", str(image), "--output", str(tmp_path / "demo")],
        ["tools/analyze_model.py", "--tasks", "parameter"],
    ):
        run = subprocess.run(
            [sys.executable, *cmd, "--config-file", BASE, *model_opts],
            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert run.returncode != 0, cmd
        assert "Refusing to load" in run.stderr and "evil.pkl" in run.stderr, run.stderr[-2000:]
    assert not marker.exists()


# ---- 6. weights that fit nothing, files that are no weights -------------------------------------


def test_weights_that_fit_nothing_stop_training(tmp_path, tiny_detr_cfg):
    import train_net
    from detectron2.modeling import build_model

    model = build_model(tiny_detr_cfg)
    # another architecture's checkpoint (Faster R-CNN's names): nothing fits
    other = {"backbone.bottom_up.res2.0.conv1.weight": torch.zeros(64, 64, 1, 1)}
    torch.save({"model": other}, tmp_path / "rcnn.pth")
    with pytest.raises(WeightsMismatchError, match=r"rcnn.pth fill only 0 of .*0.0% of its val"):
        train_net.main(_args(tmp_path / "out", "MODEL.WEIGHTS", str(tmp_path / "rcnn.pth")))
    # a trivial part: the input projection only
    part = {k: v for k, v in model.state_dict().items() if k.startswith("input_proj")}
    torch.save({"model": part}, tmp_path / "part.pth")
    with pytest.raises(WeightsMismatchError, match="part.pth fill only 2 of"):
        DetrCheckpointer(model).load(str(tmp_path / "part.pth"))
    # an ImageNet backbone init (the whole backbone, nothing else) still loads
    backbone = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    torch.save({"model": backbone}, tmp_path / "backbone.pth")
    DetrCheckpointer(model).load(str(tmp_path / "backbone.pth"))


@pytest.mark.parametrize("content", [b"", b"model weights, one per line\n", "truncated"])
@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_unreadable_weights_file_is_an_error_naming_it(tmp_path, tiny_detr_cfg, content, suffix):
    from detectron2.modeling import build_model

    model = build_model(tiny_detr_cfg)
    path = tmp_path / f"weights{suffix}"
    if content == "truncated":
        torch.save({"model": model.state_dict()}, path)
        content = path.read_bytes()[:5000]
    path.write_bytes(content)
    with pytest.raises((WeightsFileError, UnsafeCheckpointError), match=f"weights\\{suffix}"):
        DetrCheckpointer(model).load(str(path))


@pytest.mark.parametrize("strict", [False, True])
def test_weights_with_nan_or_a_wrapped_state_dict_are_errors_naming_the_file(
    tmp_path, tiny_detr_cfg, strict
):
    from detectron2.modeling import build_model

    from detr_d2.engine import NonFiniteWeightsError

    model = build_model(tiny_detr_cfg)
    state = model.state_dict()
    # a diverged run's weights: training would stop at its first step, evaluation give NaN
    bad = dict(
        state,
        **{
            "transformer.decoder.norm.weight": state["transformer.decoder.norm.weight"]
            * float("inf")
        },
    )
    torch.save({"model": bad}, tmp_path / "diverged.pth")
    with pytest.raises(
        NonFiniteWeightsError, match=r"diverged.pth .*transformer.decoder.norm.weight"
    ):
        DetrCheckpointer(model, strict=strict).load(str(tmp_path / "diverged.pth"))
    # another framework's wrapper ({"state_dict": ..., "epoch": ...}): fvcore's error named no file
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.pth")
    with pytest.raises(WeightsFileError, match=r"wrapped.pth .*'state_dict'.*state_dict, epoch"):
        DetrCheckpointer(model, strict=strict).load(str(tmp_path / "wrapped.pth"))
    # a .pkl of numpy arrays with a NaN
    arrays = {k: v.numpy() for k, v in state.items()}
    arrays["class_embed.bias"] = arrays["class_embed.bias"] * np.nan
    with open(tmp_path / "nan.pkl", "wb") as f:
        pickle.dump({"model": arrays, "__author__": "test"}, f)
    with pytest.raises(NonFiniteWeightsError, match=r"nan.pkl .*class_embed.bias"):
        DetrCheckpointer(model, strict=strict).load(str(tmp_path / "nan.pkl"))


# ---- 2. one training per OUTPUT_DIR; 8. SIGTERM ---------------------------------------------


def _train_net(out, *extra, num_gpus=1, log=None):
    cmd = [sys.executable, "train_net.py", "--num-gpus", str(num_gpus), "--config-file", BASE]
    cmd += TINY + ["OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "1000", *extra]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=ENV, stdout=open(log, "w") if log else subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _wait_until_training(out, proc):
    wait_for(lambda: "Starting training from iteration 0" in _read(out / "log.txt"), proc)
    time.sleep(2.0)  # into the iterations, on every rank


def _read(path):
    return path.read_text() if path.exists() else ""


def _assert_preempted_then_resume(out, proc):
    """The run stopped with one log line at iteration k and a checkpoint of k; --resume goes on."""
    import train_net

    assert proc.wait(timeout=120) != 0
    lines = [x for x in _read(out / "log.txt").splitlines() if "SIGTERM: stopped after" in x]
    assert len(lines) == 1, _read(out / "log.txt")[-3000:]
    k = int(lines[0].split("SIGTERM: stopped after iteration ")[1].split(",")[0])
    name = f"model_{k:07d}.pth"
    assert (out / "last_checkpoint").read_text() == name and f"saved {name}" in lines[0]
    saved = torch.load(out / name, map_location="cpu", weights_only=True)
    assert saved["iteration"] == k and "optimizer" in saved["trainer"]["_trainer"]
    assert not (out / "model_final.pth").exists()
    train_net.main(_args(out, "SOLVER.MAX_ITER", str(k + 3), resume=True))
    assert f"Starting training from iteration {k + 1}" in _read(out / "log.txt")
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == k + 2


def test_one_training_per_output_dir_eval_aside_and_sigterm_then_resume(tmp_path):
    import train_net

    out = tmp_path / "out"
    # a checkpoint every 20 iterations (every one wrote 70 files, 2.2 GB, while the test ran)
    first = _train_net(out, "SOLVER.CHECKPOINT_PERIOD", "20", log=tmp_path / "first.log")
    _wait_until_training(out, first)
    holder = (out / "train.lock").read_text()
    assert f"pid {first.pid} on host " in holder and "started 20" in holder
    # a second training into the folder stops at once, naming the folder and the holder
    second = _train_net(out, "SOLVER.BASE_LR", "0.001")
    message = second.communicate(timeout=300)[0]
    assert second.returncode != 0
    assert f"OUTPUT_DIR {out} is in use by another training run (pid {first.pid} on host" in message
    # --eval-only of the running training's last checkpoint writes beside its files
    wait_for(lambda: (out / "last_checkpoint").exists(), first)
    config = (out / "config.yaml").read_bytes()
    results = train_net.main(
        _args(out, "DATASETS.TEST", "('shapes_tiny_val',)", eval_only=True, resume=True)
    )
    assert "bbox" in results
    (aside,) = [p for p in out.iterdir() if p.name.startswith("eval-")]
    assert {"config.yaml", "log.txt", "inference"} <= {p.name for p in aside.iterdir()}
    assert "is in use by a training run" in _read(aside / "log.txt")
    assert "Loading from " + str(out / "model_") in _read(aside / "log.txt")
    assert (out / "config.yaml").read_bytes() == config and not (out / "inference").exists()
    assert "shapes_tiny_val" not in _read(out / "log.txt")
    first.send_signal(signal.SIGTERM)
    _assert_preempted_then_resume(out, first)


def test_sigterm_to_a_two_process_run_then_resume(tmp_path):
    out = tmp_path / "out"
    proc = _train_net(out, num_gpus=2, log=tmp_path / "run.log")
    _wait_until_training(out, proc)
    proc.send_signal(signal.SIGTERM)  # to the launcher only, as Kubernetes signals PID 1
    _assert_preempted_then_resume(out, proc)
