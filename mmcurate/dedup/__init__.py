"""Global deduplication: exact values, perceptual-hash distance, embedding similarity."""

from .config import METHODS, ExactConfig, KeepPolicy, NearConfig, SemanticConfig, VideoNearConfig
from .step import DedupReport, PriorRows, run_dedup

__all__ = ["METHODS", "DedupReport", "ExactConfig", "KeepPolicy", "NearConfig", "PriorRows", "SemanticConfig", "VideoNearConfig", "run_dedup"]
