"""Settings shared by the CLIP annotators: which model and weights, on which device, how batched."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...decode.sandbox import TimeLimit

__all__ = ["ClipModelConfig", "DEVICES", "PRECISIONS"]

DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("auto", "fp32", "fp16")


@dataclass(frozen=True)
class ClipModelConfig(TimeLimit):
    """An open_clip model and its weights. Every field but ``batch_size`` is part of the step's
    fingerprint, with the weights' content (:func:`mmcurate.steps.clip.weights.check`), so another
    model, tag, checkpoint, rewritten weights file or precision never reuses stored scores."""

    model: str = "ViT-B-32"
    """An open_clip model name (``open_clip.list_models()``), ``hf-hub:ORG/REPO`` or ``local-dir:PATH``."""
    pretrained: str | None = "openai"
    """An open_clip pretrained tag for ``model`` (``open_clip.list_pretrained_tags_by_model``);
    resolved through open_clip's cache, downloaded once when missing. Ignored with ``checkpoint``."""
    checkpoint: str | None = None
    """A local weights file (open_clip state dict) used instead of ``pretrained``."""
    model_config: str | None = None
    """A JSON model config for an architecture open_clip does not ship; registered in every
    worker under the file's stem, which ``model`` then names."""
    device: str = "auto"
    """``auto`` (CUDA when the worker has it, else CPU), ``cuda`` or ``cpu``."""
    precision: str = "auto"
    """``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32`` or ``fp16`` (CUDA only)."""
    batch_size: int = field(default=256, metadata={"fingerprint": False})
    """Samples per forward pass; a video sample brings ``frames`` pictures to it (not in the
    fingerprint: it does not change the scores)."""
    gpu_decode: bool = False
    """On CUDA, decode JPEGs on the GPU (nvJPEG, batched; Pillow for what it cannot decode).
    Off by default: on an H200, nvJPEG's pixels moved the scores of a small random-weight model
    by up to 0.015 from open_clip's own (Pillow) preprocessing, where fp16 alone moved them by
    0.0004."""
    frames: int = 8
    """A sample without an image member but with a video member is scored on this many frames
    spaced uniformly over the video (decoded with the short side at the model's input size);
    its scores are the means over the frames."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.device not in DEVICES:
            raise ValueError(f"field 'device': expected one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"field 'precision': expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.batch_size < 1:
            raise ValueError(f"field 'batch_size': must be at least 1, got {self.batch_size}")
        if self.frames < 1:
            raise ValueError(f"field 'frames': must be at least 1, got {self.frames}")
        if self.device == "cpu" and self.precision == "fp16":
            raise ValueError("field 'precision': fp16 needs device cuda or auto (CPU runs fp32)")
        if not self.pretrained and not self.checkpoint and not self.model.startswith(("hf-hub:", "local-dir:")):
            raise ValueError("give 'pretrained' (an open_clip tag) or 'checkpoint' (a weights file)")

    @property
    def weights(self) -> str:
        """Where the weights come from, in words (for messages)."""
        if self.checkpoint:
            return f"checkpoint {self.checkpoint}"
        if self.model.startswith(("hf-hub:", "local-dir:")):
            return self.model
        return f"{self.model} pretrained={self.pretrained}"
