from .criterion import SetCriterion
from .detr import MLP, Detr
from .matcher import HungarianMatcher
from .position_encoding import PositionEmbeddingLearned, PositionEmbeddingSine
from .transformer import Transformer

__all__ = ["Detr", "MLP", "HungarianMatcher", "SetCriterion", "Transformer",
           "PositionEmbeddingSine", "PositionEmbeddingLearned"]
