#!/usr/bin/env python
"""One prepared check for a GPU machine: the tests on CUDA, DETR R50 training in fp32 / bf16 / fp16
and inference (fp32 eager, fast path, bf16), Faster R-CNN R50-FPN inference, and the ratios of
issue 16, in one run (< 8 minutes); prints one table and writes one JSON (docs/gpu.md):

    python tools/gpu_check.py --bundle gpu_bundle  # here: the GPU machine's wheels (< 64 MiB)
    # on the GPU machine (Python 3.12, its own torch, no registry): the install line --bundle
    # prints, then from the repository root
    PYTHONPATH=. python3 tools/gpu_check.py --output gpu_check.json

Inputs: generated 800x1066 images with 7 boxes each, in memory. Training runs train_net's Trainer
(SOLVER.AMP.*) for 50 iterations at batch 8, timing the last 40. Weights are random: the losses
of the three precisions are compared with each other, not with a trained model.
"""

import gc
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from argparse import ArgumentParser, Namespace, RawDescriptionHelpFormatter
from email.parser import Parser

from packaging.requirements import Requirement
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLE_LIMIT_MIB = 64  # what a device run may carry
# cp312 manylinux wheels of what the GPU machine lacks (it has GPU_PROVIDED)
BINARY = [
    "iopath==0.1.9", "yacs==0.1.8", "pycocotools==2.0.11", "hotcoco==1.3.0",
    "panopticapi-lite==0.2.0", "termcolor==3.3.0", "omegaconf==2.3.1", "hydra-core==1.3.8",
    "faster-coco-eval==1.8.0",
]  # fmt: skip
SOURCE_ONLY = ["fvcore==0.1.5.post20221221", "antlr4-python3-runtime==4.9.3"]  # pure Python
# installed without its requirements, as setup.sh does: its metadata pins numpy<2 and
# scikit-image, which its code (rgb2id / id2rgb, pq_compute) does not need
NO_DEPS = ["panopticapi-lite"]
# what the GPU machine has, with the versions KINDS.md gives (None: version not listed)
GPU_PROVIDED = dict.fromkeys(
    "pillow matplotlib pyyaml tqdm tabulate tensorboard cloudpickle portalocker packaging scipy "
    "pytest opencv-python-headless".split()
)
GPU_PROVIDED.update(numpy="2.5.2", torch="2.11.0", torchvision="0.26.0", onnx="1.23.1",
                    onnxruntime="1.30.0")  # fmt: skip
REQUIREMENT_FILES = ("requirements.txt", "requirements-no-deps.txt")
PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"]
PLATFORM += [f"--platform={p}" for p in ("manylinux2014_x86_64", "manylinux_2_28_x86_64")]

# the tests that build a model, a loss, a mapper's output or an evaluator hand-off (--device)
DEVICE_TESTS = [
    "tests/test_matcher.py", "tests/test_criterion.py", "tests/test_detr_model.py",
    "tests/test_panoptic_model.py", "tests/test_export.py", "tests/test_coco_evaluation.py",
    "tests/test_panoptic_data.py",
    "tests/test_reliability.py::test_unusual_images_go_through_mapper_and_model",
]  # fmt: skip
IMAGE_HW, BOXES_PER_IMAGE, TRAIN_BATCH, TRAIN_ITERS = (800, 1066), 7, 8, 50
# (limit, "min" or "max") of each ratio asked. Output differences from fp32 eager (class
# probabilities and normalized boxes, max abs): the fast path as tests/test_detr_model.py checks
# it, bf16 within 1e-2 as the bf16 loss test
TARGETS = {
    "bf16_train_speedup": (1.8, "min"), "bf16_train_memory": (0.6, "max"),
    "best_inference_speedup_b1": (3.0, "min"), "fast_output_diff": (1e-4, "max"),
    "bf16_output_diff": (1e-2, "max"),
}  # fmt: skip


# --- the bundle (runs here) --------------------------------------------------------------------
def _pip(*args):
    subprocess.check_call([sys.executable, "-m", "pip", *args, "-q", "--disable-pip-version-check"])


def _size_mib(folder):
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / 2**20


def check_bundle(folder):
    """Problems of a bundle (an empty list: it installs on the GPU machine): a wheel that is not
    for CPython 3.12 on manylinux x86_64, a requirement neither in the bundle nor on the machine,
    a name of requirements.txt without its wheel, or a size over the limit."""
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)]
    platforms += ["manylinux2014_x86_64", "linux_x86_64"]
    supported = set(cpython_tags((3, 12), platforms=platforms))
    supported |= set(compatible_tags((3, 12), "cp312", platforms))
    env = {"python_version": "3.12", "sys_platform": "linux", "platform_system": "Linux",
           "extra": ""}  # fmt: skip
    problems, versions, requires = [], {}, {}
    for f in sorted(f for f in os.listdir(folder) if f.endswith(".whl")):
        if not parse_wheel_filename(f)[3] & supported:
            problems.append(f"{f}: not installable on CPython 3.12 manylinux x86_64")
        with zipfile.ZipFile(os.path.join(folder, f)) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            msg = Parser().parsestr(z.read(meta).decode())
        name, versions[name] = canonicalize_name(msg["Name"]), msg["Version"]
        reqs = [Requirement(line) for line in msg.get_all("Requires-Dist") or []]
        requires[name] = [r for r in reqs if not r.marker or r.marker.evaluate(env)]  # on the GPU
    available = dict(GPU_PROVIDED, **versions)
    for name, reqs in requires.items():
        for req in [] if name in NO_DEPS else reqs:
            have = available.get(canonicalize_name(req.name), "missing")
            if have == "missing" or (have is not None and have not in req.specifier):
                where = "not in the bundle nor on the GPU" if have == "missing" else f"has {have}"
                problems.append(f"{name} requires {req}: {where}")
    for file_name in REQUIREMENT_FILES:
        listed = open(os.path.join(folder, file_name)).read().split()
        problems += [f"{file_name} names {n} but no wheel" for n in listed if n not in versions]
    if (size := _size_mib(folder)) > BUNDLE_LIMIT_MIB:
        problems.append(f"{size:.1f} MiB, over the {BUNDLE_LIMIT_MIB} MiB a run may carry")
    return problems


def make_bundle(folder):
    """Fill ``folder`` with the wheels and requirements.txt; prints the install line."""
    os.makedirs(folder, exist_ok=True)
    _pip("download", "--no-deps", *PLATFORM, "-d", folder, *BINARY)
    _pip("wheel", "--no-deps", "--no-binary", ":all:", "-w", folder, *SOURCE_ONLY)
    build = os.path.join(ROOT, "dev", "build_detectron2.py")
    subprocess.check_call([sys.executable, build, "--wheel-dir", folder])
    names = ["detectron2"] + [canonicalize_name(r.split("==")[0]) for r in BINARY + SOURCE_ONLY]
    names = [n for n in names if n not in NO_DEPS]
    for file_name, listed in zip(REQUIREMENT_FILES, (names, NO_DEPS)):
        with open(os.path.join(folder, file_name), "w") as f:
            f.write("\n".join(listed) + "\n")
    if problems := check_bundle(folder):
        raise SystemExit("The bundle is not installable:\n  " + "\n  ".join(problems))
    pip = f"python3 -m pip install -q --no-index --find-links {folder}"
    with_deps, no_deps = (os.path.join(folder, f) for f in REQUIREMENT_FILES)
    line = f"{pip} -r {with_deps} && {pip} --no-deps -r {no_deps}"  # the GPU machine's install
    wheels = len(os.listdir(folder)) - 2
    print(f"{folder}: {wheels} wheels, {_size_mib(folder):.1f} MiB. On the GPU machine:\n{line}")


# --- the check (runs on the GPU machine) -------------------------------------------------------
def _cfg(config, opts):
    from detr_d2_cli import setup_cfg

    path = os.path.join(ROOT, "configs", config)
    opts = ["MODEL.DEVICE", "cuda", "MODEL.WEIGHTS", "", *opts]
    return setup_cfg(Namespace(config_file=path, opts=opts, register_coco=None))


def run_device_tests():
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "--device", "cuda", "-x", "-q", *DEVICE_TESTS]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    tail = (run.stdout + run.stderr).strip().splitlines()[-1:]
    return {"passed": run.returncode == 0, "summary": " ".join(tail),
            "seconds": time.perf_counter() - start}  # fmt: skip


def train_detr(dtype, batches, config="detr_r50.yaml", opts=(), iters=TRAIN_ITERS, warmup=10):
    """images/s, peak CUDA memory (MiB) and the total loss after ``iters`` iterations (the last
    ``iters - warmup`` timed) of train_net's Trainer on ``batches`` (cycled), in ``dtype``
    ("float32", "bfloat16", "float16"; SOLVER.AMP.*)."""
    import torch
    from detectron2.utils.events import EventStorage

    import train_net
    from detr_d2.utils.timing import alternating_times, summarize

    class SyntheticDataTrainer(train_net.Trainer):
        @classmethod
        def build_train_loader(cls, cfg):
            return itertools.cycle(batches)

    amp = ["SOLVER.AMP.ENABLED", str(dtype != "float32"), "SOLVER.AMP.DTYPE", dtype]
    size = len(batches[0])
    with tempfile.TemporaryDirectory() as out, EventStorage(0) as storage:
        opts = [*opts, "SOLVER.IMS_PER_BATCH", str(size), "OUTPUT_DIR", out, "SEED", "0", *amp]
        torch.manual_seed(0)
        trainer = SyntheticDataTrainer(_cfg(config, opts))
        device = trainer.model.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def step():
            trainer.iter = storage.iter
            trainer.run_step()
            storage.step()

        times = alternating_times({"train": step}, iters - warmup, warmup, device, 10)["train"]
        loss = storage.history("total_loss").latest()
    memory = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    trainer = step = None  # the model's memory is freed before the next run
    gc.collect()
    torch.cuda.empty_cache()  # a no-op without CUDA
    return {"images_per_s": summarize(times, size)["median_per_s"], "final_loss": loss,
            "peak_memory_mib": memory}  # fmt: skip


def inference(config, paths, inputs, opts=(), iters=30, warmup=5, sizes=(1, 8)):
    """images/s at each batch size for each path ("fp32_eager", "fast", "bf16"), and for DETR the
    largest output difference of each path from fp32 eager on one batch of 2 (without TF32).
    Speeds are measured with PyTorch's defaults (cuDNN TF32 on)."""
    import torch

    from detr_d2.engine.predictor import load_model
    from detr_d2.utils.timing import benchmark_inference

    model = load_model(_cfg(config, opts), random_weights=True).eval()
    plain = [{k: v for k, v in x.items() if k != "instances"} for x in inputs]
    results, reference = {}, None
    for path in paths:
        if hasattr(model, "fast_inference"):
            model.fast_inference = path != "fp32_eager"
        with torch.autocast(model.device.type, torch.bfloat16, enabled=path == "bf16"):
            speed = {b: benchmark_inference(model, [plain[:b]], iters, warmup, 0) for b in sizes}
            results[path] = {f"batch_{b}": r["median_per_s"] for b, r in speed.items()}
            if hasattr(model, "forward_raw"):  # outputs as the tests compare them: no TF32
                with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                    out = model.forward_raw(model.preprocess_image(plain[:2]))
                probs = out["pred_logits"].float().softmax(-1)
                outputs = torch.cat([probs.flatten(), out["pred_boxes"].float().flatten()])
                reference = outputs if reference is None else reference
                results[path]["max_output_diff"] = (outputs - reference).abs().max().item()
    return results


def ratios(report):
    """The measured ratios and output differences, and whether each meets its TARGETS entry."""
    train, detr = report["train"], report["inference"]["detr"]
    fp32, bf16 = train["float32"], train["bfloat16"]
    best_b1 = max(detr[p]["batch_1"] for p in ("fast", "bf16"))
    measured = {
        "bf16_train_speedup": bf16["images_per_s"] / fp32["images_per_s"],
        "bf16_train_memory": bf16["peak_memory_mib"] / fp32["peak_memory_mib"],
        "best_inference_speedup_b1": best_b1 / detr["fp32_eager"]["batch_1"],
        "fast_output_diff": detr["fast"]["max_output_diff"],
        "bf16_output_diff": detr["bf16"]["max_output_diff"],
    }
    for dtype in ("bfloat16", "float16"):  # after 50 steps: reported, no target
        loss = train[dtype]["final_loss"]
        measured[f"{dtype}_final_loss_rel_diff"] = abs(loss / fp32["final_loss"] - 1)
    ok = {
        name: measured[name] >= limit if kind == "min" else measured[name] <= limit
        for name, (limit, kind) in TARGETS.items()
    }
    return {"measured": measured, "targets": TARGETS, "ok": ok}


def format_table(report):
    rows = ["| measurement | value |", "|:--|--:|"]
    rows.append(f"| tests on CUDA | {report['tests']['summary']} |")
    for dtype, r in report["train"].items():
        rows.append(
            f"| DETR R50 train b{TRAIN_BATCH} {dtype} | {r['images_per_s']:.1f} img/s, "
            f"{r['peak_memory_mib']:.0f} MiB, loss after {TRAIN_ITERS} {r['final_loss']:.3f} |"
        )
    for model, paths in report["inference"].items():
        for path, r in paths.items():
            diff = f", max diff {r['max_output_diff']:.1e}" if "max_output_diff" in r else ""
            rows.append(
                f"| {model} inference {path} | b1 {r['batch_1']:.1f} img/s, "
                f"b8 {r['batch_8']:.1f} img/s{diff} |"
            )
    for name, value in report["ratios"]["measured"].items():
        ok = report["ratios"]["ok"].get(name)
        rows.append(f"| {name} | {value:.3g}{'' if ok is None else ' ok' if ok else ' MISSED'} |")
    return "\n".join(rows)


def run_check(output):
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("tools/gpu_check.py needs a CUDA GPU; without one, only --bundle runs.")
    from detectron2.utils.logger import setup_logger

    setup_logger(name="detr_d2")
    start = time.perf_counter()
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
              "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}  # fmt: skip
    report["tests"] = run_device_tests()
    from detr_d2.utils.testing import synthetic_inputs

    data = synthetic_inputs(*IMAGE_HW, TRAIN_BATCH, 80, True, boxes_per_image=BOXES_PER_IMAGE)
    report["train"] = {d: train_detr(d, [data]) for d in ("float32", "bfloat16", "float16")}
    report["inference"] = {
        "detr": inference("detr_r50.yaml", ("fp32_eager", "fast", "bf16"), data),
        "faster_rcnn": inference("faster_rcnn_R_50_FPN_3x.yaml", ("fp32_eager",), data),
    }
    report["ratios"] = ratios(report)
    report["seconds"] = time.perf_counter() - start
    with open(output, "w") as f:
        json.dump(report, f, indent=2)
    print(format_table(report))
    print(f"written to {output} in {report['seconds']:.0f} s")


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", metavar="DIR", help="fill DIR with the GPU machine's wheels")
    parser.add_argument("--output", default="gpu_check.json", help="the JSON report")
    args = parser.parse_args()
    if args.bundle:
        make_bundle(args.bundle)
    else:
        run_check(args.output)


if __name__ == "__main__":
    main()
