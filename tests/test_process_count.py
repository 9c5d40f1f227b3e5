"""A checkpoint moves between process counts (issue 18 item 4): written by 2 processes, resumed by 2
(bitwise the never-stopped run), resumed by 1 (the same images per step; weights within float
reduction order of the 2-process run) and evaluated by 1 (the same detections as by 2)."""

import json
import shutil

import numpy as np
import torch
from PIL import Image
from test_resume import assert_bitwise_equal, finish, load_state, train

HALF = 3
NUM_IMAGES = 8


def write_coco(root):
    """NUM_IMAGES same-size (64x64) images with 1-3 colored boxes each, as a COCO json. One size
    and no resize range: a batch pads alike split over 1 or 2 processes."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(NUM_IMAGES):
        pixels = np.full((64, 64, 3), 40, np.uint8)
        for _ in range(1 + i % 3):
            x, y = rng.integers(0, 40, 2)
            w, h = rng.integers(8, 24, 2)
            c = int(rng.integers(1, 4))
            pixels[y : y + h, x : x + w] = 60 * c
            box = [int(x), int(y), int(w), int(h)]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": c,
                                "bbox": box, "area": int(w * h), "iscrowd": 0})  # fmt: skip
        Image.fromarray(pixels).save(root / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64})
    categories = [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]
    data = {"images": images, "annotations": annotations, "categories": categories}
    (root / "data.json").write_text(json.dumps(data))
    return ["--register-coco", "squares", str(root / "data.json"), str(root)]


# dropout off (its draws are per process); NO_OBJECT_WEIGHT 1: the classification loss is then a
# plain mean, which DDP's gradient averaging turns into the global one
OPTS = [
    "DATASETS.TRAIN", "('squares',)", "DATASETS.TEST", "('squares',)", "MODEL.DETR.NUM_CLASSES",
    "3", "MODEL.DETR.DROPOUT", "0.0", "MODEL.DETR.NO_OBJECT_WEIGHT", "1.0",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "64", "INPUT.CROP.ENABLED", "False", "SOLVER.IMS_PER_BATCH", "4",
    "SOLVER.MAX_ITER", str(2 * HALF), "SOLVER.STEPS", f"({HALF + 1},)",
    "SOLVER.CHECKPOINT_PERIOD", str(HALF), "TEST.EVAL_PERIOD", "0",
]  # fmt: skip


def copy_checkpoint(src, dst):
    """A fresh output folder holding only ``src``'s mid-run checkpoint, as --resume finds it."""
    dst.mkdir()
    name = f"model_{HALF - 1:07d}.pth"
    shutil.copy(src / name, dst / name)
    (dst / "last_checkpoint").write_text(name)


def detections(out_dir):
    """The evaluator's detections (COCO results json), in a canonical order."""
    path = out_dir / "inference" / "coco_instances_results.json"
    return sorted(json.loads(path.read_text()), key=lambda d: (d["image_id"], -d["score"]))


def test_checkpoint_written_by_2_processes_resumes_on_1_and_2_and_evaluates_on_1(tmp_path):
    (tmp_path / "data").mkdir()
    data = write_coco(tmp_path / "data")
    dirs = {k: tmp_path / k for k in ("two", "resumed_by_2", "resumed_by_1", "eval1", "eval2")}
    dirs["two"].mkdir()
    finish(train(dirs["two"], *OPTS, flags=data, num_gpus=2))  # never stopped, never moved
    never_moved = load_state(dirs["two"] / "model_final.pth")
    mid = torch.load(dirs["two"] / f"model_{HALF - 1:07d}.pth", weights_only=True)
    assert not any(k.startswith("module.") for k in mid["model"])  # DDP's wrapper is not saved
    assert mid["trainer"]["hooks"]["ResumableStream"]["position"] == HALF * 4  # in images

    for n in (2, 1):
        out = dirs[f"resumed_by_{n}"]
        copy_checkpoint(dirs["two"], out)
        finish(train(out, *OPTS, flags=[*data, "--resume"], num_gpus=n))
        assert f"Starting training from iteration {HALF}" in (out / "log.txt").read_text()
    assert_bitwise_equal(load_state(dirs["resumed_by_2"] / "model_final.pth"), never_moved)

    # resumed by 1: the same 4 images per step in one process; float sums in another order
    moved, _ = load_state(dirs["resumed_by_1"] / "model_final.pth")
    start, _ = load_state(dirs["two"] / f"model_{HALF - 1:07d}.pth")
    diff = max((moved[k] - never_moved[0][k]).abs().max().item() for k in moved)
    change = max((never_moved[0][k] - start[k]).abs().max().item() for k in moved)
    assert change > 1e-5 and diff < 1e-3 * change, (diff, change)

    final = str(dirs["two"] / "model_final.pth")
    for n in (1, 2):
        out = dirs[f"eval{n}"]
        out.mkdir()
        weights = ("MODEL.WEIGHTS", final)
        finish(train(out, *OPTS, *weights, flags=[*data, "--eval-only"], num_gpus=n))
    assert detections(dirs["eval1"]) == detections(dirs["eval2"]) != []
