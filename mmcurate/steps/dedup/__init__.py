"""Global deduplication: exact values, perceptual-hash distance, embedding similarity."""

from .config import METHODS, ExactConfig, KeepPolicy, NearConfig, SemanticConfig, VideoNearConfig
from .results import DedupReport

__all__ = ["METHODS", "DedupReport", "ExactConfig", "KeepPolicy", "NearConfig", "SemanticConfig", "VideoNearConfig"]
