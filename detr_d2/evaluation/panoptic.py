"""Evaluators of a panoptic dataset (evaluator_type "coco_panoptic_seg"): PQ and COCO AP in one
pass."""

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators

from .coco_evaluation import build_coco_evaluator
from .panoptic_backend import COCOPanopticEvaluatorWithBackend

__all__ = ["ThingInstancesOnly", "build_panoptic_evaluators", "things_metadata_name"]


class ThingInstancesOnly(DatasetEvaluator):
    """Passes to ``evaluator`` only the predicted instances of thing classes: COCO's instance
    annotations (and Detectron2's COCOEvaluator id mapping) know things only, while a DETR trained
    on panoptic boxes also predicts stuff."""

    def __init__(self, evaluator: DatasetEvaluator, thing_ids):
        self._evaluator = evaluator
        self._thing_ids = sorted(thing_ids)

    def reset(self):
        self._evaluator.reset()

    def process(self, inputs, outputs):
        filtered = []
        for output in outputs:
            if "instances" in output:
                inst = output["instances"]
                ids = inst.pred_classes.new_tensor(self._thing_ids)
                output = dict(output, instances=inst[(inst.pred_classes[:, None] == ids).any(1)])
            filtered.append(output)
        self._evaluator.process(inputs, filtered)

    def evaluate(self):
        return self._evaluator.evaluate()


def things_metadata_name(dataset_name: str) -> str:
    """Name of a metadata entry with the things of panoptic dataset ``dataset_name`` only, which
    Detectron2's COCOEvaluator needs (the "standard" panoptic metadata lists things and stuff in
    ``thing_classes``). Registered on first use; things must have contiguous ids 0..T-1 (they do
    in COCO panoptic and the shapes datasets: things come first)."""
    name = dataset_name + "_things"
    if name in MetadataCatalog.list():
        return name
    meta = MetadataCatalog.get(dataset_name)
    mapping = dict(meta.thing_dataset_id_to_contiguous_id)
    ids = sorted(mapping.values())
    if ids != list(range(len(ids))):
        raise ValueError(f"{dataset_name}: thing classes have contiguous ids {ids}, not 0..T-1")
    MetadataCatalog.get(name).set(
        json_file=meta.json_file,
        image_root=meta.get("image_root", ""),
        evaluator_type="coco",
        thing_classes=[meta.thing_classes[i] for i in ids],
        thing_dataset_id_to_contiguous_id=mapping,
    )
    return name


def build_panoptic_evaluators(cfg, dataset_name, output_folder=None) -> DatasetEvaluator:
    """PQ / SQ / RQ (all, things, stuff) with Detectron2's COCOPanopticEvaluator (PQ computed by
    TEST.PANOPTIC_EVAL_BACKEND), and COCO AP of
    the thing instances ("bbox", plus "segm" when MODEL.MASK_ON) on the dataset's instances json
    (metadata ``json_file``), in one inference pass. A box model trained on panoptic boxes
    (MODEL.MASK_ON False) produces no "panoptic_seg": it gets the COCO box AP only."""
    things = things_metadata_name(dataset_name)
    tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
    coco = ThingInstancesOnly(
        build_coco_evaluator(cfg, things, output_folder, tasks=tasks),
        MetadataCatalog.get(things).thing_dataset_id_to_contiguous_id.values(),
    )
    if not cfg.MODEL.MASK_ON:
        return coco
    panoptic = COCOPanopticEvaluatorWithBackend(
        dataset_name, output_folder, backend=cfg.TEST.PANOPTIC_EVAL_BACKEND
    )
    return DatasetEvaluators([panoptic, coco])
