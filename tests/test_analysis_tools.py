"""FLOP handles and the analysis tools (tools/analyze_model.py, benchmark.py, compare.py,
plot_metrics.py), on the tiny DETR and tiny inputs."""

import argparse

import csv
import importlib.util
import json
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2 import model_zoo
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from fvcore.nn import FlopCountAnalysis
from torch import nn

import detr_d2_cli as cli
from detr_d2.utils.flops import ATTENTION_FLOP_HANDLES, flop_count_analysis
from detr_d2.utils.records import read_metrics, update_analysis
from detr_d2.utils.testing import synthetic_inputs
from detr_d2.utils.timing import summarize

TOOLS = os.path.join(os.path.dirname(__file__), "..", "tools")


def _tool(name):
    """Import tools/<name>.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(TOOLS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name, argv):
    tool = _tool(name)
    return tool.main(tool.get_parser().parse_args(argv))


@pytest.fixture
def tiny_detr_yaml(tiny_detr_cfg, tmp_path):
    path = tmp_path / "tiny_detr.yaml"
    path.write_text(tiny_detr_cfg.dump())
    return str(path)


def _quiet(analysis):
    return analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)


def test_tiny_detr_flops_include_attention_products(tiny_detr_cfg):
    model = build_model(tiny_detr_cfg).eval()
    inputs = synthetic_inputs(64, 96, num=1)
    with_handles = _quiet(flop_count_analysis(model, inputs))
    without = _quiet(flop_count_analysis(model, inputs, attention=False))
    # R18 res4 (stride 16) on 64x96: L = 4*6 image tokens; d=32, N=7 queries, F=64, 1+2 layers
    L, d, N, F = 24, 32, 7, 64
    # q k^T and attn v, 2*L*S*d MACs per attention (heads * head_dim = d): encoder self (L, L),
    # each decoder layer self (N, N) and cross (N, L)
    attention = 2 * L * L * d + 2 * (2 * N * N * d + 2 * N * L * d)
    assert with_handles.by_operator()["attention"] == attention
    assert "attention" not in without.by_operator()
    assert with_handles.total() - without.total() == attention
    assert "aten::scaled_dot_product_attention" in without.unsupported_ops()
    assert "aten::scaled_dot_product_attention" not in with_handles.unsupported_ops()
    # in/out projections and FFNs are fvcore's aten::linear: encoder (q, k, v, out on L tokens,
    # FFN), decoder self (N), cross (q and out on N, k and v on L), FFN
    linear = (
        4 * L * d * d
        + 2 * L * d * F
        + 2 * (4 * N * d * d + 2 * N * d * d + 2 * L * d * d + 2 * N * d * F)
    )
    assert with_handles.by_module_and_operator()["model.transformer"]["linear"] == linear


class _Attention(nn.Module):
    def __init__(self, batch_first, need_weights):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=batch_first)
        self.need_weights = need_weights

    def forward(self, x, mask=None):
        return self.attn(x, x, x, key_padding_mask=mask, need_weights=self.need_weights)[0]


@pytest.mark.parametrize(
    "batch_first,need_weights,grad,op",
    [
        (True, False, False, "aten::_native_multi_head_attention"),  # fused fast path
        (False, False, True, "aten::scaled_dot_product_attention"),  # DETR's path
        (False, True, True, "aten::baddbmm"),  # weights returned, with a padding mask
    ],
)
def test_multihead_attention_paths_count_the_same(batch_first, need_weights, grad, op):
    b, length, e = 2, 5, 16
    module = _Attention(batch_first, need_weights).eval()
    x = torch.rand((b, length, e) if batch_first else (length, b, e))
    args = (x, torch.zeros(b, length, dtype=torch.bool)) if need_weights else (x,)
    with torch.set_grad_enabled(grad):
        plain = _quiet(FlopCountAnalysis(module, args))
        counted = _quiet(FlopCountAnalysis(module, args).set_op_handle(**ATTENTION_FLOP_HANDLES))
        projections = b * length * 4 * e * e
        assert counted.total() == projections + 2 * b * length * length * e
        assert plain.total() < counted.total()
    assert op in plain.unsupported_ops()  # the path this case means to exercise
    assert op not in counted.unsupported_ops()


class _MatMuls(nn.Module):
    def forward(self, a, b, v):
        return torch.matmul(a, b), torch.matmul(v, b), torch.matmul(b.t(), v)


def test_matmul_handle_broadcasts_and_takes_vectors():
    a, b, v = torch.rand(3, 5, 6, 4), torch.rand(4, 2), torch.rand(4)
    counted = _quiet(FlopCountAnalysis(_MatMuls(), (a, b, v)))
    counted.set_op_handle(**ATTENTION_FLOP_HANDLES)
    # (3, 5, 6, 4) @ (4, 2), broadcast; (4,) @ (4, 2); (2, 4) @ (4,)
    assert counted.by_operator()["matmul"] == 3 * 5 * 6 * 4 * 2 + 4 * 2 + 2 * 4


def test_faster_rcnn_flops_with_tiny_input():
    args = argparse.Namespace(
        config_file=model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"),
        opts=["MODEL.WEIGHTS", "", "MODEL.RPN.POST_NMS_TOPK_TEST", "20"],
    )
    cfg = cli.setup_cfg(args, device="cpu")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    # Random RPN box deltas can push every proposal off a 64 px image (no proposal left, no box
    # head run); zero deltas make the proposals the anchors, clipped, so the box head always runs.
    deltas = model.proposal_generator.rpn_head.anchor_deltas
    nn.init.zeros_(deltas.weight)
    nn.init.zeros_(deltas.bias)
    analysis = _quiet(flop_count_analysis(model, synthetic_inputs(64, 64, num=1)))
    ops = analysis.by_operator()
    assert ops["conv"] > 0 and ops["linear"] > 0  # backbone/FPN/RPN convs and the box head
    # the box head's two FCs (7x7x256 -> 1024 -> 1024) on each of at most 20 post-NMS proposals
    per_proposal = 7 * 7 * 256 * 1024 + 1024 * 1024
    box_head = analysis.by_module()["model.roi_heads.box_head"]
    assert box_head % per_proposal == 0 and 0 < box_head // per_proposal <= 20


def _register_tiny_dataset(name, root, num=2):
    paths = []
    for i in range(num):
        path = os.path.join(root, f"{i}.png")
        cv2.imwrite(path, np.random.RandomState(i).randint(0, 256, (40, 60, 3), dtype=np.uint8))
        paths.append(
            {"file_name": path, "image_id": i, "height": 40, "width": 60, "annotations": []}
        )
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: paths)


def test_analyze_model_tool(tiny_detr_yaml, tmp_path):
    out = tmp_path / "run"
    results = _run(
        "analyze_model",
        [
            "--config-file",
            tiny_detr_yaml,
            "--tasks",
            "flop",
            "parameter",
            "activation",
            "structure",
            "--input-size",
            "64",
            "96",
            "--output-dir",
            str(out),
        ],
    )
    assert results["flop"]["gflops"] > 0 and results["flop"]["input"] == "64x96"
    assert results["flop"]["gflops_by_operator"]["attention"] > 0
    assert results["activation"]["mega_activations"] > 0
    recorded = json.loads((out / "analysis.json").read_text())
    assert recorded["flop"]["gflops"] == results["flop"]["gflops"]
    assert recorded["parameter"]["total"] == results["parameter"]["total"] > 0

    # over a dataset at test resolution (short side 48, long side at most 64): 48x72 -> 48x64
    _register_tiny_dataset("analysis_test_images", str(tmp_path))
    flop = _run(
        "analyze_model",
        [
            "--config-file",
            tiny_detr_yaml,
            "--tasks",
            "flop",
            "--dataset",
            "analysis_test_images",
            "--num-images",
            "2",
            "INPUT.MIN_SIZE_TEST",
            "48",
            "INPUT.MAX_SIZE_TEST",
            "64",
        ],
    )["flop"]
    assert flop["num_inputs"] == 2 and 0 < flop["gflops"] < results["flop"]["gflops"]


def test_benchmark_tool_reports_throughput(tiny_detr_yaml, tmp_path, monkeypatch):
    output = tmp_path / "bench.json"
    clipped = []  # the train task times train_net's step, which clips every gradient at 0.1
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(
        torch.nn.utils, "clip_grad_norm_", lambda p, n, *a: clipped.append(n) or clip(p, n, *a)
    )
    results = _run(
        "benchmark",
        [
            "--config-file",
            tiny_detr_yaml,
            "--task",
            "inference",
            "train",
            "--input-size",
            "64",
            "64",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--num-images",
            "2",
            "--device",
            "cpu",
            "--output",
            str(output),
            "--output-dir",
            str(tmp_path),
        ],
    )
    for task in ("inference", "train"):
        r = results[task]
        assert r["iterations"] == 2 and r["median_per_s"] > 0 and r["threads"] >= 1
        assert r["min_per_s"] <= r["median_per_s"] <= r["max_per_s"]
    assert clipped == [0.1] * 3  # 1 warmup + 2 timed iterations
    written = json.loads(output.read_text())
    assert written["train"]["median_per_s"] == results["train"]["median_per_s"]
    recorded = json.loads((tmp_path / "analysis.json").read_text())
    assert recorded["benchmark"]["inference"]["median_per_s"] > 0


def test_benchmark_prints_every_figure_of_the_speed_issue(tiny_detr_yaml, capsys):
    """The tasks that replaced tools/benchmark_speed.py and tools/benchmark_coco_eval.py."""
    argv = ["--config-file", tiny_detr_yaml, "--input-size", "64", "96", "--iters", "2"]
    argv += ["--task", "variants", "matcher", "data", "eval", "pq", "train", "--batch-size", "2"]
    argv += ["--matcher-batch", "4", "--eval-images", "30", "--dets-per-image", "5"]
    results = _run("benchmark", argv + ["--pq-images", "6", "--warmup", "1"])
    out = capsys.readouterr().out
    for row in (
        "every optimization off (explicit attention)",
        "FAST_INFERENCE off",
        "FAST_INFERENCE on",
        "one batch matrix",
        "per-image blocks",
        "PIL (Detectron2)",
        "torchvision.io (ours)",
        "training mapper, PIL read + resize (Detectron2)",
        "training mapper, torchvision read + tensor resize (ours)",
        "30 images x 5: pycocotools",
        "hotcoco (default backend)",
        "6 generated panoptic images: panopticapi",
        "6 generated panoptic images: hotcoco (default)",
        "training iteration, batch 2 at 64x96",
    ):
        assert row in out, row
    diff = float(out.split("largest output difference ")[1].split(")")[0])
    assert diff < 1e-4  # the fast paths give the reference's outputs
    floor = float(out.split("inference over the compute floor (")[1].split(" s)")[0])
    assert floor > 0 and results["floor"]["gflop"] > 0
    assert "(identical pixels: True)" in out
    pixel_diff = int(out.split("(largest pixel difference ")[1].split(")")[0])
    # each tensor resize is within one gray level of PIL's; the crop branch resizes twice
    assert pixel_diff <= 2
    hotcoco = out.split("COCO evaluation hotcoco: ")[1].split("\n")[0]
    assert "largest difference of the 12 stats 0.0e+00" in hotcoco
    pq_diff = float(out.split("largest difference of PQ / SQ / RQ ")[1].split(")")[0])
    assert pq_diff < 1e-9


def test_benchmark_on_cuda_without_cuda_is_an_error(tiny_detr_yaml, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is valid here")
    with pytest.raises(ValueError, match="--device cuda, but CUDA is not available"):
        argv = ["--config-file", tiny_detr_yaml, "--device", "cuda"]
        _run("benchmark", argv + ["--output-dir", str(tmp_path)])
    assert not (tmp_path / "analysis.json").exists()  # no CPU figures recorded as the GPU's


def test_analysis_model_of_a_panoptic_config_without_its_frozen_weights(tiny_detr_cfg):
    import detr_d2.modeling.panoptic  # noqa: F401  registers DetrPanoptic
    from detr_d2.engine.predictor import load_model

    cfg = tiny_detr_cfg
    cfg.MODEL.META_ARCHITECTURE = "DetrPanoptic"
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4"]
    cfg.MODEL.DETR.BACKBONE_FEATURE = "res4"
    cfg.MODEL.DETR.MASK_HEAD_GROUPS = 2
    cfg.MODEL.DETR.FROZEN_WEIGHTS = "output/not_trained_yet/model_final.pth"
    cfg.freeze()
    model = load_model(cfg, random_weights=True)  # FLOPs and speed do not need the weights
    assert type(model).__name__ == "DetrPanoptic" and not model.box_model_frozen
    assert cfg.MODEL.DETR.FROZEN_WEIGHTS == "output/not_trained_yet/model_final.pth"  # untouched


def test_summarize_statistics():
    s = summarize([0.1, 0.2, 0.4, 0.5], items_per_iter=2)
    assert s["median_s"] == pytest.approx(0.3)
    assert s["median_per_s"] == pytest.approx(2 / 0.3)
    assert s["min_per_s"] == pytest.approx(4.0) and s["max_per_s"] == pytest.approx(20.0)
    assert s["q25_per_s"] == pytest.approx(2 / 0.425) and s["q75_per_s"] == pytest.approx(2 / 0.175)


def _write_metrics(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def test_compare_table(tmp_path):
    detr, frcnn = tmp_path / "detr_r50", tmp_path / "frcnn"
    detr.mkdir()
    frcnn.mkdir()
    ap = {
        "bbox/AP": 42.04,
        "bbox/AP50": 62.4,
        "bbox/AP75": 44.2,
        "bbox/APs": 20.5,
        "bbox/APm": 45.8,
        "bbox/APl": 61.1,
    }
    _write_metrics(
        detr / "metrics.json",
        [
            {"iteration": 19, "total_loss": 3.0, "lr": 1e-4},
            dict({k: v - 10 for k, v in ap.items()}, iteration=99),  # an earlier evaluation
            {"iteration": 119, "total_loss": 2.0, "lr": 1e-4},
            dict(ap, iteration=199),
        ],
    )
    update_analysis(str(detr), "flop", {"gflops": 86.2})
    update_analysis(str(detr), "parameter", {"total": 41_521_941})
    update_analysis(
        str(detr), "benchmark", {"inference": {"median_per_s": 28.3, "device_name": "V100"}}
    )
    _write_metrics(frcnn / "metrics.json", [{"iteration": 19, "total_loss": 1.0}])

    md = tmp_path / "table.md"
    table = _run(
        "compare",
        [str(detr), str(frcnn), "--names", "DETR", "Faster RCNN-FPN", "--output", str(md)],
    )
    assert md.read_text() == table
    header, rule, detr_row, frcnn_row = table.strip().split("\n")
    assert [c.strip() for c in header.strip("|").split("|")] == _tool("compare").COLUMNS
    assert [c.strip() for c in detr_row.strip("|").split("|")] == [
        "DETR",
        "86.20/28",
        "V100",
        "41.5M",
        "42.0",
        "62.4",
        "44.2",
        "20.5",
        "45.8",
        "61.1",
    ]
    assert [c.strip() for c in frcnn_row.strip("|").split("|")] == ["Faster RCNN-FPN"] + ["-"] * 9

    out_csv = tmp_path / "table.csv"
    _run("compare", [str(detr), "--output", str(out_csv)])
    rows = list(csv.DictReader(out_csv.open()))
    assert list(rows[0]) == _tool("compare").COLUMNS
    assert rows[0]["Model"] == "detr_r50" and rows[0]["AP"] == "42.0"

    # a small model's GFLOPs keep two decimals (0.50, not 1)
    update_analysis(str(frcnn), "flop", {"gflops": 0.5})
    assert "| 0.50/- " in _run("compare", [str(frcnn)])
    # a mistyped folder: an error naming it, not a row of "-"
    with pytest.raises(SystemExit, match="No such output folder: .*detr_r5O"):
        _run("compare", [str(detr), str(tmp_path / "detr_r5O")])


def test_plot_metrics_writes_png(tmp_path):
    metrics = tmp_path / "metrics.json"
    records = [
        {"iteration": i, "total_loss": 5.0 / (i + 1), "loss_ce": 1.0 / (i + 1), "lr": 1e-4}
        for i in range(0, 100, 20)
    ]
    records[1]["class_error"] = 50.0
    records += [
        {"iteration": 40, "total_loss": 0.5, "loss_ce": 0.1, "lr": 1e-4},  # resumed
        {"iteration": 99, "bbox/AP": 12.5},
    ]
    _write_metrics(metrics, records)
    with open(metrics, "a") as f:
        f.write('{"iteration": 120, "total_lo')  # a line cut by a crash
    assert len(read_metrics(str(metrics))) == len(records)
    iters, values = _tool("plot_metrics").metric_series(read_metrics(str(metrics)), "total_loss")
    assert iters == [0, 20, 40, 60, 80] and values[2] == 0.5

    png = tmp_path / "curves.png"
    _run(
        "plot_metrics",
        [
            str(metrics),
            "--output",
            str(png),
            "--keys",
            "total_loss",
            "loss_ce",
            "lr",
            "bbox/AP",
            "loss_giou",
        ],
    )
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    # DETR's class_error is among the default curves (issue 15, item 4)
    assert "class_error" in _run("plot_metrics", [str(metrics), "--output", str(png)])
