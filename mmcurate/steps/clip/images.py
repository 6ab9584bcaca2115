"""From samples to CLIP pixels: open_clip's own preprocess, with JPEGs decoded on the GPU there.

A sample contributes one pixel row per picture it is scored on (:func:`clip_inputs`): its
image, or for a video sample (no image member) a few frames spaced uniformly over the
video, decoded with the short side at the model's input size. The annotators reduce the
rows of a sample to its values (:func:`per_sample`).

On CPU (and for video frames, or anything nvJPEG cannot take) each picture goes through
open_clip's preprocess unchanged. On CUDA, baseline RGB/grey JPEGs without an EXIF rotation
are decoded in one batched ``decode_jpeg`` call on the GPU and the same transform steps
(resize, crop, scale, normalise) run on the tensors; a JPEG the GPU cannot decode falls
back to Pillow on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

import torch
from PIL import Image

from ...decode import DecodeError
from ...decode.image import DEFAULT_MAX_PIXELS, EXIF_ORIENTATION, open_header
from ...decode.sandbox import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S
from ..sampleview import SampleView
from .encoder import ClipEncoder

__all__ = ["PixelBatch", "PixelMaker", "VideoSampling", "clip_inputs", "input_size", "per_sample", "tensor_transform"]


@dataclass(frozen=True)
class VideoSampling:
    """How a video sample becomes CLIP input: ``frames`` frames spaced uniformly over the video,
    short side ``size`` px (None: native), decoded under ``timeout_s`` and ``memory_mb``."""

    frames: int = 8
    size: int | None = None
    timeout_s: float | None = DEFAULT_TIMEOUT_S
    memory_mb: int | None = DEFAULT_MEMORY_MB


def clip_inputs(sample: SampleView, video: VideoSampling) -> list[Image.Image]:
    """The pictures CLIP scores for ``sample``, upright RGB: its image when it has an image
    member (decoded once per sample, shared with the other annotators); else, when it has a
    video member (or the recipe names no image modality), the frames ``video`` asks for, as
    :meth:`SampleView.video_frames` returns them. The one place a sample becomes CLIP input
    on the Pillow path; a :class:`DecodeError` names what is missing or broken."""
    if sample.member("image") is None and (sample.member("video") is not None or "image" not in sample.modalities):
        got = sample.video_frames(n=video.frames, size=video.size, max_frames=video.frames, timeout_s=video.timeout_s, memory_mb=video.memory_mb)
        return got.images()
    img, _ = sample.image()
    return [img]


def input_size(preprocess: Callable) -> int | None:
    """The short side, in pixels, that open_clip's ``preprocess`` resizes a picture to (its
    first resize or crop step; None when it has neither): larger video frames would only be
    shrunk again, so frames are decoded at this size."""
    import torchvision.transforms as T

    for t in getattr(preprocess, "transforms", [preprocess]):
        if isinstance(t, (T.Resize, T.CenterCrop)):
            size = t.size
            return int(size) if isinstance(size, int) else int(max(size))
    return None


def per_sample(values: torch.Tensor, owner: torch.Tensor, count: int, reduce: str = "mean") -> torch.Tensor:
    """Rows of ``values`` reduced to one per sample: ``owner[row]`` (in ``range(count)``) names
    the row's sample; ``reduce`` is ``"mean"`` or ``"amax"``. A sample of one row keeps it."""
    out = values.new_zeros((count, *values.shape[1:]))
    index = owner.view(-1, *([1] * (values.dim() - 1))).expand_as(values)
    return out.scatter_reduce_(0, index, values, reduce, include_self=False)


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
    """Pixel rows of the samples of a chunk that could be decoded, and why the others could not.
    An image is one row; a video sample has one row per frame, consecutive."""

    positions: list[int]
    """For each row of ``pixels``, the index (into the chunk) of its sample; ascending."""
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

    @property
    def samples(self) -> list[int]:
        """Indices (into the chunk) of the samples that have rows, in order, each once."""
        return list(dict.fromkeys(self.positions))

    def owners(self, device: torch.device) -> torch.Tensor:
        """For each row, the index into :attr:`samples` of its sample (see :func:`per_sample`)."""
        index = {sample: k for k, sample in enumerate(self.samples)}
        return torch.tensor([index[p] for p in self.positions], dtype=torch.long, device=device)


class PixelMaker:
    """Turns samples into a batch of preprocessed pixel rows for one encoder (see the module doc);
    video samples are sampled as ``frames`` frames, each decode under ``timeout_s`` and ``memory_mb``."""

    def __init__(
        self,
        encoder: ClipEncoder,
        gpu_decode: bool,
        frames: int = 8,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        memory_mb: int | None = DEFAULT_MEMORY_MB,
    ):
        self.video = VideoSampling(frames, input_size(encoder.preprocess), timeout_s, memory_mb)
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
                out[i] = torch.stack([self.preprocess(picture) for picture in clip_inputs(samples[i], self.video)])
                samples[i].forget_pixels()  # keep the small tensors, not the decoded pictures
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
            out.update((which[j], prepared[k : k + 1]) for k, j in enumerate(js))
        return out

    @staticmethod
    def _stack(out: dict[int, torch.Tensor | str], n: int) -> PixelBatch:
        """``out`` maps a sample to its rows ``(k, C, H, W)`` or to why it has none."""
        tensors = {i: v for i, v in sorted(out.items()) if isinstance(v, torch.Tensor)}
        positions = [i for i, rows in tensors.items() for _ in range(len(rows))]
        errors = {i: v for i, v in out.items() if isinstance(v, str)}
        pixels = torch.cat(list(tensors.values())) if tensors else None
        return PixelBatch(positions, pixels, errors)


def _gpu_decodable(sample: SampleView) -> bool:
    """A JPEG nvJPEG decodes exactly as the Pillow path would: RGB or grey, no EXIF rotation,
    within the pixel limit (read from the header only), where the recipe allows JPEG."""
    found = sample.member("image")
    if found is None or not found[1].startswith(b"\xff\xd8") or "JPEG" not in sample.image_formats:
        return False
    try:
        header = open_header(found[1], ["JPEG"])
        width, height = header.size
        return (
            header.format == "JPEG"
            and header.mode in ("RGB", "L")
            and width * height <= DEFAULT_MAX_PIXELS
            and header.getexif().get(EXIF_ORIENTATION, 1) == 1
        )
    except Exception:  # anything odd: Pillow decides, and names the error
        return False
