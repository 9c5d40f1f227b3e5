"""COCO AP of the predictions of every decoder layer, with and without NMS (paper Sec. 4.2,
Fig. 4).

DETR's auxiliary heads predict from each decoder layer's output ("aux_outputs", shared class and
box heads), so each layer is a detector of its own. The paper finds the first layers' predictions
full of duplicates, which NMS removes (+AP), while the last layer has none left to remove.
"""

import logging
from typing import Dict, List, Sequence

import torch
from detectron2.config import CfgNode
from detectron2.modeling import detector_postprocess
from matplotlib.figure import Figure
from torchvision.ops import batched_nms

from ..evaluation import build_coco_evaluator
from .predictor import dataset_loader, with_progress

__all__ = ["NMS_IOU", "METRICS", "apply_nms", "evaluate_decoder_layers", "plot_decoder_layers"]

logger = logging.getLogger(__name__)

NMS_IOU = 0.7  # the paper's IoU threshold for the per-class NMS of Fig. 4
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def apply_nms(instances, iou_threshold: float = NMS_IOU):
    """Per-class NMS of detectron2 Instances (pred_boxes, scores, pred_classes)."""
    keep = batched_nms(
        instances.pred_boxes.tensor, instances.scores, instances.pred_classes, iou_threshold
    )
    return instances[keep]


@torch.no_grad()
def evaluate_decoder_layers(
    model: torch.nn.Module,
    cfg: CfgNode,
    dataset_name: str,
    num_images: int = 0,
    nms_iou: float = NMS_IOU,
    log_every: int = 50,
) -> Dict:
    """COCO box AP of each decoder layer's predictions on (the first ``num_images`` of) a
    dataset, once as predicted and once after per-class NMS at ``nms_iou``.

    One COCO evaluator per layer and setting (``detr_d2.evaluation.build_coco_evaluator``,
    backend ``TEST.COCO_EVAL_BACKEND``), restricted to the images seen.

    Returns:
        {"dataset", "num_images", "nms_iou", "layers": [1..L],
         "without_nms": {metric: [L values]}, "with_nms": {metric: [L values]}}
        with the metrics of :data:`METRICS`, in percent.
    """
    if not hasattr(model, "forward_raw"):
        raise TypeError(f"{type(model).__name__} is not a DETR model (no forward_raw)")
    model.eval()
    loader, dicts = dataset_loader(cfg, dataset_name, num_images)
    num_layers = len(model.transformer.decoder.layers)
    settings = ("without_nms", "with_nms")
    evaluators = {
        s: [build_coco_evaluator(cfg, dataset_name) for _ in range(num_layers)] for s in settings
    }
    for e in (e for es in evaluators.values() for e in es):
        e.reset()
    for inputs in with_progress(loader, len(dicts), every=log_every, name="decoder-layer study"):
        images = model.preprocess_image(inputs)
        outputs = model.forward_raw(images)
        layers = outputs["aux_outputs"] + [outputs]  # first decoder layer first
        for layer, out in enumerate(layers):
            results = model.inference(out["pred_logits"], out["pred_boxes"], images.image_sizes)
            results = [
                detector_postprocess(r, x.get("height", size[0]), x.get("width", size[1]))
                for r, x, size in zip(results, inputs, images.image_sizes)
            ]
            evaluators["without_nms"][layer].process(inputs, [{"instances": r} for r in results])
            evaluators["with_nms"][layer].process(
                inputs, [{"instances": apply_nms(r, nms_iou)} for r in results]
            )
    image_ids = [d["image_id"] for d in dicts]
    numbers = {s: {m: [] for m in METRICS} for s in settings}
    for setting in settings:
        for layer, evaluator in enumerate(evaluators[setting], 1):
            logger.info(f"Evaluating decoder layer {layer}/{num_layers}, {setting} ...")
            # no "bbox" when there was no prediction at all
            bbox = (evaluator.evaluate(img_ids=image_ids) or {}).get("bbox", {})
            for m in METRICS:
                numbers[setting][m].append(float(bbox.get(m, float("nan"))))
    return {
        "dataset": dataset_name,
        "num_images": len(dicts),
        "nms_iou": nms_iou,
        "layers": list(range(1, num_layers + 1)),
        **numbers,
    }


def plot_decoder_layers(
    results: Dict, output_path: str, metrics: Sequence[str] = ("AP", "AP50")
) -> List[str]:
    """AP (and AP50) per decoder layer, each with and without NMS, as in the paper's Fig. 4:
    one line per metric and setting, saved to ``output_path``. Returns the line labels."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    layers = results["layers"]
    labels = []
    for metric, color in zip(metrics, ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        for setting, style in (("without_nms", "-"), ("with_nms", "--")):
            label = metric + (f" NMS={results['nms_iou']}" if setting == "with_nms" else "")
            ax.plot(layers, results[setting][metric], style, color=color, marker="o", label=label)
            labels.append(label)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("AP (%)")
    ax.set_xticks(layers)
    ax.set_title(f"{results['dataset']}, {results['num_images']} images")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(output_path, dpi=100)
    return labels
