"""CLIP with open_clip: model settings, weights resolution, the per-worker encoder, and the
image path (open_clip's preprocess; JPEG decode on the GPU under CUDA). The annotators that
use it are :mod:`mmcurate.steps.annotators.clip` (``clip_score``, ``clip_tags``)."""

from .config import ClipModelConfig

__all__ = ["ClipModelConfig"]
