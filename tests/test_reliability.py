"""Reliability: bad input data, a wrong class count or weights, non-finite losses, killed runs and
--resume, a failing process of a multi-process run, unusual images, seeded determinism."""

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import HookBase
from detectron2.structures import BoxMode
from PIL import Image
from log_capture import log_records  # tests/log_capture.py
from tiny import TINY_TRAIN_OPTS  # tests/tiny.py
from wait import wait_for  # tests/wait.py

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BASE = os.path.join(ROOT, "configs", "Base-DETR.yaml")
TINY = TINY_TRAIN_OPTS + [
    "DATASETS.TEST", "()", "SOLVER.CHECKPOINT_PERIOD", "2",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("datasets_root")  # conftest.py


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared, loaded CPU, two threads' spin-waits make a tiny forward
    pass 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def records():
    with log_records("detr_d2.data.dataset_checks") as records:
        yield records


def _args(out_dir, *extra, eval_only=False, resume=False, config=BASE):
    import train_net

    argv = ["--config-file", config] + ["--eval-only"] * eval_only + ["--resume"] * resume
    return train_net.argument_parser().parse_args(
        argv + TINY + ["OUTPUT_DIR", str(out_dir), *extra]
    )


def _png(path, size=(40, 60), mode="RGB", dtype=np.uint8):
    h, w = size
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (h, w) if channels is None else (h, w, channels)
    a = (np.random.RandomState(0).rand(*shape) * np.iinfo(dtype).max).astype(dtype)
    Image.fromarray(a).save(path)
    return str(path)


def _ann(bbox, category_id=0, iscrowd=0, mode=BoxMode.XYWH_ABS):
    return {"bbox": bbox, "bbox_mode": mode, "category_id": category_id, "iscrowd": iscrowd}


def _dict(file_name, image_id, annotations, h=40, w=60):
    return {
        "file_name": file_name,
        "image_id": image_id,
        "height": h,
        "width": w,
        "annotations": annotations,
    }


def _meta(name, num_classes=3):
    meta = MetadataCatalog.get(name)
    if not meta.get("thing_classes"):
        meta.thing_classes = [f"c{i}" for i in range(num_classes)]
    return meta


# ---- bad input data ---------------------------------------------------------------------------


def test_invalid_boxes_dropped_with_one_warning_partly_outside_clipped(tmp_path, records):
    from detr_d2.data.dataset_checks import check_dataset_dicts

    f = _png(tmp_path / "a.png")
    dicts = [
        _dict(
            f,
            1,
            [
                _ann([10, 10, 20, 10]),  # valid
                _ann([10, 10, 0, 10]),  # zero width
                _ann([10, 10, 5, -3]),  # negative height
                _ann([100, 5, 10, 10]),  # entirely right of the 60 px wide image
                _ann([float("nan"), 1, 2, 2]),
                _ann([1, 2, 3]),  # non-finite, malformed
                _ann([50, -5, 20, 15]),
            ],
        ),  # partly outside: clipped to [50, 0, 60, 10]
        _dict(f, 2, [_ann([1, 1, 4, 4], mode=BoxMode.XYXY_ABS), _ann([0, 0, 10, 10])]),
        _dict(f, 3, []),  # no annotations
        _dict(f, 4, [_ann([0, 0, 10, 10], iscrowd=1)]),  # crowd only
    ]
    out = check_dataset_dicts(dicts, _meta("reliability_boxes"), "reliability_boxes")
    assert [d["image_id"] for d in out] == [1, 2, 3, 4]  # every image kept
    boxes = [(a["bbox"], a["bbox_mode"]) for a in out[0]["annotations"]]
    assert boxes == [([10, 10, 20, 10], BoxMode.XYWH_ABS), ([50.0, 0.0, 10.0, 10.0], 1)]
    assert dicts[0]["annotations"][6]["bbox"] == [50, -5, 20, 15]  # the input is not modified
    assert out[1] is dicts[1]  # unchanged images are not copied
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # one for the dropped boxes, one for the clipped
    assert (
        "dropped 5 invalid boxes of 10: 2 with zero or negative width or height, 1 entirely "
        "outside their image, 2 malformed or non-finite" in warnings[0]
    )
    assert "clipped 1 boxes" in warnings[1]
    info = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert any("1 images without boxes and 1 with crowd boxes only" in m for m in info)


@pytest.mark.parametrize("problem", ["category", "missing_file"])
def test_unknown_category_or_missing_file_is_an_error_or_skipped(tmp_path, records, problem):
    from detr_d2.data.dataset_checks import DatasetError, check_dataset_dicts

    good, bad = _png(tmp_path / "good.png"), str(tmp_path / "bad.png")
    if problem == "category":
        _png(bad)
    dicts = [
        _dict(good, 1, [_ann([1, 1, 5, 5], 2)]),
        _dict(bad, 7, [_ann([1, 1, 5, 5], 3 if problem == "category" else 0)]),
    ]
    meta = _meta("reliability_bad_images")  # 3 classes: 0, 1, 2
    with pytest.raises(DatasetError) as e:
        check_dataset_dicts(dicts, meta, "reliability_bad_images")
    message = str(e.value)
    assert "'reliability_bad_images'" in message and "image_id 7" in message and bad in message
    assert (
        "category_id 3 not among the 3 classes" if problem == "category" else "missing file"
    ) in message
    assert "DATALOADER.SKIP_BAD_IMAGES" in message
    out = check_dataset_dicts(dicts, meta, "reliability_bad_images", skip_bad_images=True)
    assert [d["image_id"] for d in out] == [1]
    assert any("Skipped these 1 images" in r.getMessage() for r in records)


def _annotation(ann_id, image_id, category_id):
    """A COCO annotation of a 5 x 5 box at (1, 1)."""
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [1, 1, 5, 5],
        "area": 25,
        "iscrowd": 0,
    }


def test_unknown_category_in_coco_json(tmp_path):
    from detr_d2.data.dataset_checks import DatasetError, load_dataset_dicts

    images = [{"id": i, "file_name": f"{i}.png", "height": 40, "width": 60} for i in (1, 2)]
    for i in (1, 2):
        _png(tmp_path / f"{i}.png")
    data = {
        "images": images,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            _annotation(1, 1, 1),
            _annotation(2, 2, 9),
        ],
    }
    json_file = tmp_path / "instances.json"
    json_file.write_text(json.dumps(data))
    name = f"reliability_json_{tmp_path.name}"
    register_coco_instances(name, {}, str(json_file), str(tmp_path))
    try:
        with pytest.raises(DatasetError, match=r"image_id 2 \(2.png\): category_id 9") as e:
            load_dataset_dicts(name)
        assert str(json_file) in str(e.value)
        assert [d["image_id"] for d in load_dataset_dicts(name, skip_bad_images=True)] == [1]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _corrupt_files(tmp_path):
    not_image = tmp_path / "not_image.png"
    not_image.write_text("this is not a png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(_png(tmp_path / "full.png"), "rb").read()[:200])
    wrong_size = _png(tmp_path / "wrong_size.png", size=(30, 30))  # the dict says 40 x 60
    return [str(not_image), str(truncated), wrong_size]


def test_corrupt_image_raises_naming_file_and_id_or_is_skipped(tmp_path, tiny_detr_cfg, records):
    from detectron2.data import build_detection_train_loader

    from detr_d2.data import DetrDatasetMapper
    from detr_d2.data.dataset_checks import BadImageError, CheckedMapper

    cfg = tiny_detr_cfg
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (32,), 64
    mapper = DetrDatasetMapper(cfg, True)
    for i, f in enumerate(_corrupt_files(tmp_path)):
        with pytest.raises(BadImageError) as e:
            CheckedMapper(mapper)(_dict(f, 100 + i, [_ann([1, 1, 5, 5])]))
        assert f in str(e.value) and f"image_id {100 + i}" in str(e.value)
        assert "DATALOADER.SKIP_BAD_IMAGES" in str(e.value)

    # opted in: other images replace them, never one of the bad ones; each is logged once
    good = _png(tmp_path / "good.png")
    dicts = [_dict(f, 100 + i, []) for i, f in enumerate(_corrupt_files(tmp_path))]
    dicts += [_dict(good, 1, [_ann([1, 1, 5, 5])])]
    checked = CheckedMapper(mapper, skip_bad_images=True, spares=dicts)
    loader = build_detection_train_loader(
        dicts, mapper=checked, total_batch_size=2, num_workers=0, aspect_ratio_grouping=False
    )
    batches = [b for _, b in zip(range(6), loader)]
    assert {x["image_id"] for b in batches for x in b} == {1}
    assert checked.bad_files == set(_corrupt_files(tmp_path))
    skipped = [r.getMessage() for r in records if "Skipped unreadable" in r.getMessage()]
    assert len(skipped) == 3 and "3 unreadable images so far" in skipped[-1]


# ---- unusual images through the mapper and the model -------------------------------------------

UNUSUAL = {
    "1x1000": dict(size=(1, 1000)),
    "2000x20": dict(size=(2000, 20)),
    "20x2000": dict(size=(20, 2000)),
    "grayscale": dict(mode="L"),
    "rgba": dict(mode="RGBA"),
    "16bit": dict(mode="I;16", dtype=np.uint16),
}


@pytest.fixture(scope="module")
def tiny_model(device):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from detr_d2 import add_detr_config

    cfg = get_cfg()
    add_detr_config(cfg)
    cfg.merge_from_file(BASE)
    cfg.merge_from_list(TINY + ["MODEL.DEVICE", str(device)])
    torch.manual_seed(0)
    return cfg, build_model(cfg)


@pytest.mark.parametrize(
    "kind",
    [
        "1x1000",
        "2000x20",
        "20x2000",
        "grayscale",
        "rgba",
        "16bit",
        "no_boxes",
        "crowd_only",
    ],
)
def test_unusual_images_go_through_mapper_and_model(tmp_path, tiny_model, kind):
    from detr_d2.data import DetrDatasetMapper

    cfg, model = tiny_model
    opts = UNUSUAL.get(kind, {})
    mode = opts.get("mode", "RGB")
    f = _png(tmp_path / "im.png", opts.get("size", (40, 60)), mode, opts.get("dtype", np.uint8))
    if mode == "I;16":  # PIL writes a 16-bit grayscale PNG from a uint16 array
        assert Image.open(f).mode.startswith("I")
    h, w = opts.get("size", (40, 60))
    anns = {"no_boxes": [], "crowd_only": [_ann([0, 0, w, h], iscrowd=1)]}.get(
        kind, [_ann([0, 0, w, h], 1)]
    )
    d = _dict(f, 1, anns, h, w)
    train = DetrDatasetMapper(cfg, True)(d)
    test = DetrDatasetMapper(cfg, False)(d)
    assert train["image"].dtype == torch.uint8 and train["image"].shape[0] == 3
    assert min(train["image"].shape[1:]) >= 1 and max(train["image"].shape[1:]) <= 128
    assert len(train["instances"]) == (1 if kind in UNUSUAL else 0)
    if mode == "I;16":  # 16 bits scaled to 8, not clipped at 255 (the image would be white)
        assert 64 < train["image"].float().mean() < 192
    model.train()
    losses = model([train])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        result = model([test])[0]["instances"]
    assert result.image_size == (h, w) and torch.isfinite(result.pred_boxes.tensor).all()


# ---- config, class count and weights errors ------------------------------------------------------


@pytest.mark.parametrize(
    "yaml_text, key",
    [
        ("MODEL:\n  DETR:\n    NUM_CLASSE: 5\n", "MODEL.DETR.NUM_CLASSE"),
        ("SOLVER:\n  MAX_ITER: many\n", "SOLVER.MAX_ITER"),
    ],
)
def test_config_file_errors_name_key_and_file(tmp_path, yaml_text, key):
    import train_net

    path = tmp_path / "bad.yaml"
    path.write_text(f"_BASE_: {BASE}\n{yaml_text}")
    with pytest.raises(ValueError) as e:
        train_net.setup(_args(tmp_path, config=str(path)))
    assert key in str(e.value) and str(path) in str(e.value)
    with pytest.raises(ValueError, match="command line.*SOLVER.MAX_ITERS"):
        train_net.setup(_args(tmp_path, "SOLVER.MAX_ITERS", "3"))


def test_num_classes_mismatch_stops_before_training(tmp_path):
    import train_net

    from detr_d2.engine import ConfigDatasetMismatchError, check_num_classes

    with pytest.raises(ValueError) as e:
        train_net.main(_args(tmp_path, "MODEL.DETR.NUM_CLASSES", "5"))
    message = str(e.value)
    assert "MODEL.DETR.NUM_CLASSES" in message and "5" in message and "6 classes" in message
    assert not any(n.endswith(".pth") or n == "metrics.json" for n in os.listdir(tmp_path))

    # a COCO json registered without class names: checked once its categories are loaded
    _png(tmp_path / "1.png")
    data = {
        "images": [{"id": 1, "file_name": "1.png", "height": 40, "width": 60}],
        "categories": [{"id": i, "name": f"c{i}"} for i in (1, 2, 3)],
        "annotations": [_annotation(1, 1, 1)],
    }
    (tmp_path / "instances.json").write_text(json.dumps(data))
    name = f"reliability_classes_{tmp_path.name}"
    register_coco_instances(name, {}, str(tmp_path / "instances.json"), str(tmp_path))
    try:
        cfg = train_net.setup(_args(tmp_path, "DATASETS.TRAIN", f"('{name}',)"))
        check_num_classes(cfg, [name])  # metadata does not know the classes yet: no error
        with pytest.raises(
            ConfigDatasetMismatchError,
            match=f"MODEL.DETR.NUM_CLASSES is 6 but dataset '{name}' has 3 classes",
        ):
            train_net.Trainer(cfg)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_eval_only_with_missing_or_mismatched_weights(tmp_path, tiny_model):
    import train_net

    from detr_d2.engine import WeightsMismatchError, load_weights_for_eval

    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS file .*nowhere.pth.* not exist"):
        train_net.main(
            _args(tmp_path, "MODEL.WEIGHTS", str(tmp_path / "nowhere.pth"), eval_only=True)
        )
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS, which is empty"):
        train_net.main(_args(tmp_path, eval_only=True))

    cfg, model = tiny_model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"model": state}, tmp_path / "good.pth")
    cfg = cfg.clone()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.MODEL.WEIGHTS = str(tmp_path / "good.pth")
    load_weights_for_eval(model, cfg)  # matching weights load without error

    state.pop("class_embed.weight")
    state["extra_head.weight"] = torch.zeros(1)
    state["query_embed.weight"] = torch.zeros(3, 32)  # 8 queries in the model
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(WeightsMismatchError) as e:
        train_net.main(_args(tmp_path, "MODEL.WEIGHTS", str(tmp_path / "bad.pth"), eval_only=True))
    message = str(e.value)
    assert "bad.pth" in message and "class_embed.weight" in message
    assert "extra_head.weight" in message and "query_embed.weight (3, 32)" in message


# ---- faults during training --------------------------------------------------------------------


class _NanAt(HookBase):
    """Before iteration ``iteration``, make the loss NaN (``where`` "loss": as a bad target would)
    or the weights (``where`` "weights": as a diverged step would)."""

    def __init__(self, iteration, where):
        self.iteration, self.where = iteration, where

    def before_step(self):
        if self.trainer.iter != self.iteration:
            return
        out = self.trainer.cfg.OUTPUT_DIR
        self.saved = {
            n: open(os.path.join(out, n), "rb").read()
            for n in os.listdir(out)
            if n.endswith(".pth") or n == "last_checkpoint"
        }
        model = self.trainer.model
        if self.where == "weights":
            with torch.no_grad():
                model.class_embed.bias.fill_(float("nan"))
        else:
            model.criterion.register_forward_hook(
                lambda module, inputs, losses: dict(losses, loss_ce=losses["loss_ce"] * math.nan)
            )


def _trainer(out_dir, *extra):
    import train_net

    trainer = train_net.Trainer(train_net.setup(_args(out_dir, *extra)))
    trainer.resume_or_load(resume=False)
    return trainer


@pytest.mark.parametrize("where", ["loss", "weights"])
def test_non_finite_loss_stops_and_keeps_saved_state(tmp_path, where):
    from detr_d2.engine import NonFiniteLossError

    trainer = _trainer(tmp_path)  # 4 iterations, checkpoints after iterations 1 and 3 + final
    nan = _NanAt(3, where)
    trainer.register_hooks([nan])
    with pytest.raises(NonFiniteLossError) as e:
        trainer.train()
    message = str(e.value)
    assert "Non-finite loss at iteration 3 (process rank 0)" in message
    if where == "loss":
        assert "loss_ce not finite" in message and "loss_ce=nan" in message
        assert "loss_bbox=" in message and "loss_giou_0=" in message
    else:  # the matcher refuses non-finite predictions before any loss is computed
        assert "HungarianMatcher got non-finite predicted logits" in message
    assert f"Last good checkpoint: {tmp_path / 'model_0000001.pth'}" in message
    saved = sorted(n for n in os.listdir(tmp_path) if ".pth" in n)
    assert saved == ["model_0000001.pth"]  # no model_0000003, no model_final
    assert set(nan.saved) == {"model_0000001.pth", "last_checkpoint"}
    for name, content in nan.saved.items():  # what was saved before the failure is untouched
        assert (tmp_path / name).read_bytes() == content
    assert not trainer.checkpointer.save_to_disk  # nothing can be saved after the failure


def test_checkpointer_refuses_non_finite_weights_and_saves_atomically(tmp_path):
    from detr_d2.engine import DetrCheckpointer, NonFiniteWeightsError

    model = torch.nn.Linear(2, 2)
    checkpointer = DetrCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]  # no tmp
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match="weight.*Last complete checkpoint: .*0001"):
        checkpointer.save("model_0000002", iteration=2)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]


def test_resume_never_picks_a_truncated_checkpoint(tmp_path):
    from detr_d2.engine import DetrCheckpointer

    model = torch.nn.Linear(2, 2)
    checkpointer = DetrCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    time.sleep(0.01)
    checkpointer.save("model_0000003", iteration=3)
    full = (tmp_path / "model_0000003.pth").read_bytes()
    # a checkpoint cut short (as fvcore's in-place write leaves it) that last_checkpoint names
    (tmp_path / "model_0000003.pth").write_bytes(full[: len(full) // 2])
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000001.pth")
    (tmp_path / "last_checkpoint").write_text("")  # emptied by a kill mid-write
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000001.pth")
    assert checkpointer.resume_or_load("", resume=True)["iteration"] == 1
    (tmp_path / "model_0000001.pth").write_bytes(b"")
    assert not checkpointer.has_checkpoint()


def _start_training(out_dir, log, *extra, env=None):
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", BASE, *extra]
    cmd += TINY + ["OUTPUT_DIR", str(out_dir), "SOLVER.MAX_ITER", "8", "SOLVER.STEPS", "(4,)"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, **(env or {})}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _kill(proc):
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def test_sigkill_mid_checkpoint_and_mid_iteration_then_resume(tmp_path):
    import train_net

    from detr_d2.engine import is_complete_checkpoint

    out = tmp_path / "out"
    # 1. killed while writing its second checkpoint (the save pauses after its first bytes:
    # tests/pause_in_save/sitecustomize.py)
    pause = {
        "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "tests", "pause_in_save"), ROOT]),
        "DETR_D2_TEST_PAUSE_IN_SAVE": "model_0000003.pth",
    }
    proc = _start_training(out, tmp_path / "run1.log", env=pause)
    partial = lambda: [n for n in os.listdir(out) if n.startswith("model_0000003.pth.tmp-")]  # noqa
    wait_for(lambda: out.exists() and partial() and os.path.getsize(out / partial()[0]), proc)
    _kill(proc)
    assert not (out / "model_0000003.pth").exists()
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not is_complete_checkpoint(str(out / partial()[0]))

    # 2. resumed from iteration 2, then killed in an iteration after its third checkpoint
    proc = _start_training(out, tmp_path / "run2.log", "--resume")
    wait_for(lambda: (out / "last_checkpoint").read_text() == "model_0000005.pth", proc)
    _kill(proc)
    assert "Starting training from iteration 2" in (tmp_path / "run2.log").read_text()

    # 3. resumed from iteration 6 to the end, with optimizer and scheduler restored
    train_net.main(_args(out, "SOLVER.MAX_ITER", "8", "SOLVER.STEPS", "(4,)", resume=True))
    assert "Starting training from iteration 6" in (out / "log.txt").read_text()
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == 7
    trainer_state = final["trainer"]
    steps = {int(s["step"]) for s in trainer_state["_trainer"]["optimizer"]["state"].values()}
    assert steps == {8}  # 2 + 4 + 2 optimizer steps: the state went through both kills
    assert trainer_state["hooks"]["LRScheduler"]["last_epoch"] == 8


def test_one_failing_process_stops_a_two_process_run(tmp_path):
    """Rank 1 hits a non-finite loss at iteration 1 while rank 0 waits for it in the gradient
    all-reduce: the whole run must end, with rank 1's error, instead of hanging."""
    script = tmp_path / "two_process.py"
    script.write_text(f"""
import os, sys
import torch
import detectron2.utils.comm as comm
from detectron2.engine import HookBase, launch
import train_net

class NanOnRank1(HookBase):
    def before_step(self):
        if comm.get_rank() == 1 and self.trainer.iter == 1:
            with torch.no_grad():
                self.trainer.model.module.class_embed.bias.fill_(float("nan"))

def main(args):
    open(os.path.join({str(tmp_path)!r}, f"rank{{comm.get_rank()}}.pid"), "w").write(
        str(os.getpid()))
    trainer = train_net.Trainer(train_net.setup(args))
    trainer.register_hooks([NanOnRank1()])
    trainer.train()

if __name__ == "__main__":
    args = train_net.argument_parser().parse_args(sys.argv[1:])
    launch(main, 2, dist_url="auto", args=(args,))
""")
    cmd = [
        sys.executable,
        str(script),
        "--config-file",
        BASE,
        *TINY,
        "OUTPUT_DIR",
        str(tmp_path / "out"),
        "SOLVER.MAX_ITER",
        "100",
    ]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    # a hang would last until GLOO's 30-minute timeout; starting 3 processes on a busy CPU can
    # take minutes
    run = subprocess.run(
        cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=400
    )
    assert run.returncode != 0
    assert "Non-finite loss at iteration 1 (process rank 1)" in run.stderr + run.stdout
    time.sleep(1)
    for rank in (0, 1):
        pid = int((tmp_path / f"rank{rank}.pid").read_text())
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read()


def test_two_seeded_trainings_give_identical_losses(tmp_path):
    runs = []
    for i in range(2):
        trainer = _trainer(
            tmp_path / str(i),
            "SOLVER.MAX_ITER",
            "3",
            "SOLVER.STEPS",
            "(2,)",
            "SOLVER.CHECKPOINT_PERIOD",
            "100",
        )
        trainer.train()
        losses = {
            k: [v for v, _ in h.values()]
            for k, h in trainer.storage.histories().items()
            if k.startswith("loss") or k == "total_loss"
        }
        metrics = [json.loads(line) for line in open(tmp_path / str(i) / "metrics.json")]
        metrics = [{k: v for k, v in m.items() if "time" not in k} for m in metrics]
        runs.append((losses, metrics))
    (losses0, metrics0), (losses1, metrics1) = runs
    assert len(losses0["total_loss"]) == 3 and losses0 == losses1
    assert metrics0 and metrics0 == metrics1
