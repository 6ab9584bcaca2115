"""From samples to CLIP pixels: open_clip's own preprocess, with JPEGs decoded on the GPU there.

On CPU (or for anything nvJPEG cannot take) each sample's picture comes from
:func:`image_input` and goes through open_clip's preprocess unchanged. On CUDA, baseline
RGB/grey JPEGs without an EXIF rotation are decoded in one batched ``decode_jpeg`` call on
the GPU and the same transform steps (resize, crop, scale, normalise) run on the tensors;
a JPEG the GPU cannot decode falls back to Pillow on its own.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

import torch
from PIL import Image

from ..decode import DecodeError
from ..decode.image import DEFAULT_MAX_PIXELS
from ..sampleview import SampleView
from .encoder import ClipEncoder

__all__ = ["PixelBatch", "PixelMaker", "image_input", "tensor_transform"]

_EXIF_ORIENTATION = 0x0112


def image_input(sample: SampleView) -> Image.Image:
    """The picture CLIP scores for ``sample``: its decoded, upright image (decoded once per
    sample, shared with the other annotators). The one place a sample becomes CLIP input on
    the Pillow path; video frames would be added here."""
    img, _ = sample.image()
    return img


def tensor_transform(preprocess: Callable) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """open_clip's preprocess as steps on decoded uint8 RGB tensors (N, C, H, W), or None when it
    holds a step that has no tensor equivalent here (then every image takes the Pillow path)."""
    import torchvision.transforms as T
    import torchvision.transforms.functional as F

    steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
    for t in getattr(preprocess, "transforms", [preprocess]):
        if isinstance(t, T.Resize):
            steps.append(partial(F.resize, size=t.size, interpolation=t.interpolation, max_size=t.max_size, antialias=True))
        elif isinstance(t, T.CenterCrop):
            steps.append(partial(F.center_crop, output_size=list(t.size)))
        elif isinstance(t, T.ToTensor):  # open_clip's MaybeToTensor too
            steps.append(lambda x: x.float().div_(255))
        elif isinstance(t, T.Normalize):
            steps.append(partial(F.normalize, mean=list(t.mean), std=list(t.std)))
        elif type(t).__name__ == "MaybeConvertMode" or getattr(t, "__name__", "") == "_convert_to_rgb":
            continue  # decoded as RGB already
        else:
            return None

    def run(x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x)
        return x

    return run


@dataclass
class PixelBatch:
    """Pixels of the samples of a chunk that could be decoded, and why the others could not."""

    positions: list[int]
    """Indices (into the chunk) of the samples in ``pixels``, in order."""
    pixels: torch.Tensor | None
    errors: dict[int, str] = field(default_factory=dict)
    ready: torch.cuda.Event | None = None
    """Recorded on the preparing CUDA stream; wait on it before using ``pixels``."""

    def wait(self) -> torch.Tensor | None:
        """The pixels, safe to use on the current CUDA stream (or on CPU)."""
        if self.ready is not None and self.pixels is not None:
            current = torch.cuda.current_stream(self.pixels.device)
            current.wait_event(self.ready)
            self.pixels.record_stream(current)
        return self.pixels


class PixelMaker:
    """Turns samples into a batch of preprocessed pixels for one encoder (see the module doc)."""

    def __init__(self, encoder: ClipEncoder, gpu_decode: bool):
        self.preprocess = encoder.preprocess
        self.device = encoder.device
        on_cuda = encoder.device.type == "cuda"
        self.tensor_steps = tensor_transform(encoder.preprocess) if on_cuda and gpu_decode else None
        self.stream = torch.cuda.Stream(encoder.device) if on_cuda else None

    def __call__(self, samples: Sequence[SampleView]) -> PixelBatch:
        if self.stream is None:
            return self._stack(self._pillow(samples, range(len(samples))), len(samples))
        with torch.cuda.stream(self.stream):
            out: dict[int, torch.Tensor | str] = {}
            if self.tensor_steps is not None:
                out.update(self._gpu(samples))
            rest = [i for i in range(len(samples)) if i not in out]
            for i, value in self._pillow(samples, rest).items():
                out[i] = value.pin_memory().to(self.device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            batch = self._stack(out, len(samples))
            batch.ready = torch.cuda.Event()
            batch.ready.record(self.stream)
        return batch

    def _pillow(self, samples: Sequence[SampleView], which: Sequence[int]) -> dict[int, torch.Tensor | str]:
        out: dict[int, torch.Tensor | str] = {}
        for i in which:
            try:
                out[i] = self.preprocess(image_input(samples[i]))
                samples[i].forget_image()  # keep the small tensor, not the decoded picture
            except DecodeError as exc:
                out[i] = str(exc)
            except (OSError, ValueError) as exc:  # a mode Pillow cannot convert to RGB
                out[i] = f"decode_error: cannot prepare image for CLIP: {type(exc).__name__}: {exc}"
        return out

    def _gpu(self, samples: Sequence[SampleView]) -> dict[int, torch.Tensor]:
        """Decode the eligible JPEGs on the GPU (batched); the rest are left for Pillow."""
        from torchvision.io import ImageReadMode, decode_jpeg

        which = [i for i, s in enumerate(samples) if _gpu_decodable(s)]
        if not which:
            return {}
        data = [torch.frombuffer(bytearray(samples[i].require("image")), dtype=torch.uint8) for i in which]
        try:
            decoded: list[torch.Tensor | None] = list(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:  # one bad image fails the batch: decode one by one
            decoded = []
            for one in data:
                try:
                    decoded.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    decoded.append(None)
        assert self.tensor_steps is not None
        same_shape: dict[tuple[int, ...], list[int]] = {}  # one batched resize per image size
        for j, img in enumerate(decoded):
            if img is not None:
                same_shape.setdefault(tuple(img.shape), []).append(j)
        out: dict[int, torch.Tensor] = {}
        for js in same_shape.values():
            prepared = self.tensor_steps(torch.stack([decoded[j] for j in js]))  # type: ignore[misc]
            out.update((which[j], x) for j, x in zip(js, prepared))
        return out

    @staticmethod
    def _stack(out: dict[int, torch.Tensor | str], n: int) -> PixelBatch:
        positions = [i for i in range(n) if isinstance(out.get(i), torch.Tensor)]
        errors = {i: v for i, v in out.items() if isinstance(v, str)}
        pixels = torch.stack([out[i] for i in positions]) if positions else None  # type: ignore[misc]
        return PixelBatch(positions, pixels, errors)


def _gpu_decodable(sample: SampleView) -> bool:
    """A JPEG nvJPEG decodes exactly as the Pillow path would: RGB or grey, no EXIF rotation,
    within the pixel limit (read from the header only)."""
    found = sample.member("image")
    if found is None or not found[1].startswith(b"\xff\xd8"):
        return False
    try:
        header = Image.open(io.BytesIO(found[1]))
        width, height = header.size
        return (
            header.format == "JPEG"
            and header.mode in ("RGB", "L")
            and width * height <= DEFAULT_MAX_PIXELS
            and header.getexif().get(_EXIF_ORIENTATION, 1) == 1
        )
    except Exception:  # anything odd: Pillow decides, and names the error
        return False
