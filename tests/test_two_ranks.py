"""2 processes train like 1: train_net's Trainer through Detectron2's launch (GLOO, CPU) at
--num-gpus 2 and at 1 process, IMS_PER_BATCH 4, fed the same 4 images in each of 3 iterations,
end with the same weights; so do 2 processes of 1 image x SOLVER.ACCUM_ITERS 2. Rank 1's two
images of iteration 1 have no boxes.

The inputs are made comparable: the shapes images are all 128x128, resized to 64x64 (no flip, no
crop), so padding (per process in Detectron2, as in the original) cannot differ; no aspect-ratio
grouping; a test sampler gives rank r images 4s + 2r, 4s + 2r + 1 of step s (all 4 at 1
process); the tiny model has no dropout and FrozenBN.

Each run is a real subprocess (this file as a script) with a timeout, so a hang fails the test.
"""

import itertools
import os
import subprocess
import sys

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
EMPTY = (6, 7)  # iteration 1: rank 1's images (of 2 processes) have their boxes removed


def _run(out_dir, num_gpus, *opts, timeout=240):
    """The initial and the final weights of a run."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, os.path.abspath(__file__), str(num_gpus), str(out_dir), *opts]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [
        torch.load(os.path.join(out_dir, f"model_{name}.pth"), weights_only=False)["model"]
        for name in ("init", "final")
    ]


def test_two_ranks_end_with_the_weights_of_one(tmp_path, datasets_root):
    start, one = _run(tmp_path / "one", 1)
    start_two, two = _run(tmp_path / "two", 2)
    assert all(torch.equal(start[k], start_two[k]) for k in start)
    diff = max((two[k].double() - one[k].double()).abs().max().item() for k in one)
    change = max((one[k].double() - start[k].double()).abs().max().item() for k in one)
    print(f"2 vs 1 ranks after 3 iterations: max |weight difference| {diff:.3g}, "
          f"max |3-step change| {change:.3g}")  # fmt: skip
    assert change > 1e-4
    # tolerance 5e-6: measured 5.2e-7 of a 3.0e-3 change (float32 reduction order, through
    # AdamW), 9.9e-7 with accumulation below; with each rank normalizing its own class loss (the
    # original): 5.3e-3, 1.8x the change
    assert diff < 5e-6
    # 2 ranks x 1 image x SOLVER.ACCUM_ITERS 2: the same 4 images per optimizer step (DDP
    # synchronizes in the last micro-batch only; every loss normalized over all 4)
    _, accum = _run(tmp_path / "accum", 2, "SOLVER.IMS_PER_BATCH", "2", "SOLVER.ACCUM_ITERS", "2")
    diff_accum = max((accum[k].double() - one[k].double()).abs().max().item() for k in one)
    print(f"2 ranks x 1 image x 2 micro-batches vs 1 x 4: max |weight difference| {diff_accum:.3g}")
    assert diff_accum < 5e-6


def test_zero_class_weight_trains_at_two_ranks(tmp_path, datasets_root):
    """MODEL.DETR.CLASS_WEIGHT 0: the class head gets a zero gradient, not none, so DDP does not
    stop at the second iteration ("Expected to have finished reduction")."""
    _run(tmp_path, 2, "MODEL.DETR.CLASS_WEIGHT", "0.0", "SOLVER.MAX_ITER", "2")


class StepSampler(torch.utils.data.Sampler):
    """Infinite indices: step s gives this rank images [4s + 2r, 4s + 2r + 1] of 2 processes,
    [4s .. 4s + 3] of 1, wrapping around ``size``."""

    def __init__(self, size, per_step=4):
        from detectron2.utils import comm

        self.size, self.per_step = size, per_step
        self.per_rank = per_step // comm.get_world_size()
        self.rank = comm.get_rank()

    def __iter__(self):
        for step in itertools.count():
            for j in range(self.per_rank):
                yield (step * self.per_step + self.rank * self.per_rank + j) % self.size


def _main(args):
    import train_net
    from detectron2.data import DatasetCatalog, build_detection_train_loader

    from detr_d2.data import DetrDatasetMapper
    from detr_d2.engine import shut_down_process_group

    class FixedOrderTrainer(train_net.Trainer):
        @classmethod
        def build_train_loader(cls, cfg):
            dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:12]
            for i in EMPTY:
                dicts[i] = dict(dicts[i], annotations=[])
            mapper = DetrDatasetMapper(cfg, True)
            sampler = StepSampler(len(dicts))
            return build_detection_train_loader(cfg, dataset=dicts, mapper=mapper, sampler=sampler)

    trainer = FixedOrderTrainer(train_net.setup(args))
    trainer.resume_or_load(resume=False)
    trainer.checkpointer.save("model_init")  # by rank 0; DDP gives the other ranks its weights
    trainer.train()
    shut_down_process_group()


if __name__ == "__main__":
    from detectron2.engine import default_argument_parser, launch

    from tiny import TINY_TRAIN_OPTS  # tests/tiny.py

    num_gpus, out_dir, *extra = sys.argv[1:]
    opts = TINY_TRAIN_OPTS + [
        "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "()",
        "SOLVER.CHECKPOINT_PERIOD", "100", "SOLVER.BASE_LR", "1e-3", "INPUT.RANDOM_FLIP", "none",
        "DATALOADER.ASPECT_RATIO_GROUPING", "False", "DATASETS.TEST", "()", "OUTPUT_DIR", out_dir,
    ]  # fmt: skip
    argv = ["--config-file", os.path.join(ROOT, "configs", "Base-DETR.yaml"), *opts, *extra]
    args = default_argument_parser().parse_args(argv)
    launch(_main, int(num_gpus), dist_url="auto", args=(args,))
