"""A loaded open_clip model with its own preprocess and tokenizer, once per worker process."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from ..annotators.base import AnnotatorUnavailable
from .config import ClipModelConfig
from .weights import hub_snapshot, hub_tokenizer, pretrained_cfg, register_model_config, weights_file

__all__ = ["ClipEncoder", "load_encoder", "resolve_device"]

_ENCODERS: dict[tuple[Any, ...], "ClipEncoder"] = {}
_MODEL_FIELDS = ("model", "pretrained", "checkpoint", "model_config", "device", "precision")


def resolve_device(config: ClipModelConfig) -> torch.device:
    """``auto``: CUDA when this process sees a device (a GPU worker sees exactly one), else CPU."""
    if config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise AnnotatorUnavailable("device: cuda, but this worker sees no CUDA device; use device: auto or cpu")
    return torch.device("cuda")


@dataclass
class ClipEncoder:
    """Normalised image and text embeddings (float32) from one open_clip model."""

    model: Any
    preprocess: Callable[[Any], torch.Tensor]
    """open_clip's own inference transform for the model: PIL image -> float tensor (C, H, W)."""
    tokenizer: Callable[[list[str]], torch.Tensor]
    """The model's tokenizer: captions -> token ids, cut to its context length."""
    device: torch.device
    dtype: torch.dtype

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.model.encode_image(pixels.to(self.device, self.dtype, non_blocking=True))
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @torch.inference_mode()
    def encode_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        features = self.model.encode_text(tokens.to(self.device, non_blocking=True))
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())  # a parameter: detached, no requires_grad warning


def _create(config: ClipModelConfig, revision: str | None) -> ClipEncoder:
    import open_clip

    register_model_config(config)
    device = resolve_device(config)
    half = device.type == "cuda" and config.precision in ("auto", "fp16")
    options: dict[str, Any] = {}
    name = tokenizer = config.model
    if config.checkpoint:
        pretrained: str | None = config.checkpoint
    elif config.model.startswith("hf-hub:"):
        _, folder = hub_snapshot(config, revision)  # exactly the snapshot the driver fingerprinted
        name, tokenizer, pretrained = f"local-dir:{folder}", hub_tokenizer(config, folder), None
    elif config.model.startswith("local-dir:"):
        pretrained = None  # open_clip takes config and weights from the named location
    else:
        # The cached file itself (no network round trip per worker), with the preprocessing
        # and activation open_clip would take from the tag.
        cfg = pretrained_cfg(config)
        pretrained = weights_file(config)
        options = {
            "image_mean": cfg.get("mean"),
            "image_std": cfg.get("std"),
            "image_interpolation": cfg.get("interpolation"),
            "image_resize_mode": cfg.get("resize_mode"),
            "force_quick_gelu": bool(cfg.get("quick_gelu", False)),
        }
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, precision="fp16" if half else "fp32", device=device, **options
    )
    model.eval()
    return ClipEncoder(model, preprocess, open_clip.get_tokenizer(tokenizer), device, torch.float16 if half else torch.float32)


def load_encoder(config: ClipModelConfig, resolved: Mapping[str, Any] | None = None) -> ClipEncoder:
    """The encoder for ``config``'s model, loaded once per process and shared by every CLIP
    annotator that names the same model, weights, device and precision. ``resolved``: what
    :func:`~mmcurate.steps.clip.weights.check` returned in the driver; new weights content there
    loads the model again, and an ``hf-hub:`` model loads at its ``hf_revision``."""
    resolved = resolved or {}
    key = (*(getattr(config, f) for f in _MODEL_FIELDS), json.dumps(resolved, sort_keys=True))
    if key not in _ENCODERS:
        _ENCODERS[key] = _create(config, resolved.get("hf_revision"))
    return _ENCODERS[key]
