#!/usr/bin/env python
"""COCO AP after each decoder layer, with and without NMS (DETR paper, Fig. 4).

    python tools/decoder_layer_study.py --config-file configs/detr_r50.yaml \\
        MODEL.WEIGHTS output/detr_r50/model_final.pth --output-dir output/detr_r50/layers
    python tools/decoder_layer_study.py --config-file configs/quickstart/detr_shapes.yaml \\
        --dataset shapes_val --num-images 100 MODEL.WEIGHTS model.pth

Each decoder layer's auxiliary predictions (and the last layer's, the model's output) are
evaluated as a detector of their own on the test dataset (``--dataset``, default
DATASETS.TEST[0]), once as predicted and once after per-class NMS at IoU 0.7. Writes
DIR/decoder_layers.json (AP, AP50, AP75, APs, APm, APl per layer and setting) and
DIR/decoder_layers.png (AP and AP50 per layer, with and without NMS). The paper finds the first
layers' predictions full of duplicates, which NMS removes (+AP), while the last layer has none left.
"""

# ruff: noqa: E402  (the command line is parsed before torch is imported: a fast --help)
import detr_d2_cli as cli

NMS_IOU = 0.7  # the paper's IoU threshold for the per-class NMS of Fig. 4
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
SETTINGS = ("without_nms", "with_nms")


def get_parser():
    parser = cli.argument_parser(__doc__)
    cli.add_flags(parser, "dataset", "num_images", "output_dir", "log_period", "random_weights")
    parser.set_defaults(num_images=0)  # all
    parser.add_argument("--nms-iou", type=float, default=NMS_IOU, help="IoU of the per-class NMS")
    return parser


ARGS = get_parser().parse_args() if __name__ == "__main__" else None

import json
import logging
import math
import os
from typing import Dict

import torch
from matplotlib.figure import Figure
from torchvision.ops import batched_nms

from detr_d2.engine.predictor import dataset_loader, load_model, with_progress
from detr_d2.evaluation import build_coco_evaluator
from detr_d2.modeling import Detr

logger = logging.getLogger("detr_d2.decoder_layer_study")


def apply_nms(instances, iou: float = NMS_IOU):
    """Per-class NMS at IoU ``iou`` of detectron2 Instances (pred_boxes, scores, pred_classes)."""
    keep = batched_nms(instances.pred_boxes.tensor, instances.scores, instances.pred_classes, iou)
    return instances[keep]


@torch.no_grad()
def evaluate_decoder_layers(model, cfg, dataset_name: str, num_images, nms_iou, log_period) -> Dict:
    """COCO box AP of each decoder layer's predictions on (the first ``num_images`` of) a
    dataset, as predicted and after per-class NMS at ``nms_iou``, one evaluator per layer and
    setting. Returns {"dataset", "num_images", "nms_iou", "layers": [1..L], "without_nms":
    {metric: [L values]}, "with_nms": {...}}, the metrics of :data:`METRICS` in percent."""
    if not hasattr(model, "forward_raw"):
        raise TypeError(f"{type(model).__name__} is not a DETR model (no forward_raw)")
    model.eval()
    loader, dicts = dataset_loader(cfg, dataset_name, num_images)
    num_layers = len(model.transformer.decoder.layers)
    keys = [(setting, layer) for setting in SETTINGS for layer in range(num_layers)]
    evaluators = {key: build_coco_evaluator(cfg, dataset_name) for key in keys}
    for evaluator in evaluators.values():
        evaluator.reset()
    for inputs in with_progress(loader, len(dicts), every=log_period, name="decoder-layer study"):
        images = model.preprocess_image(inputs)
        outputs = model.forward_raw(images)
        for layer, out in enumerate(outputs["aux_outputs"] + [outputs]):  # first layer first
            # as a box model's output (Detr's, also for a DetrPanoptic)
            results = Detr.postprocess(model, out, inputs, images)
            evaluators["without_nms", layer].process(inputs, results)
            nms = [{"instances": apply_nms(r["instances"], nms_iou)} for r in results]
            evaluators["with_nms", layer].process(inputs, nms)
    image_ids = [d["image_id"] for d in dicts]
    numbers = {setting: {m: [] for m in METRICS} for setting in SETTINGS}
    for (setting, layer), evaluator in evaluators.items():
        logger.info(f"Evaluating decoder layer {layer + 1}/{num_layers}, {setting} ...")
        # no "bbox" when there was no prediction at all
        bbox = (evaluator.evaluate(img_ids=image_ids) or {}).get("bbox", {})
        for m in METRICS:
            numbers[setting][m].append(float(bbox.get(m, float("nan"))))
    info = {"dataset": dataset_name, "num_images": len(dicts), "nms_iou": nms_iou}
    return dict(info, layers=list(range(1, num_layers + 1)), **numbers)


def plot_decoder_layers(results: Dict, output_path: str) -> None:
    """Fig. 4: AP and AP50 per setting over the decoder layers, saved to ``output_path``."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    layers = results["layers"]
    for metric, color in zip(("AP", "AP50"), ("tab:blue", "tab:orange")):
        for setting, style in zip(SETTINGS, ("-", "--")):
            label = metric + (f" NMS={results['nms_iou']}" if setting == "with_nms" else "")
            ax.plot(layers, results[setting][metric], style, color=color, marker="o", label=label)
    title = f"{results['dataset']}, {results['num_images']} images"
    ax.set(xlabel="decoder layer", ylabel="AP (%)", xticks=layers, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(output_path, dpi=100)


def main(args) -> Dict:
    """Runs the study; returns what the JSON holds."""
    cfg = cli.setup_cfg(args)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    output_dir = args.output_dir or os.path.join(cfg.OUTPUT_DIR, "decoder_layer_study")
    os.makedirs(output_dir, exist_ok=True)
    model = load_model(cfg, args.random_weights)
    results = evaluate_decoder_layers(
        model, cfg, dataset, args.num_images, args.nms_iou, args.log_period
    )
    results.update(config_file=args.config_file, weights=cfg.MODEL.WEIGHTS)
    json_path = os.path.join(output_dir, "decoder_layers.json")
    # COCO's NaN for a metric without ground truth (APl with no large object) as JSON null
    nan_to_null = {
        s: {m: [None if math.isnan(v) else v for v in values] for m, values in results[s].items()}
        for s in SETTINGS
    }
    with open(json_path, "w") as f:
        json.dump(dict(results, **nan_to_null), f, indent=2)
    plot_path = os.path.join(output_dir, "decoder_layers.png")
    plot_decoder_layers(results, plot_path)
    a, n = results["without_nms"], results["with_nms"]
    rows = [f"{'layer':>5} {'AP':>6} {'AP NMS':>7} {'AP50':>6} {'AP50 NMS':>9}"] + [
        f"{layer:>5} {a['AP'][i]:6.1f} {n['AP'][i]:7.1f} {a['AP50'][i]:6.1f} {n['AP50'][i]:9.1f}"
        for i, layer in enumerate(results["layers"])
    ]
    logger.info("AP per decoder layer:\n" + "\n".join(rows))
    logger.info(f"Wrote {json_path} and {plot_path}")
    return results


if __name__ == "__main__":
    cli.setup_logging()
    main(ARGS)
