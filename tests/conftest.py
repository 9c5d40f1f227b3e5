import os

import pytest
import torch
from tiny import TINY_MODEL_OPTS  # tests/tiny.py

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the tests that build a model, a loss, a mapper's output or an evaluator "
        "hand-off put it (fixture `device`; tools/gpu_check.py runs them with cuda)",
    )


def pytest_configure(config):
    if config.getoption("--device") != "cuda":
        return
    if not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda: CUDA is not available on this machine")
    # the tolerances are float32's: TF32 convolutions / matmuls (cuDNN's default) would round
    # their inputs to 10-bit mantissas
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False


@pytest.fixture(scope="session")
def device(request):
    """The torch.device of --device (cpu by default)."""
    return torch.device(request.config.getoption("--device"))


@pytest.fixture
def tiny_detr_cfg(device):
    """A DETR config small enough for CPU unit tests (tests/tiny.py): R18 at stride 16, d=32,
    1 encoder + 2 decoder layers, 5 classes, 7 queries; MODEL.DEVICE is --device."""
    from detectron2.config import get_cfg

    from detr_d2 import add_detr_config

    cfg = get_cfg()
    add_detr_config(cfg)
    cfg.merge_from_file(os.path.join(os.path.dirname(__file__), "..", "configs", "Base-DETR.yaml"))
    cfg.merge_from_list(TINY_MODEL_OPTS)
    cfg.MODEL.DETR.NUM_CLASSES = 5
    cfg.MODEL.DETR.NUM_OBJECT_QUERIES = 7
    cfg.MODEL.DEVICE = str(device)
    return cfg


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    """The generated shapes datasets go to a temporary root (unless DETECTRON2_DATASETS is set)."""
    old = os.environ.get("DETECTRON2_DATASETS")
    root = os.environ.setdefault("DETECTRON2_DATASETS", str(tmp_path_factory.mktemp("datasets")))
    yield root
    if old is None:
        os.environ.pop("DETECTRON2_DATASETS", None)
