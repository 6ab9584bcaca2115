"""``clip_score`` and ``clip_tags``: open_clip image-text alignment and zero-shot concept scores.

Both are deferred GPU annotators: they ask for the Dask resource ``GPU`` (so they start a
group of their own and run only on samples that survived the steps before), load the
model once per worker process (shared between the two when they name the same model),
and batch ``batch_size`` samples per forward pass, in fp16 on CUDA and fp32 on CPU.
Within a call, the next chunk is decoded and tokenised in a background thread while the
model runs on the current one.

A sample with an image member is scored on its image; one with a video member instead is
scored on ``frames`` frames spaced uniformly over the video (:func:`mmcurate.steps.clip.images.clip_inputs`),
and each of its values is the mean over the frames (``clip_score_max`` the maximum), so
thresholds mean the same for both. Its ``image_embedding`` is the re-normalised mean of
the frame embeddings.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np
import pyarrow as pa

from ..clip.config import ClipModelConfig
from ...decode import DecodeError
from ..sampleview import SampleView
from .base import Annotator, Row

if TYPE_CHECKING:
    import torch

    from ..clip.images import PixelBatch

__all__ = ["ClipScore", "ClipScoreConfig", "ClipTags", "ClipTagsConfig", "Concept"]

CHUNKS_PER_CALL = 8
"""The engine hands over this many model batches per call, so preparing the next chunk
overlaps inference on the current one for all but the first."""


@dataclass(frozen=True)
class ClipScoreConfig(ClipModelConfig):
    embeddings: bool = False
    """Also store ``image_embedding`` and ``text_embedding`` (normalised, float16), e.g. for
    ``dedup: semantic``."""


DEFAULT_CONCEPTS = (
    "watermark: a photo with a watermark | a photo without a watermark",
    "text_heavy: an image with a lot of text | a photo with no text",
    "nsfw: an explicit nsfw photo | a safe for work photo",
)


@dataclass(frozen=True)
class Concept:
    name: str
    positive: str
    negative: str

    @classmethod
    def parse(cls, text: str) -> "Concept":
        name, sep, prompts = text.partition(":")
        positive, bar, negative = prompts.partition("|")
        name, positive, negative = name.strip(), positive.strip(), negative.strip()
        if not sep or not bar or not positive or not negative or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(
                f"field 'concepts': {text!r} is not 'NAME: PROMPT | CONTRAST PROMPT' with NAME in lower_snake_case, "
                f"e.g. 'watermark: a photo with a watermark | a photo without a watermark'"
            )
        return cls(name, positive, negative)


@dataclass(frozen=True)
class ClipTagsConfig(ClipModelConfig):
    concepts: tuple[str, ...] = field(default=DEFAULT_CONCEPTS)
    """``NAME: PROMPT | CONTRAST PROMPT``; column ``tag_NAME`` is the zero-shot probability
    (softmax of the model's scaled similarities) that the image matches PROMPT rather than
    CONTRAST PROMPT."""

    def __post_init__(self) -> None:
        super().__post_init__()
        names = [c.name for c in self.parsed]
        if not names or len(set(names)) != len(names):
            raise ValueError("field 'concepts': give at least one concept, each NAME once")

    @property
    def parsed(self) -> list[Concept]:
        return [Concept.parse(c) for c in self.concepts]


class _ClipAnnotator(Annotator):
    """Shared machinery: weights check in the driver, GPU resource, overlapped chunks."""

    needs_text: ClassVar[bool]

    @classmethod
    def prepare(cls, config: ClipModelConfig) -> Mapping[str, Any]:
        from ..clip import weights

        return weights.check(config)

    @classmethod
    def resources_for(cls, config: ClipModelConfig) -> dict[str, float]:
        return {} if config.device == "cpu" else {"GPU": 1}

    @classmethod
    def batch_size_for(cls, config: ClipModelConfig) -> int:
        return config.batch_size * CHUNKS_PER_CALL

    def setup(self) -> None:
        from ..clip.encoder import load_encoder
        from ..clip.images import PixelMaker

        self.encoder = load_encoder(self.config, self.resolved)
        self.pixel_maker = PixelMaker(self.encoder, self.config.gpu_decode, self.config.frames, self.config.timeout_s, self.config.memory_mb)
        self.prepare_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip-prepare")
        """One preparing thread for the worker's life (a thread per call would start a new
        video decode child each call)."""

    def annotate(self, batch: Sequence[SampleView]) -> list[Row]:
        from ..clip.overlap import prepared_chunks

        rows: list[Row] = [{} for _ in batch]
        for start, (pixels, tokens) in prepared_chunks(batch, self.config.batch_size, self._prepare, self.prepare_pool):
            for i, error in pixels.errors.items():
                rows[start + i] = {"error": error}
            images = pixels.wait()
            if images is None:
                continue
            owner = pixels.owners(self.encoder.device)
            scored = self._score(self.encoder.encode_images(images), owner, len(pixels.samples), tokens)
            for i, row in zip(pixels.samples, scored):
                rows[start + i] = row
        return rows

    def _prepare(self, chunk: Sequence[SampleView]) -> tuple["PixelBatch", Any]:
        """(pixels, token ids of the captions of the decodable samples) for one chunk."""
        texts: dict[int, str | DecodeError] = {}
        if self.needs_text:
            for i, sample in enumerate(chunk):
                try:
                    texts[i] = sample.require("text").decode("utf-8", errors="replace")
                except DecodeError as exc:
                    texts[i] = exc
        failed = {i: str(t) for i, t in texts.items() if isinstance(t, DecodeError)}
        usable = [i for i in range(len(chunk)) if i not in failed]
        pixels = self.pixel_maker([chunk[i] for i in usable])
        pixels.positions = [usable[p] for p in pixels.positions]
        pixels.errors = {**failed, **{usable[p]: e for p, e in pixels.errors.items()}}
        tokens = self.encoder.tokenizer([texts[i] for i in pixels.samples]) if self.needs_text and pixels.positions else None
        return pixels, tokens

    def _score(self, images: "torch.Tensor", owner: "torch.Tensor", count: int, tokens: Any) -> list[Row]:
        """One row per sample from the normalised embeddings of the pixel rows (``owner[row]``:
        the row's sample, in ``range(count)``) and the token ids of the samples' captions."""
        raise NotImplementedError


class ClipScore(_ClipAnnotator):
    """``clip_score``: cosine similarity of the normalised image and caption embeddings (the
    scale LAION's 0.28 and DataComp's 0.25 thresholds use); for a video the mean over its
    frames. ``clip_score_max``: the best frame's (for an image, equal to ``clip_score``).
    Optionally the embeddings."""

    name = "clip_score"
    version = "2"  # clip_score_max; video samples
    Config = ClipScoreConfig
    columns = {"clip_score": pa.float32(), "clip_score_max": pa.float32()}
    needs_text = True

    @classmethod
    def columns_for(cls, config: ClipScoreConfig) -> dict[str, pa.DataType]:
        if not config.embeddings:
            return dict(cls.columns)
        from ..clip.weights import embed_dim

        vector = pa.list_(pa.float16(), embed_dim(config))
        return {**cls.columns, "image_embedding": vector, "text_embedding": vector}

    def _score(self, images: "torch.Tensor", owner: "torch.Tensor", count: int, tokens: Any) -> list[Row]:
        import torch

        from ..clip.images import per_sample

        texts = self.encoder.encode_texts(tokens)  # (count, dim)
        scores = (images * texts[owner]).sum(dim=-1)  # one per pixel row
        means = per_sample(scores, owner, count, "mean").cpu().numpy()
        tops = per_sample(scores, owner, count, "amax").cpu().numpy()
        rows: list[Row] = [{"clip_score": float(m), "clip_score_max": float(t)} for m, t in zip(means, tops)]
        if self.config.embeddings:
            image_vectors = torch.nn.functional.normalize(per_sample(images, owner, count), dim=-1).half().cpu().numpy()
            for row, iv, tv in zip(rows, image_vectors, texts.half().cpu().numpy()):
                row.update(image_embedding=iv, text_embedding=tv)
        return rows


class ClipTags(_ClipAnnotator):
    """``clip_tags``: per concept, column ``tag_NAME`` in [0, 1] (zero-shot, no extra weights);
    for a video the mean over its frames."""

    name = "clip_tags"
    Config = ClipTagsConfig
    columns: ClassVar[dict[str, pa.DataType]] = {}
    needs_text = False

    @classmethod
    def columns_for(cls, config: ClipTagsConfig) -> dict[str, pa.DataType]:
        return {f"tag_{c.name}": pa.float32() for c in config.parsed}

    def setup(self) -> None:
        super().setup()
        prompts = [p for c in self.config.parsed for p in (c.positive, c.negative)]
        self.prompts = self.encoder.encode_texts(self.encoder.tokenizer(prompts))  # (2 * concepts, dim)

    def _score(self, images: "torch.Tensor", owner: "torch.Tensor", count: int, tokens: Any) -> list[Row]:
        import torch

        from ..clip.images import per_sample

        logits = self.encoder.logit_scale * images @ self.prompts.T  # (rows, 2 * concepts)
        per_row = torch.softmax(logits.view(len(images), -1, 2), dim=-1)[..., 0]
        probs = per_sample(per_row, owner, count).cpu().numpy().astype(np.float64)
        names = [f"tag_{c.name}" for c in self.config.parsed]
        return [dict(zip(names, map(float, row))) for row in probs]
