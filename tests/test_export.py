"""Exported tiny DETR (TorchScript, ONNX via onnxruntime, torch.export) against eager Detr."""

import warnings

import pytest
import torch
from detectron2.modeling import build_model

from detr_d2.export import EXPORTERS, FILE_NAMES, ExportableDetr, batch_images, exportable
from detr_d2.export import load_exported

ATOL = 1e-4


def _images(sizes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g) * 255 for h, w in sizes]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Ops on these tiny graphs are too small to gain from intra-op threads; on a shared CPU the
    threads' synchronization makes the exports several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_detr(tiny_detr_cfg):
    torch.manual_seed(0)
    return build_model(tiny_detr_cfg).eval()


def _eager(detr, images):
    """Detr's own path: preprocess_image + forward_raw + inference, as (boxes, scores, classes)
    and, for DetrPanoptic, forward_raw's "pred_masks"."""
    with torch.no_grad():
        batch = detr.preprocess_image([{"image": im} for im in images])
        out = detr.forward_raw(batch)
        results = detr.inference(out["pred_logits"], out["pred_boxes"], batch.image_sizes)
    expected = (
        torch.stack([r.pred_boxes.tensor for r in results]),
        torch.stack([r.scores for r in results]),
        torch.stack([r.pred_classes for r in results]),
    )
    return expected + ((out["pred_masks"],) if "pred_masks" in out else ())


def _assert_same(actual, expected):
    assert len(actual) == len(expected)
    assert actual[0].shape == expected[0].shape and actual[2].dtype == torch.int64
    for a, e in zip(actual[:2] + actual[3:], expected[:2] + expected[3:]):
        torch.testing.assert_close(a, e, atol=ATOL, rtol=0)
    assert torch.equal(actual[2], expected[2])


def test_wrapper_matches_detr_on_padded_batch(tiny_detr, device):
    images = _images([(64, 96), (48, 80)], seed=1)
    inputs = [x.to(device) for x in batch_images(images)]
    assert inputs[1][1, 48:].all() and not inputs[1][1, :48, :80].any()
    with torch.no_grad():
        actual = ExportableDetr(tiny_detr)(*inputs)
    _assert_same(actual, _eager(tiny_detr, images))


def test_wrapper_applies_test_topk_like_inference(tiny_detr, device):
    images = _images([(64, 96), (48, 80)], seed=2)
    tiny_detr.test_topk = 3
    with torch.no_grad():
        actual = ExportableDetr(tiny_detr)(*[x.to(device) for x in batch_images(images)])
    assert actual[1].shape == (2, 3)
    _assert_same(actual, _eager(tiny_detr, images))


def _export_and_check(detr, fmt, tmp_path, size_sets):
    """Export at a padded batch of 2 (64x96 and 48x72), reload, compare on each size set. On the
    CPU, where load_exported runs every format."""
    detr, path = detr.cpu(), str(tmp_path / FILE_NAMES[fmt])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of torch.jit / the ONNX exporter
        EXPORTERS[fmt](exportable(detr), batch_images(_images([(64, 96), (48, 72)], 3)), path)
        exported = load_exported(path, fmt)
    for sizes in size_sets:
        images = _images(sizes, seed=4)
        with torch.no_grad():
            actual = exported(*batch_images(images))
        _assert_same(actual, _eager(detr, images))


@pytest.mark.parametrize("fmt", sorted(EXPORTERS))
def test_export_roundtrip_at_other_sizes(tiny_detr, tmp_path, fmt):
    """Sizes are not baked in: the mask, feature size and box scale are computed in the graph.
    The second batch has another batch size, other heights and widths, and padding."""
    size_sets = [[(64, 96), (48, 72)], [(96, 64), (80, 48), (70, 70)]]
    _export_and_check(tiny_detr, fmt, tmp_path, size_sets)


def test_onnx_without_positions_on_keys_at_other_size(tiny_detr_cfg, tmp_path):
    """With the encodings at the input only, attention runs with key is value, a path whose key
    length the ONNX exporter would freeze (see detr_d2/export.py)."""
    tiny_detr_cfg.MODEL.DETR.POSITION_EMBEDDING_AT = "input"
    tiny_detr_cfg.MODEL.DETR.QUERY_POS_AT = "input"
    torch.manual_seed(0)
    _export_and_check(build_model(tiny_detr_cfg).eval(), "onnx", tmp_path, [[(80, 112)]])


@pytest.fixture
def tiny_panoptic(tiny_detr_cfg):
    cfg = tiny_detr_cfg
    cfg.MODEL.META_ARCHITECTURE = "DetrPanoptic"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4"]
    cfg.MODEL.DETR.BACKBONE_FEATURE = "res4"
    cfg.MODEL.DETR.MASK_HEAD_GROUPS = 2  # d / 16 = 2 channels in the mask head's last block
    torch.manual_seed(0)
    return build_model(cfg).eval()


def test_panoptic_network_onnx_at_other_size(tiny_panoptic, tmp_path):
    """DetrPanoptic: boxes, scores, classes and forward_raw's mask logits (the merge into
    segments stays in Python). TorchScript and torch.export take the same wrapper."""
    _export_and_check(tiny_panoptic, "onnx", tmp_path, [[(96, 64), (80, 48), (70, 70)]])


def test_export_tool_refuses_random_weights_unless_asked(tiny_detr_cfg, tmp_path):
    """tools/export_model.py: no MODEL.WEIGHTS is an error naming the key; --random-weights
    exports (with a WARNING), checks the reloaded model and warns no TracerWarning on the way."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "tools", "export_model.py")
    spec = importlib.util.spec_from_file_location("export_model_tool", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    (yaml := tmp_path / "tiny.yaml").write_text(tiny_detr_cfg.dump())
    argv = ["--config-file", str(yaml), "--format", "torchscript", "--input-size", "64", "96"]
    argv += ["--output-dir", str(tmp_path / "export")]
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty"):
        tool.main(tool.get_parser().parse_args(argv))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tool.main(tool.get_parser().parse_args(argv + ["--random-weights"])) == 0
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert (tmp_path / "export" / "model.ts").is_file()
