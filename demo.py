#!/usr/bin/env python
"""Detections (or panoptic segmentation) of a DETR or detectron2 model drawn on images or a video.

    python demo.py --config-file configs/detr_r50.yaml --input a.jpg b.jpg \\
        --output-dir out/ MODEL.WEIGHTS output/detr_r50/model_final.pth
    python demo.py --config-file configs/detr_r50.yaml --input images/ --output-dir out/ \\
        --confidence-threshold 0.7 MODEL.WEIGHTS model.pth
    python demo.py --config-file configs/detr_r50.yaml --video-input clip.mp4 \\
        --output out/clip.mp4 MODEL.WEIGHTS model.pth

``--output-dir`` (default OUTPUT_DIR/demo) gets the drawings under the inputs' names, ``--output``
is one file (a single image, or a video: .mp4, .avi). Class names: DATASETS.TEST[0]'s (own data:
``--register-coco NAME JSON IMAGE_ROOT DATASETS.TEST "('NAME',)"``). Panoptic models:
``--confidence-threshold`` sets MODEL.DETR.PANOPTIC_CONF_THRESH. MODEL.WEIGHTS is required (or
``--random-weights``).
"""

# ruff: noqa: E402  (the command line is parsed before torch is imported: a fast --help)
import detr_d2_cli as cli


def get_parser():
    parser = cli.argument_parser(__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="IMAGE", help="images, globs, folders")
    source.add_argument("--video-input", metavar="VIDEO", help="a video file")
    cli.add_flags(parser, "output_dir", "output", "scale", "log_period", "random_weights")
    threshold = "draw instances scoring >= this (default 0.5); panoptic: keep queries above it"
    parser.add_argument("--confidence-threshold", type=float, help=threshold)
    return parser


ARGS = get_parser().parse_args() if __name__ == "__main__" else None

import glob
import logging
import os
import time
from typing import Dict, List, Sequence

import cv2
import numpy as np
from detectron2.data.detection_utils import read_image
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, Visualizer

from detr_d2.engine.predictor import Predictor, load_model, with_progress

logger = logging.getLogger("detr_d2.demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}  # available in opencv's own (headless) builds


def list_images(inputs: Sequence[str]) -> List[str]:
    """Image paths from files, glob patterns and folders, in the order given."""
    paths = []
    for item in inputs:
        item = os.path.expanduser(item)
        if os.path.isdir(item):
            names = sorted(os.listdir(item))
            paths += [os.path.join(item, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(item):
            paths.append(item)
        elif glob.has_magic(item):
            paths += sorted(glob.glob(item))
        else:
            raise FileNotFoundError(f"No such image, folder or pattern: {item}")
    if not paths:
        raise FileNotFoundError(f"No images in {list(inputs)}")
    return paths


def output_file(output: str, input_path: str, single_file: bool, extension=None) -> str:
    """``output`` itself (``single_file``), else the input's name (its extension replaced by
    ``extension`` if given) in the folder ``output``. Creates the folder."""
    if not single_file:
        name = os.path.basename(input_path)
        output = os.path.join(output, os.path.splitext(name)[0] + extension if extension else name)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    return output


def draw(predictions: Dict, image_rgb, metadata, threshold: float, video_visualizer=None, scale=1):
    """The RGB image with its panoptic segments, else its instances scoring >= ``threshold``:
    (H*scale, W*scale, 3) uint8 RGB (video frames: (H, W, 3))."""
    panoptic = "panoptic_seg" in predictions
    if panoptic:
        segments, info = predictions["panoptic_seg"]
        drawn = (segments.cpu(), info)
    else:
        instances = predictions["instances"].to("cpu")
        drawn = (instances[instances.scores >= threshold],)
    if video_visualizer is not None:
        method = "draw_panoptic_seg_predictions" if panoptic else "draw_instance_predictions"
        return getattr(video_visualizer, method)(image_rgb, *drawn).get_image()
    vis = Visualizer(image_rgb, metadata, scale, instance_mode=ColorMode.IMAGE)
    method = vis.draw_panoptic_seg if panoptic else vis.draw_instance_predictions
    return method(*drawn).get_image()


def _summary(predictions: Dict, threshold: float) -> str:
    """What was drawn; with nothing drawn, a hint naming the threshold."""
    if "panoptic_seg" in predictions:
        n, what = len(predictions["panoptic_seg"][1]), "segments"
    else:
        n = int((predictions["instances"].scores >= threshold).sum())
        what = f"detections >= {threshold}"
    hint = f" (no query scored above {threshold}: try a lower --confidence-threshold)"
    return f"{n} {what}" + (hint if n == 0 else "")


def run_on_images(
    predictor: Predictor, paths: List[str], output: str, threshold: float, scale=None
) -> List[str]:
    """Draws the images at ``scale`` into ``output`` (a folder, or one image's file): the paths."""
    single_file = output.lower().endswith(IMAGE_EXTENSIONS)
    if len(paths) > 1 and single_file:
        raise ValueError(f"--output {output} is one image file but there are {len(paths)} inputs")
    written = []
    for i, path in enumerate(paths, 1):
        image = read_image(path, format="BGR")
        start = time.perf_counter()
        predictions = predictor(image)
        seconds = time.perf_counter() - start
        s = cli.draw_scale(scale, *image.shape[:2])
        drawn = draw(predictions, image[:, :, ::-1], predictor.metadata, threshold, scale=s)
        target = output_file(output, path, single_file)
        if not cv2.imwrite(target, drawn[:, :, ::-1]):
            raise OSError(f"Could not write {target}")
        written.append(target)
        summary = _summary(predictions, threshold)
        logger.info(f"[{i}/{len(paths)}] {path}: {summary} in {seconds:.2f} s -> {target}")
    return written


def run_on_video(
    predictor: Predictor, video_path: str, output: str, threshold: float, log_period: int = 50
) -> str:
    """Draws every frame into a new video, same fps and size (``output``: folder or .mp4/.avi)."""
    video = cv2.VideoCapture(video_path)
    if not video.isOpened():
        raise OSError(f"Could not open video {video_path}")
    size = (int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    num_frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    codec = VIDEO_CODECS.get(os.path.splitext(output)[1].lower())
    target = output_file(output, video_path, codec is not None, ".mp4")
    codec = codec or VIDEO_CODECS[".mp4"]
    writer = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*codec), fps, size, True)
    if not writer.isOpened():
        raise OSError(f"Could not open a {codec} video writer for {target}")
    visualizer = VideoVisualizer(predictor.metadata, ColorMode.IMAGE)

    def frames():
        ok, frame = video.read()
        while ok:
            yield frame
            ok, frame = video.read()

    try:
        for frame in with_progress(frames(), num_frames, "frames", log_period, video_path):
            predictions = predictor(frame)
            drawn = draw(predictions, frame[:, :, ::-1], predictor.metadata, threshold, visualizer)
            writer.write(np.ascontiguousarray(drawn[:, :, ::-1]))
    finally:
        video.release()
        writer.release()
    logger.info(f"Wrote {target}")
    return target


def main(args) -> List[str]:
    """Returns the paths written."""
    if args.confidence_threshold is not None:  # what a panoptic model keeps (unused otherwise)
        args.opts = [*args.opts, "MODEL.DETR.PANOPTIC_CONF_THRESH", str(args.confidence_threshold)]
    cfg = cli.setup_cfg(args)
    threshold = 0.5 if args.confidence_threshold is None else args.confidence_threshold
    if cfg.MODEL.META_ARCHITECTURE == "DetrPanoptic":  # (set by --confidence-threshold, if given)
        threshold = cfg.MODEL.DETR.PANOPTIC_CONF_THRESH
    output = args.output or args.output_dir or os.path.join(cfg.OUTPUT_DIR, "demo")
    predictor = Predictor(cfg, load_model(cfg, args.random_weights))
    if args.video_input:
        return [run_on_video(predictor, args.video_input, output, threshold, args.log_period)]
    return run_on_images(predictor, list_images(args.input), output, threshold, args.scale)


if __name__ == "__main__":
    cli.setup_logging()
    main(ARGS)
