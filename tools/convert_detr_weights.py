#!/usr/bin/env python
"""Convert an official DETR checkpoint (facebookresearch/detr model zoo) into a detr_d2 checkpoint.

    python tools/convert_detr_weights.py --input detr-r50-e632da11.pth --output detr_r50.pth \\
        --config-file configs/detr_r50.yaml

Panoptic checkpoints are detected from their keys (``--panoptic`` only asserts it); the class
head is re-indexed from COCO category ids to contiguous ids. It fails, listing the keys, unless
every target key is filled once and every source key used (dropped, and reported:
``num_batches_tracked``, unused class rows) and, with ``--config-file``, the keys and shapes are
those of the model the config builds.

Self-check (needs ``--config-file``): ``--verify-image IMG --verify-outputs REF.pt`` runs our
model in eval mode on the unresized IMG and reports the largest absolute difference to REF.pt,
``{"pred_logits": (1, N, 92 or 251), "pred_boxes": (1, N, 4)}`` of the official model::

    img = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])(
        Image.open(IMG).convert("RGB"))
    out = model.eval()(img[None])
    torch.save({"pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"]}, "REF.pt")
"""

# ruff: noqa: E402  (the command line is parsed before torch is imported: a fast --help)
import detr_d2_cli as cli


def get_parser():
    parser = cli.argument_parser(__doc__, default_config="")
    parser.add_argument("--input", required=True, help="official DETR checkpoint (.pth)")
    cli.add_flags(parser, "output", output=dict(required=True, help="detr_d2 checkpoint (.pth)"))
    parser.add_argument("--panoptic", action="store_true", help="fail unless the input is panoptic")
    parser.add_argument("--verify-image", default="", help="image for the output self-check")
    parser.add_argument("--verify-outputs", default="", help=".pt of the official outputs on it")
    parser.add_argument("--verify-tolerance", type=float, help="fail above it (default: report)")
    return parser


ARGS = get_parser().parse_args() if __name__ == "__main__" else None

import logging
import sys

import torch
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model

from detr_d2.checkpoint.detr_official import CheckpointConversionError, check_against_model
from detr_d2.checkpoint.detr_official import convert_official_detr, load_official_checkpoint
from detr_d2.checkpoint.safe_load import UnsafeCheckpointError, load_checkpoint_safely
from detr_d2.engine.checkpoint import DetrCheckpointer

logger = logging.getLogger("convert_detr_weights")
AUTHOR = "DETR official, converted by detr_d2"


def convert(input_path: str, output_path: str, *, expect_panoptic=False, model=None):
    """Read ``input_path`` safely, convert, check against ``model`` (if given), write
    ``output_path``; returns the ``ConvertedDetr``. Raises ``CheckpointConversionError`` /
    ``UnsafeCheckpointError``."""
    state_dict, args, others = load_official_checkpoint(input_path)
    if others:
        logger.info("ignoring checkpoint entries other than 'model'/'args': %s", ", ".join(others))
    if args is None:
        logger.warning("no 'args' in %s: architecture inferred from the keys alone", input_path)
    result = convert_official_detr(state_dict, args)
    if expect_panoptic and not result.spec.panoptic:
        raise CheckpointConversionError(f"--panoptic given, but {input_path} has no mask head")
    if model is not None:
        check_against_model(result.model, model.state_dict())
    kind = "panoptic" if result.spec.panoptic else "detection"
    logger.info("%s checkpoint: %s", kind, result.spec)
    logger.info("class head re-indexed: our row i is official row %s", result.class_rows)
    if result.dropped:
        logger.info("dropped on purpose: %s", ", ".join(result.dropped))
    checkpoint = {"model": result.model, "__author__": AUTHOR, "matching_heuristics": False}
    torch.save(checkpoint, output_path)
    logger.info("wrote %d tensors to %s", len(result.model), output_path)
    return result


@torch.no_grad()
def verify(model, weights: str, image_path: str, reference_path: str, class_rows, input_format):
    """Largest absolute differences of our eval outputs on one unresized image to the official
    ones: {"pred_logits": ..., "pred_boxes": ...}."""
    DetrCheckpointer(model.eval()).load(weights)
    image = torch.as_tensor(read_image(image_path, format=input_format).copy()).permute(2, 0, 1)
    ours = model.forward_raw(model.preprocess_image([{"image": image}]))
    reference = load_checkpoint_safely(reference_path)
    n, rows = reference["pred_logits"].shape[-1], max(class_rows) + 1
    if n < rows:
        raise ValueError(f"reference logits have {n} classes; the checkpoint had {rows}")
    reference["pred_logits"] = reference["pred_logits"][..., class_rows]  # as the weights' rows
    diffs = {}
    for name in ("pred_logits", "pred_boxes"):
        got, expected = ours[name].float().cpu(), reference[name].float()
        if got.shape != expected.shape:
            raise ValueError(f"{name}: ours {tuple(got.shape)}, reference {tuple(expected.shape)}")
        diffs[name] = (got - expected).abs().max().item()
    return diffs


def main(argv=None) -> int:
    parser = get_parser()
    args = ARGS if argv is None else parser.parse_args(argv)
    if bool(args.verify_image) != bool(args.verify_outputs):
        parser.error("--verify-image and --verify-outputs go together")
    if args.verify_image and not args.config_file:
        parser.error("--verify-image needs --config-file to build the model")
    # the model training builds (MODEL.DEVICE cpu for a machine without CUDA: a warning)
    cfg = cli.setup_cfg(args) if args.config_file else None
    model = build_model(cfg) if cfg is not None else None
    try:
        result = convert(args.input, args.output, expect_panoptic=args.panoptic, model=model)
    except (CheckpointConversionError, UnsafeCheckpointError) as e:
        logger.error("conversion failed: %s", e)
        return 1
    if not args.verify_image:
        return 0
    paths = (args.output, args.verify_image, args.verify_outputs)
    diffs = verify(model, *paths, result.class_rows, cfg.INPUT.FORMAT)
    for name, diff in diffs.items():
        logger.info("self-check: max |ours - official| of %s = %.3g", name, diff)
    if args.verify_tolerance is not None and max(diffs.values()) > args.verify_tolerance:
        logger.error("self-check failed: difference above %g", args.verify_tolerance)
        return 1
    return 0


if __name__ == "__main__":
    cli.setup_logging(names=[logger.name])
    sys.exit(main())
