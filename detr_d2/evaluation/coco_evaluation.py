"""Detectron2's COCOEvaluator with a choice of COCOeval implementation (``TEST.COCO_EVAL_BACKEND``):
pycocotools (about 90 s for 5,000 images x 100 detections), or hotcoco (Rust) and faster_coco_eval
(C++): the same stats and precision array, faster. And train_net's evaluators, by the dataset's
evaluator_type: COCO box AP, or for "coco_panoptic_seg" PQ and COCO AP in one pass."""

import contextlib
import io
import logging
import warnings
from functools import partial

import detectron2.evaluation.coco_evaluation as d2_coco_evaluation
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from ..data.dataset_checks import pop_skipped_image_ids
from ..data.json_check import ground_truth_without_malformed_boxes
from .panoptic_backend import COCOPanopticEvaluatorWithBackend

logger = logging.getLogger(__name__)

COCO_EVAL_BACKENDS = ("pycocotools", "faster_coco_eval", "hotcoco")

# detectron2's own function, which the evaluator swaps out while it evaluates (see below).
_d2_evaluate_predictions_on_coco = d2_coco_evaluation._evaluate_predictions_on_coco


def has_compiled_cocoeval():
    """Whether detectron2's compiled COCOeval ops (``use_fast_impl=True``) exist: False for a
    Python-only detectron2, whose ``_C`` is a stand-in whose ops raise."""
    try:
        from detectron2 import _C
    except ImportError:
        return False
    return not getattr(_C, "IS_STANDIN", False) and hasattr(_C, "COCOevalAccumulate")


def _check_backend(backend):
    if backend not in COCO_EVAL_BACKENDS:
        raise ValueError(f"TEST.COCO_EVAL_BACKEND {backend!r} is not one of {COCO_EVAL_BACKENDS}")


def _backend_classes(backend):
    """(COCO, COCOeval) of ``backend``."""
    _check_backend(backend)
    if backend == "pycocotools":
        from pycocotools import coco, cocoeval

        return coco.COCO, cocoeval.COCOeval
    if backend == "hotcoco":
        import hotcoco

        return hotcoco.COCO, hotcoco.COCOeval
    import faster_coco_eval

    return faster_coco_eval.COCO, partial(faster_coco_eval.COCOeval_faster, print_function=print)


def load_coco_gt(json_file, backend):
    coco_cls = _backend_classes(backend)[0]
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_cls(json_file)


def evaluate_predictions_on_coco(
    coco_gt, coco_results, iou_type, *, backend, img_ids=None, max_dets_per_image=None
):
    """Run COCOeval of ``backend`` on ``coco_gt`` (from :func:`load_coco_gt`, same backend) as
    detectron2's ``_evaluate_predictions_on_coco`` runs pycocotools' (``use_fast_impl=False``).
    ``coco_results`` (COCO-format dicts) are left unchanged; ``max_dets_per_image``: maxDets
    [1, 10, N], AP at N (None: [1, 10, 100]). Returns the COCOeval object: ``stats`` (12 numbers),
    ``eval["precision"]`` (iou threshold x recall x category x area range x max dets)."""
    assert iou_type in ("bbox", "segm"), iou_type
    max_dets = list(max_dets_per_image or [1, 10, 100])
    assert len(max_dets) >= 3, "COCOeval needs maxDets [1, 10, N] or longer"
    if iou_type == "segm":
        # as detectron2 does: without "bbox" the instance area is the mask area, not the box area
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in coco_results]
    elif backend == "hotcoco":
        results = coco_results  # it copies what it reads
    else:
        results = [dict(r) for r in coco_results]  # loadRes adds keys ("id", "area") to them
    cocoeval_cls = _backend_classes(backend)[1]
    if backend == "pycocotools" and max_dets[2] != 100:
        # pycocotools' summarize() reads AP at 100 detections whatever maxDets says
        cocoeval_cls = d2_coco_evaluation.COCOevalMaxDets
    coco_eval = cocoeval_cls(coco_gt, coco_gt.loadRes(results), iou_type)
    coco_eval.params.maxDets = max_dets
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    with warnings.catch_warnings():
        # hotcoco warns for maxDets other than [1, 10, 100], then summarizes AP and AR@N at
        # maxDets[2] exactly as detectron2's COCOevalMaxDets does (checked in the tests)
        warnings.filterwarnings("ignore", message="hotcoco: max_dets differ")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


class COCOEvaluatorWithBackend(COCOEvaluator):
    """:class:`detectron2.evaluation.COCOEvaluator` whose bbox and segm COCOeval runs on
    ``backend`` (one of :data:`COCO_EVAL_BACKENDS`; "pycocotools" is detectron2's own path).
    Keypoints always go to detectron2's path. The ground truth leaves out the boxes training
    drops as malformed (they crash COCOeval); images left out as unreadable are not evaluated."""

    def __init__(
        self, dataset_name, *args, backend="pycocotools", use_fast_impl=None, known_only=False, **kw
    ):
        """use_fast_impl: detectron2's compiled COCOeval_opt for its own path; None: when it is
        compiled; known_only: leave out predicted instances of a class the dataset lacks
        (>= len(thing_classes)). Others as in :class:`detectron2.evaluation.COCOEvaluator`."""
        _check_backend(backend)
        use_fast_impl = has_compiled_cocoeval() if use_fast_impl is None else use_fast_impl
        super().__init__(dataset_name, *args, use_fast_impl=use_fast_impl, **kw)
        self._backend, self._known_only = backend, known_only
        self._backend_coco_gt = None  # the backend's copy of the ground truth, loaded on first use
        json_file = PathManager.get_local_path(self._metadata.json_file)
        # the json COCOEvaluator has just loaded (pycocotools keeps it as read): not read again
        self._gt_json = ground_truth_without_malformed_boxes(json_file, self._coco_api.dataset)
        if self._gt_json != json_file:
            self._coco_api = load_coco_gt(self._gt_json, "pycocotools")

    def process(self, inputs, outputs):
        if self._known_only:
            num_classes = len(self._metadata.thing_classes)
            outputs = [dict(o) for o in outputs]
            for o in outputs:
                if "instances" in o:
                    o["instances"] = o["instances"][o["instances"].pred_classes < num_classes]
        super().process(inputs, outputs)

    def evaluate(self, img_ids=None):
        # on every rank (all_gather): the images WithoutSkipped left out of this evaluation
        skipped = set().union(*comm.all_gather(pop_skipped_image_ids()))
        if skipped and img_ids is None:
            img_ids = [i for i in self._coco_api.getImgIds() if i not in skipped]
            logger.warning(
                f"Evaluating the {len(img_ids)} images that were read, of "
                f"{len(img_ids) + len(skipped)} in the ground truth"
            )
        return super().evaluate(img_ids)

    def _eval_predictions(self, predictions, img_ids=None):
        if self._backend == "pycocotools":
            return super()._eval_predictions(predictions, img_ids=img_ids)
        # detectron2 calls the module-level _evaluate_predictions_on_coco from this method; swap
        # it for ours during the call so all around it stays detectron2's. (Evaluation runs in
        # one thread of the main process, so no other evaluator sees the swap.)
        d2_coco_evaluation._evaluate_predictions_on_coco = self._evaluate_predictions_on_coco
        try:
            return super()._eval_predictions(predictions, img_ids=img_ids)
        finally:
            d2_coco_evaluation._evaluate_predictions_on_coco = _d2_evaluate_predictions_on_coco

    def _evaluate_predictions_on_coco(self, coco_gt, coco_results, iou_type, **kwargs):
        # detectron2's use_fast_impl / cocoeval_fn arguments reach only detectron2's own path
        if iou_type == "keypoints":
            return _d2_evaluate_predictions_on_coco(coco_gt, coco_results, iou_type, **kwargs)
        if self._backend_coco_gt is None:
            self._backend_coco_gt = load_coco_gt(self._gt_json, self._backend)
        self._logger.info(f"Evaluating {iou_type} with {self._backend} ...")
        limits = {k: kwargs.get(k) for k in ("img_ids", "max_dets_per_image")}
        gt, backend = self._backend_coco_gt, self._backend
        return evaluate_predictions_on_coco(gt, coco_results, iou_type, backend=backend, **limits)


def build_coco_evaluator(cfg, dataset_name, output_dir=None, tasks=None, **kwargs):
    """The evaluator ``train_net.py`` builds: a :class:`COCOEvaluatorWithBackend` for
    ``dataset_name`` on ``cfg.TEST.COCO_EVAL_BACKEND``, with COCO's standard 100 detections."""
    return COCOEvaluatorWithBackend(
        dataset_name, tasks, output_dir=output_dir, backend=cfg.TEST.COCO_EVAL_BACKEND, **kwargs
    )


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
