#!/usr/bin/env python
"""Build and install a Python-only detectron2 v0.6 from the registry sdist ``pb1-detectron2==0.6``
(official detectron2 is not on the package index; this sdist has the Python sources and model-zoo
configs but not ``layers/csrc``): sha256 checked, exact source edits for today's Pillow / NumPy /
setuptools / PyTorch (one that does not apply the expected number of times stops the build), a
stand-in ``detectron2/_C`` whose compiled-only ops raise a clear error (docs/setup.md). A
detectron2 that is not this build is kept; re-running after a build is a no-op.
"""

import argparse
import hashlib
import importlib.util
import pprint
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
# Marker written into the installed package so a re-run recognises its own build.
BUILD_TAG = "detr_d2-python-only-build-1"
PIP = [sys.executable, "-m", "pip"]

# Runtime dependencies of detectron2 v0.6, without its dead or broken pins (black==21.4b2, future,
# pydot are only used by caffe2 export / code formatting).
RUNTIME_REQUIRES = [
    "Pillow>=7.1", "matplotlib", "pycocotools>=2.0.2", "termcolor>=1.1", "yacs>=0.1.8", "tabulate",
    "cloudpickle", "tqdm>4.29.0", "tensorboard", "fvcore>=0.1.5,<0.1.6", "iopath>=0.1.7,<0.1.10",
    "omegaconf>=2.1", "hydra-core>=1.1",
]  # fmt: skip

# (file, old, new): exact edits, each found exactly once (else the build stops).
EDITS = [
    # Pillow 10 removed Image.LINEAR; without this `import detectron2.data` fails.
    ("detectron2/data/transforms/transform.py", "Image.LINEAR", "Image.BILINEAR"),
    # setuptools >= 82 has no pkg_resources: resolve model-zoo configs relative to the package.
    ("detectron2/model_zoo/model_zoo.py", "import pkg_resources\n", ""),
    ("detectron2/model_zoo/model_zoo.py",
     'cfg_file = pkg_resources.resource_filename(\n        "detectron2.model_zoo", '
     'os.path.join("configs", config_path)\n    )',
     'cfg_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_path)'),
    # caffe2 is gone from torch 2.x; keep TracingAdapter & co importable (used by FLOP counting).
    ("detectron2/export/__init__.py", "from .api import *\n",
     "try:\n    from .api import *  # caffe2 export, needs torch with caffe2\n"
     "except ImportError:  # torch >= 2 has no caffe2: the caffe2 exporter is unavailable\n"
     "    pass\n"),
    # launch(): CPU processes use GLOO instead of asserting CUDA / hard-coding NCCL.
    ("detectron2/engine/launch.py",
     '    assert torch.cuda.is_available(), "cuda is not available. Please check your installation."\n',
     "    has_gpu = torch.cuda.is_available()\n"),
    ("detectron2/engine/launch.py", 'backend="NCCL",', 'backend="NCCL" if has_gpu else "GLOO",'),
    ("detectron2/engine/launch.py",
     "    assert num_gpus_per_machine <= torch.cuda.device_count()\n"
     "    torch.cuda.set_device(local_rank)\n",
     "    if has_gpu:\n"
     "        assert num_gpus_per_machine <= torch.cuda.device_count()\n"
     "        torch.cuda.set_device(local_rank)\n"),
    # DDP of a CPU module must not get device_ids.
    ("detectron2/engine/defaults.py", '    if "device_ids" not in kwargs:\n',
     '    if "device_ids" not in kwargs and torch.cuda.is_available():\n'),
]  # fmt: skip

# NumPy 1.24 removed the aliases np.int/float/bool/str/object: (file, expected count).
NUMPY_ALIAS_FILES = {
    "detectron2/data/build.py": 2, "detectron2/data/datasets/pascal_voc.py": 1,
    "detectron2/evaluation/pascal_voc_evaluation.py": 2,
    "detectron2/evaluation/sem_seg_evaluation.py": 7, "detectron2/structures/masks.py": 3,
    "detectron2/utils/visualizer.py": 3, "detectron2/utils/video_visualizer.py": 1,
}  # fmt: skip
NUMPY_ALIAS = re.compile(r"\bnp\.(int|float|bool|str|object)\b(?![0-9_])")  # -> the builtin

# The stand-in detectron2/_C: the compiled-only ops (with the alternative each names) raise.
COMPILED_ONLY = {
    "rotated boxes are not supported in this build": [
        "box_iou_rotated", "roi_align_rotated_forward", "roi_align_rotated_backward"],
    "deformable convolution: use torchvision.ops.deform_conv2d": [
        "deform_conv_forward", "deform_conv_backward_input", "deform_conv_backward_filter",
        "modulated_deform_conv_forward", "modulated_deform_conv_backward"],
    "fast COCOeval: build COCOEvaluator with use_fast_impl=False": [
        "InstanceAnnotation", "COCOevalEvaluateImages", "COCOevalAccumulate"],
}  # fmt: skip
ALTERNATIVES = {op: why for why, ops in COMPILED_ONLY.items() for op in ops}
STANDIN_C = f'''"""Stand-in for detectron2's compiled extension (the sdist has no C++ sources)."""

IS_STANDIN = True
_ALTERNATIVES = {pprint.pformat(ALTERNATIVES, width=100)}


def _unavailable(name):
    def op(*args, **kwargs):
        raise NotImplementedError(
            f"detectron2._C.{{name}} is a compiled op, and this detectron2 is a Python-only build "
            f"(dev/build_detectron2.py); {{_ALTERNATIVES[name]}}. Build detectron2 from source "
            "for the compiled ops."
        )

    op.__name__ = name
    return op


for _name in _ALTERNATIVES:
    globals()[_name] = _unavailable(_name)
get_compiler_version = get_cuda_version = lambda: "none (python-only build)"  # noqa: E731
has_cuda = lambda: False  # noqa: E731
'''

SETUP_PY = f"""from setuptools import find_packages, setup

setup(
    name="detectron2",
    version="{SDIST_VERSION}",
    description="detectron2 v0.6, Python-only build (dev/build_detectron2.py of detr_d2)",
    packages=find_packages(include=["detectron2", "detectron2.*"]),
    package_data={{"detectron2.model_zoo": ["configs/**/*.yaml", "configs/*.yaml", "configs/**/*.py"],
                  "detectron2": ["BUILD_TAG"]}},
    python_requires=">=3.7",
    install_requires={RUNTIME_REQUIRES!r},
)
"""


def log(msg):
    print(f"[build_detectron2] {msg}", flush=True)


def installed_detectron2():
    """(importable, is_ours) of the detectron2 visible to this interpreter."""
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        return False, False
    tag = Path(list(spec.submodule_search_locations)[0]) / "BUILD_TAG"
    return True, tag.exists() and tag.read_text().strip() == BUILD_TAG


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()  # a 0.5 MB file


def download_sdist(cache_dir: Path) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
    if not (target.exists() and sha256(target) == SDIST_SHA256):
        log(f"downloading {SDIST_NAME}=={SDIST_VERSION} with pip")
        # --no-build-isolation: pip prepares the sdist's metadata, whose setup.py imports torch.
        pip = [*PIP, "download", "--no-deps", "--no-build-isolation", "--no-binary", ":all:"]
        subprocess.check_call([*pip, "-q", "-d", str(cache_dir), f"{SDIST_NAME}=={SDIST_VERSION}"])
    digest = sha256(target)
    if digest != SDIST_SHA256:
        raise SystemExit(f"sha256 mismatch for {target}: got {digest}, expected {SDIST_SHA256}")
    log(f"sdist {target} sha256 ok")
    return target


def patch_tree(root: Path):
    for rel, old, new in EDITS:
        text = (root / rel).read_text()
        if text.count(old) != 1:
            raise SystemExit(f"edit no longer applies to {rel}: {old!r} found {text.count(old)}x")
        (root / rel).write_text(text.replace(old, new))
    for rel, count in NUMPY_ALIAS_FILES.items():
        text = (root / rel).read_text()
        # hits in comments count too: the expected counts were read off v0.6
        if (found := len(NUMPY_ALIAS.findall(text))) != count:
            raise SystemExit(f"numpy alias edit: {rel} has {found} hits, expected {count}")
        (root / rel).write_text(NUMPY_ALIAS.sub(r"\1", text))
    if left := [p for p in root.glob("detectron2/**/*.py") if NUMPY_ALIAS.search(p.read_text())]:
        raise SystemExit(f"numpy aliases left in: {[str(p.relative_to(root)) for p in left]}")
    (root / "detectron2" / "_C.py").write_text(STANDIN_C)
    (root / "detectron2" / "BUILD_TAG").write_text(BUILD_TAG + "\n")
    (root / "setup.py").write_text(SETUP_PY)
    for extra in ("setup.cfg", "pyproject.toml"):
        (root / extra).unlink(missing_ok=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", default=".cache/detectron2", help="where the sdist is kept")
    parser.add_argument("--force", action="store_true", help="rebuild even if already installed")
    parser.add_argument("--wheel-dir", help="write a wheel into this folder instead of installing")
    args = parser.parse_args()

    importable, ours = installed_detectron2()
    if importable and not (args.force or args.wheel_dir):
        kept = "a detectron2 that is not this build is importable; keeping it"
        log("detectron2 (python-only build) already installed" if ours else kept)
        return

    sdist = download_sdist(Path(args.cache_dir))
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(sdist) as tar:
        tar.extractall(tmp, filter="data")
        root = Path(tmp) / f"{SDIST_NAME}-{SDIST_VERSION}"
        shutil.rmtree(root / "pb1_detectron2.egg-info", ignore_errors=True)
        patch_tree(root)
        if args.wheel_dir:
            log(f"writing a detectron2 (python-only) wheel to {args.wheel_dir}")
            pip = [*PIP, "wheel", "--no-deps", "-w", args.wheel_dir]
        else:
            log("installing detectron2 (python-only)")
            pip = [*PIP, "install"]
        subprocess.check_call([*pip, "-q", "--no-build-isolation", str(root)])
    log("done")


if __name__ == "__main__":
    main()
