"""The install works: detectron2 (python-only build or upstream), its model zoo, FLOP counting,
a Faster R-CNN training step, and multi-process launch on CPU."""

import os

import pytest
import torch


def test_detectron2_imports_and_flop_counting_available():
    import detectron2.data  # noqa: F401  (needs the Pillow / NumPy fixes)
    from detectron2.utils.analysis import FlopCountAnalysis  # noqa: F401  (needs export w/o caffe2)

    import detr_d2  # noqa: F401
    from detectron2.modeling import META_ARCH_REGISTRY

    assert "Detr" in META_ARCH_REGISTRY


def test_compiled_only_ops_raise_clear_error():
    from detectron2 import _C

    if not getattr(_C, "IS_STANDIN", False):
        pytest.skip("upstream detectron2 with compiled ops: nothing to check")
    with pytest.raises(NotImplementedError, match=r"box_iou_rotated.*Python-only build"):
        _C.box_iou_rotated(None, None)


def _faster_rcnn_cfg():
    from detectron2.config import get_cfg

    from detr_d2 import add_detr_config, merge_config_file

    cfg = get_cfg()
    add_detr_config(cfg)  # must not change anything Faster R-CNN uses
    here = os.path.dirname(__file__)
    merge_config_file(cfg, os.path.join(here, "..", "configs", "faster_rcnn_R_50_FPN_3x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return cfg


def test_add_detr_config_changes_no_existing_default():
    from detectron2.config import get_cfg
    from detectron2.model_zoo import get_config_file

    from detr_d2 import add_detr_config

    plain = get_cfg()
    plain.merge_from_file(get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"))
    ours = _faster_rcnn_cfg()
    ours.MODEL.DEVICE, ours.MODEL.WEIGHTS = plain.MODEL.DEVICE, plain.MODEL.WEIGHTS
    ours.OUTPUT_DIR = plain.OUTPUT_DIR

    def flat(node, prefix=""):
        out = {}
        for k, v in node.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    plain_flat, ours_flat = flat(plain), flat(ours)
    assert {k: ours_flat[k] for k in plain_flat} == plain_flat
    assert add_detr_config(ours) is ours  # idempotent


def test_faster_rcnn_builds_and_takes_a_training_step():
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    from detr_d2.solver import build_optimizer

    torch.manual_seed(0)
    cfg = _faster_rcnn_cfg()
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    assert type(optimizer) is torch.optim.SGD  # the baseline keeps Detectron2's optimizer
    inst = Instances((96, 128))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 60.0, 70.0]]))
    inst.gt_classes = torch.tensor([3])
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)
    with EventStorage(0):
        losses = model([{"image": image, "instances": inst}])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    optimizer.step()


def _gather_rank(out_dir):
    import detectron2.utils.comm as comm

    from detr_d2.engine import shut_down_process_group

    ranks = comm.all_gather(comm.get_rank())
    with open(os.path.join(out_dir, f"rank{comm.get_rank()}.txt"), "w") as f:
        f.write(",".join(map(str, ranks)) + f";{comm.get_world_size()}")
    shut_down_process_group()  # else a GLOO worker can abort at exit


def test_launch_two_cpu_processes(tmp_path):
    from detectron2.engine import launch

    launch(_gather_rank, 2, dist_url="auto", args=(str(tmp_path),))
    for rank in range(2):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "0,1;2"
