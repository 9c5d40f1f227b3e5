"""The evaluators ``train_net.py`` uses for a dataset, chosen by its metadata's evaluator_type: COCO
box AP, or for a "coco_panoptic_seg" dataset PQ and COCO AP in one pass."""

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators

from .coco_evaluation import build_coco_evaluator
from .panoptic_backend import COCOPanopticEvaluatorWithBackend


def build_evaluator(cfg, dataset_name: str, output_folder: str):
    """ "coco" -> COCO box AP; "coco_panoptic_seg" -> PQ and COCO AP of the things."""
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    builders = {"coco": build_coco_evaluator, "coco_panoptic_seg": build_panoptic_evaluators}
    if evaluator_type not in builders:
        raise NotImplementedError(
            f"No evaluator for dataset {dataset_name!r} (evaluator_type={evaluator_type!r}); "
            "detr_d2 evaluates 'coco' and 'coco_panoptic_seg' datasets"
        )
    return builders[evaluator_type](cfg, dataset_name, output_folder)


def things_metadata_name(dataset_name: str) -> str:
    """Name of a metadata entry (registered on first use) with the things of ``dataset_name``
    only, for COCOEvaluator ("standard" panoptic metadata lists stuff in ``thing_classes`` too);
    things must have contiguous ids 0..T-1 (as in COCO panoptic and shapes)."""
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
    """PQ (TEST.PANOPTIC_EVAL_BACKEND) and COCO AP of the thing instances ("bbox", plus "segm")
    on the metadata's ``json_file``, in one pass; with MODEL.MASK_ON False (a box model, no
    "panoptic_seg") the box AP only. COCO's instance annotations know things only, while a DETR
    trained on panoptic boxes also predicts stuff: those instances are left out."""
    tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
    things = things_metadata_name(dataset_name)
    coco = build_coco_evaluator(cfg, things, output_folder, tasks=tasks, known_only=True)
    if not cfg.MODEL.MASK_ON:
        return coco
    panoptic = COCOPanopticEvaluatorWithBackend(
        dataset_name, output_folder, backend=cfg.TEST.PANOPTIC_EVAL_BACKEND
    )
    return DatasetEvaluators([panoptic, coco])
