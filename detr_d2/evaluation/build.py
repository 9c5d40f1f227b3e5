"""The evaluator ``train_net.py`` uses for a dataset, chosen by its metadata's evaluator_type."""

from detectron2.data import MetadataCatalog


def build_evaluator(cfg, dataset_name: str, output_folder: str):
    """ "coco" -> COCO box AP; "coco_panoptic_seg" -> PQ and COCO AP of the things."""
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type == "coco":
        from .coco_evaluation import build_coco_evaluator

        return build_coco_evaluator(cfg, dataset_name, output_folder)
    if evaluator_type == "coco_panoptic_seg":
        from .panoptic import build_panoptic_evaluators

        return build_panoptic_evaluators(cfg, dataset_name, output_folder)
    raise NotImplementedError(
        f"No evaluator for dataset {dataset_name!r} (evaluator_type={evaluator_type!r}); "
        "detr_d2 evaluates 'coco' and 'coco_panoptic_seg' datasets"
    )
