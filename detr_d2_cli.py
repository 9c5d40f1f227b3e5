"""The command line every entry point shares (train_net.py, demo.py, tools/*.py): one parser, one
flag vocabulary, one config and logging setup. Not in ``detr_d2`` (whose import takes torch and
detectron2, ~4 s), so that ``--help`` answers at once."""

import argparse
import logging
import os
import re
import sys
import warnings

# fvcore's torch.jit.script at import (via detectron2.layers): a harmless FutureWarning per process
warnings.filterwarnings("ignore", r"`torch.jit.script` is deprecated", FutureWarning)

REGISTER_COCO = "--register-coco"

# A dotted config key (MODEL.WEIGHTS): where the overrides start after a list option (--input a b)
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")

# One vocabulary: the same flag, name and meaning in every entry point ("output_dir": --output-dir)
FLAGS = {
    "output_dir": dict(metavar="DIR", help="folder for the results"),
    "output": dict(metavar="FILE", help="file for the result"),
    "num_images": dict(type=int, metavar="N", help="images to use"),
    "input_size": dict(type=int, nargs=2, metavar=("H", "W"), help="random images of this size"),
    "device": dict(help="cpu | cuda | cuda:N (default: MODEL.DEVICE); an error if CUDA is absent"),
    "log_period": dict(type=int, default=50, metavar="N", help="log every N"),
    "dataset": dict(help="registered dataset (default: DATASETS.TEST[0])"),
    "scale": dict(type=float, help="draw at this scale (default: small images upscaled to 512 px)"),
    "random_weights": dict(action="store_true", help="run without MODEL.WEIGHTS (a WARNING)"),
}


class ToolParser(argparse.ArgumentParser):
    """Flags before, between or after the "KEY VALUE" overrides; a list option's values end at the
    first config key that is no existing path (the overrides, up to the next flag)."""

    def parse_args(self, args=None, namespace=None):
        lists = {s for a in self._actions if a.nargs in ("+", "*") for s in a.option_strings}
        moved, kept, in_list, in_opts = [], [], False, False
        for token in list(sys.argv[1:] if args is None else args):
            if token.startswith("--"):
                in_list, in_opts = token in lists, False
            elif in_list and _CONFIG_KEY.match(token) and not os.path.exists(token):
                in_list, in_opts = False, True
            (moved if in_opts else kept).append(token)
        parsed = self.parse_intermixed_args(moved + kept, namespace)
        if len(getattr(parsed, "opts", None) or []) % 2:
            self.error(f"config overrides come as KEY VALUE pairs, got {parsed.opts}")
        return parsed


def argument_parser(doc=None, *, config=True, launch=False, default_config=None) -> ToolParser:
    """``config``: ``--config-file`` (required unless ``default_config``), ``--register-coco`` and
    the overrides ``opts``; ``launch``: the flags of Detectron2's ``default_argument_parser``."""
    parser = ToolParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if launch:
        parser.add_argument("--resume", action="store_true", help="from the last checkpoint")
        parser.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS only")
        parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine")
        parser.add_argument("--num-machines", type=int, default=1)
        parser.add_argument("--machine-rank", type=int, default=0, help="this machine's rank")
        # a port fixed per user, as Detectron2's, so an orphan process shows as a busy port
        port = 2**15 + 2**14 + hash(os.getuid() if sys.platform != "win32" else 1) % 2**14
        parser.add_argument("--dist-url", default=f"tcp://127.0.0.1:{port}")
    if config:
        parser.add_argument(
            "--config-file", required=default_config is None, default=default_config, metavar="FILE"
        )
        add_register_coco_argument(parser)
        parser.add_argument("opts", nargs="*", default=[], help="KEY VALUE overrides, anywhere")
    return parser


def add_register_coco_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The repeatable ``--register-coco NAME JSON IMAGE_ROOT`` (``args.register_coco``)."""
    text = "register a COCO-format dataset as NAME (for DATASETS.TRAIN / TEST); repeatable"
    metavar = ("NAME", "JSON", "IMAGE_ROOT")
    parser.add_argument(REGISTER_COCO, nargs=3, action="append", metavar=metavar, help=text)
    return parser


def add_flags(parser: argparse.ArgumentParser, *names: str, **overrides):
    """Add the shared flags ``names`` (keys of :data:`FLAGS`), with argparse settings of their
    own in ``overrides`` (``output=dict(required=True)``)."""
    for name in names:
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, **dict(FLAGS[name], **overrides.get(name, {})))
    return parser


def draw_scale(scale, height: int, width: int, size: int = 512) -> float:
    """``scale``, else one making the long side >= ``size`` px (readable labels at 128 px)."""
    return scale or max(1.0, size / max(height, width))


def setup_logging(output_dir=None, rank: int = 0, names=()) -> None:
    """The loggers detectron2, fvcore, detr_d2 and ``names`` to stdout (colour only on a
    terminal) and to ``output_dir``/log.txt if given."""
    from detectron2.utils.logger import setup_logger

    for name in ("detectron2", "fvcore", "detr_d2", *names):
        setup_logger(output_dir, distributed_rank=rank, color=sys.stdout.isatty(), name=name)


def setup_cfg(args: argparse.Namespace, *, training=False, device=None):
    """The frozen config of ``--config-file``, the overrides and the ``--register-coco`` sets
    (NUM_CLASSES -1: from their data). ``device`` (else ``args.device``) sets MODEL.DEVICE: CUDA
    asked for without CUDA is an error, a yaml's cuda falls back to the CPU. ``training``
    (train_net's flags): one training per OUTPUT_DIR, which gets Detectron2's ``default_setup``;
    a NUM_CLASSES contradicting the data is an error (else a warning); epochs become iterations."""
    import torch
    from detectron2.config import get_cfg
    from detectron2.utils import comm
    from detectron2.utils.collect_env import collect_env_info
    from detectron2.utils.env import seed_all_rng

    from detr_d2.config import add_detr_config, cap_num_workers, merge_config_file
    from detr_d2.data import register
    from detr_d2.engine.checks import resolve_num_classes
    from detr_d2.engine.output_dir import hold_output_dir, redirect_eval_output
    from detr_d2.solver import apply_epoch_schedule

    logger = logging.getLogger("detr_d2")
    cfg = merge_config_file(add_detr_config(get_cfg()), args.config_file)
    try:
        cfg.merge_from_list(list(args.opts))
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        raise ValueError(f"Invalid config option on the command line: {e}") from e
    if training:  # before registering: the json check and the class count go to the log file
        # before anything is written: an --eval-only beside a training gets a folder of its own
        message = redirect_eval_output(cfg, args.resume) if args.eval_only else None
        if not args.eval_only and comm.is_main_process():
            hold_output_dir(cfg.OUTPUT_DIR)
        # Detectron2's default_setup (log to OUTPUT_DIR, environment, seed) with our loggers
        rank = comm.get_rank()
        if cfg.OUTPUT_DIR:
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        setup_logging(cfg.OUTPUT_DIR or None, rank)
        d2_logger = logging.getLogger("detectron2")
        d2_logger.info(f"Rank {rank}. Environment info:\n{collect_env_info()}")
        d2_logger.info(f"Command line arguments: {args}")
        seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
        if not args.eval_only:
            torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
        if message:
            logger.warning(message)
    device = device or getattr(args, "device", None)
    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {device}, but CUDA is not available on this machine")
        cfg.MODEL.DEVICE = device
    elif cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(f"MODEL.DEVICE {cfg.MODEL.DEVICE}, but CUDA is not available: using the CPU")
        cfg.MODEL.DEVICE = "cpu"
    register.register_coco_from_args(args)  # in every process, before the datasets are used
    resolve_num_classes(cfg, args.opts, strict=training)  # -1: from the data; checked otherwise
    if training:
        apply_epoch_schedule(cfg)  # SOLVER.EPOCHS -> MAX_ITER / STEPS / the periods in epochs
        cap_num_workers(cfg)  # DATALOADER.NUM_WORKERS at most the CPU count
        if comm.is_main_process() and cfg.OUTPUT_DIR:  # the config the run uses, as Detectron2
            with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
                f.write(cfg.dump())
    cfg.freeze()
    return cfg
