"""The command line every entry point shares (detr_d2_cli.py): flags before or after the config
overrides, a --help that imports no torch, one flag vocabulary, and a quiet log (issue 15, items
1, 11 and 12)."""

import glob
import os
import subprocess
import sys

import pytest

import detr_d2_cli as cli

ROOT = os.path.join(os.path.dirname(__file__), "..")
ENTRY_POINTS = sorted(glob.glob(os.path.join(ROOT, "tools", "*.py"))) + [
    os.path.join(ROOT, name) for name in ("demo.py", "train_net.py")
]
ENV = dict(os.environ, PYTHONPATH=os.path.abspath(ROOT))


@pytest.mark.parametrize("path", ENTRY_POINTS, ids=os.path.basename)
def test_help_imports_no_torch(path):
    """--help answers before anything heavy is imported (it took 7-25 s with torch)."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", path, "--help"],
        capture_output=True, text=True, env=ENV, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0 and "usage:" in run.stdout, run.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if "|" in line}
    assert not {m for m in imported if m.split(".")[0] in ("torch", "detectron2", "numpy")}


def test_flags_before_and_after_the_overrides():
    parser = cli.argument_parser(launch=True)
    # the README's own-data evaluation command, which failed with "Override list has odd length"
    argv = ["--config-file", "c.yaml", "DATASETS.TEST", "('my_val',)", "MODEL.DETR.NUM_CLASSES"]
    argv += ["80", "--eval-only", "MODEL.WEIGHTS", "x.pth", "--num-gpus", "2"]
    args = parser.parse_args(argv)
    assert args.eval_only and args.num_gpus == 2 and args.config_file == "c.yaml"
    expected = ["DATASETS.TEST", "('my_val',)", "MODEL.DETR.NUM_CLASSES", "80", "MODEL.WEIGHTS"]
    assert args.opts == expected + ["x.pth"]
    with pytest.raises(SystemExit):  # an odd count is the parser's error, before any work
        parser.parse_args(["--config-file", "c.yaml", "MODEL.WEIGHTS"])


def test_a_list_option_does_not_swallow_the_overrides(tmp_path):
    parser = cli.argument_parser()
    parser.add_argument("--input", nargs="+")
    cli.add_flags(parser, "output_dir", "input_size")
    existing = tmp_path / "MODEL.PNG"  # a file named like a config key stays an input
    existing.write_text("")
    argv = ["--config-file", "c.yaml", "--input", "a.jpg", str(existing), "MODEL.WEIGHTS", "w.pth"]
    args = parser.parse_args(argv + ["--output-dir", "out", "--input-size", "64", "96"])
    assert args.input == ["a.jpg", str(existing)] and args.opts == ["MODEL.WEIGHTS", "w.pth"]
    assert args.output_dir == "out" and args.input_size == [64, 96]


def test_tool_subprocess_is_quiet_and_takes_flags_after_overrides(tmp_path):
    """A real run, output redirected: flags after the overrides, no ANSI colour codes and no
    `torch.jit.script is deprecated` (fvcore scripts its losses at import)."""
    config = os.path.join(ROOT, "configs", "quickstart", "detr_shapes.yaml")
    argv = [os.path.join(ROOT, "tools", "analyze_model.py"), "--config-file", config]
    argv += ["MODEL.DETR.NUM_OBJECT_QUERIES", "7", "--tasks", "parameter", "MODEL.DEVICE", "cpu"]
    argv += ["--output-dir", str(tmp_path)]
    run = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=ENV)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Total parameters" in run.stdout and (tmp_path / "analysis.json").is_file()
    assert "\x1b[" not in run.stdout + run.stderr
    assert "torch.jit.script" not in run.stderr
    # the random init is announced, not silent
    assert "WARNING: RANDOM WEIGHTS" in run.stdout


def test_setup_cfg_device_flag_needs_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = cli.argument_parser().parse_args(
        ["--config-file", os.path.join(ROOT, "configs", "quickstart", "detr_shapes.yaml")]
    )
    with pytest.raises(ValueError, match="--device cuda, but CUDA is not available"):
        cli.setup_cfg(args, device="cuda")
    assert cli.setup_cfg(args).MODEL.DEVICE == "cpu"  # the yaml's cuda falls back, with a warning
