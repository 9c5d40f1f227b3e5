"""The tiny DETR the tests train and build on CPU, as "KEY VALUE" command-line options: ResNet-18
at stride 16 (res4), d=32, 4 heads, 1 encoder + 2 decoder layers, no dropout."""

TINY_MODEL_OPTS = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.RESNETS.OUT_FEATURES", "['res4']",
    "MODEL.DETR.HIDDEN_DIM", "32", "MODEL.DETR.NHEADS", "4", "MODEL.DETR.DIM_FEEDFORWARD", "64",
    "MODEL.DETR.ENC_LAYERS", "1", "MODEL.DETR.DEC_LAYERS", "2", "MODEL.DETR.DROPOUT", "0.0",
]  # fmt: skip

# train_net on the tiny generated shapes dataset: 64-128 px images, 4 iterations of batch 2
TINY_TRAIN_OPTS = TINY_MODEL_OPTS + [
    "MODEL.DETR.NUM_CLASSES", "6", "MODEL.DETR.NUM_OBJECT_QUERIES", "8",
    "DATASETS.TRAIN", "('shapes_tiny_train',)",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "128", "INPUT.CROP.ENABLED", "False",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(3,)",
    "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0", "SEED", "1",
]  # fmt: skip
