"""tools/gpu_check.py without a GPU: --bundle gives a set of wheels that installs offline on the
GPU machine (CPython 3.12, manylinux x86_64, within the 64 MiB a run carries, every requirement in
the bundle or on that machine), and the check itself refuses cleanly where CUDA is missing."""

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
TOOL = os.path.join(ROOT, "tools", "gpu_check.py")


def _gpu_check():
    spec = importlib.util.spec_from_file_location("tool_gpu_check", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu") / "bundle"
    run = subprocess.run([sys.executable, TOOL, "--bundle", str(folder)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"--no-index --find-links {folder} -r {folder}/requirements.txt" in run.stdout
    return folder


def test_bundle_installs_offline_on_cpython_312(bundle, tmp_path):
    tool = _gpu_check()
    assert tool.check_bundle(str(bundle)) == []
    names = [n for f in tool.REQUIREMENT_FILES for n in (bundle / f).read_text().split()]
    assert {"detectron2", "fvcore", "iopath", "yacs", "pycocotools", "hotcoco"} <= set(names)
    assert "panopticapi-lite" in names
    size = sum(f.stat().st_size for f in bundle.iterdir())
    assert size < tool.BUNDLE_LIMIT_MIB * 2**20
    # pip itself, offline, for the GPU machine's interpreter and platform: a wheel for each name
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-deps",
           "--find-links", str(bundle), "--target", str(tmp_path / "t"), *tool.PLATFORM,
           *(a for f in tool.REQUIREMENT_FILES for a in ("-r", str(bundle / f)))]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "Would install" in run.stdout, run.stdout + run.stderr
    assert all(n.replace("-", "_").lower() in run.stdout.replace("-", "_").lower() for n in names)


def test_bundle_check_finds_a_missing_requirement_a_version_conflict_and_a_wrong_python(
    bundle, tmp_path, monkeypatch
):
    tool = _gpu_check()
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (iopath,) = broken.glob("iopath-*.whl")
    iopath.unlink()  # fvcore requires it
    (coco,) = broken.glob("pycocotools-*.whl")
    coco.rename(broken / "pycocotools-2.0.11-cp311-cp311-manylinux2014_x86_64.whl")
    problems = "\n".join(tool.check_bundle(str(broken)))
    assert "fvcore requires iopath>=0.1.7: not in the bundle nor on the GPU" in problems
    assert "requirements.txt names iopath but no wheel" in problems
    assert "pycocotools-2.0.11-cp311-cp311-manylinux2014_x86_64.whl: not installable" in problems
    # panopticapi-lite's metadata pins numpy < 2 (the GPU has 2.5.2): hence its --no-deps install
    monkeypatch.setattr(tool, "NO_DEPS", [])
    assert "panopticapi-lite requires numpy<2.0.0,>=1.23.5: has 2.5.2" in tool.check_bundle(
        str(bundle)
    )


def test_check_refuses_cleanly_without_cuda(tmp_path):
    output = tmp_path / "report.json"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    run = subprocess.run([sys.executable, TOOL, "--output", str(output)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 1 and "needs a CUDA GPU" in run.stderr
    assert "Traceback" not in run.stderr and not output.exists()


def test_check_steps_measure_a_tiny_detr_on_the_cpu():
    """The training and inference steps of the check, with train_net's Trainer and the real
    timing loops, on a tiny DETR and small generated images (the check runs them on CUDA)."""
    import torch
    from tiny import TINY_MODEL_OPTS  # tests/tiny.py

    from detr_d2.utils.testing import synthetic_inputs

    tool = _gpu_check()
    opts = [*TINY_MODEL_OPTS, "MODEL.DETR.NUM_CLASSES", "5", "MODEL.DETR.NUM_OBJECT_QUERIES", "7"]
    data = synthetic_inputs(64, 96, 2, 5, with_instances=True, boxes_per_image=tool.BOXES_PER_IMAGE)
    assert len(data[0]["instances"]) == tool.BOXES_PER_IMAGE
    train = tool.train_detr("float32", [data], "Base-DETR.yaml", opts, iters=3, warmup=1)
    assert train["images_per_s"] > 0 and train["peak_memory_mib"] is None
    assert torch.isfinite(torch.tensor(train["final_loss"])) and train["final_loss"] > 0
    paths = ("fp32_eager", "fast", "bf16")
    results = tool.inference("Base-DETR.yaml", paths, data, opts, iters=2, warmup=1, sizes=(1, 2))
    assert set(results) == set(paths) and results["fp32_eager"]["max_output_diff"] == 0
    assert all(r["batch_1"] > 0 and r["batch_2"] > 0 for r in results.values())
    assert results["fast"]["max_output_diff"] <= tool.TARGETS["fast_output_diff"][0]  # as on CUDA
    assert 0 < results["bf16"]["max_output_diff"] < 0.5  # bf16 ran: its outputs differ
