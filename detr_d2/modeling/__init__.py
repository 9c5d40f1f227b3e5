# ruff: noqa: F401  (the package's API, re-exported)
from .criterion import SetCriterion, SetCriterionWithMasks
from .detr import MLP, Detr
from .matcher import HungarianMatcher
from .panoptic import DetrPanoptic
from .position_encoding import PositionEmbeddingLearned, PositionEmbeddingSine
from .transformer import Transformer
