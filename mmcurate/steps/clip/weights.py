"""Find CLIP weights without surprises: a local checkpoint, open_clip's cache, or one download.

open_clip resolves a ``(model, pretrained)`` pair through the Hugging Face hub (or a URL)
into a cache. Left to itself, a machine without network spends about half a minute in
retries before failing, in every worker. Here the driver looks in the cache first, then
checks in a few seconds whether the source can be reached at all, and only then downloads;
workers load the cached file directly.

The step's fingerprint names the weights by content (:func:`check`): the SHA-256 of a
checkpoint file, of every file of a ``local-dir:`` folder, of a tag's cached weights, and the
commit of an ``hf-hub:`` repo's snapshot, which workers then load (:func:`hub_snapshot`).
"""

from __future__ import annotations

import json
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..annotators.base import AnnotatorUnavailable
from ...io.filehash import sha256_file
from .config import ClipModelConfig

__all__ = [
    "PROBE_TIMEOUT_S",
    "check",
    "embed_dim",
    "hub_snapshot",
    "hub_tokenizer",
    "pretrained_cfg",
    "register_model_config",
    "weights_file",
]

PROBE_TIMEOUT_S = 3.0
"""How long to wait for the weights' host to answer before calling it unreachable."""
_HF_WEIGHTS = "open_clip_pytorch_model.bin"


def _schema(config: ClipModelConfig) -> str | None:
    """``hf-hub`` or ``local-dir`` for such model names, else None (a built-in or registered name)."""
    for schema in ("hf-hub", "local-dir"):
        if config.model.startswith(schema + ":"):
            return schema
    return None


@lru_cache(maxsize=None)
def _register(path: str) -> None:
    import open_clip

    open_clip.add_model_config(path)


def register_model_config(config: ClipModelConfig) -> None:
    """Make ``config.model_config`` known to open_clip in this process (once per file)."""
    if config.model_config:
        if not Path(config.model_config).is_file():
            raise AnnotatorUnavailable(f"model_config {config.model_config}: no such file")
        _register(str(Path(config.model_config).resolve()))


def pretrained_cfg(config: ClipModelConfig) -> dict[str, Any]:
    """open_clip's pretrained config for ``(model, pretrained)``; a clear error when unknown."""
    import open_clip

    register_model_config(config)
    if open_clip.get_model_config(config.model) is None:
        raise AnnotatorUnavailable(
            f"open_clip has no model {config.model!r}; see open_clip.list_models(), or give model_config: a JSON config file"
        )
    cfg = open_clip.get_pretrained_cfg(config.model, config.pretrained or "")
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(config.model)) or "none"
        raise AnnotatorUnavailable(
            f"open_clip knows no pretrained tag {config.pretrained!r} for model {config.model!r} "
            f"(known: {tags}); or pass a local weights file as checkpoint:"
        )
    return dict(cfg)


def _hf_candidates(cfg: dict[str, Any]) -> tuple[str, list[str]]:
    """(repo, file names open_clip would try, safetensors first) for a hub-hosted tag."""
    repo, filename = os.path.split(cfg["hf_hub"])  # "org/repo/" names the default file
    filename = filename or _HF_WEIGHTS
    names = [filename]
    if filename == _HF_WEIGHTS:
        names.insert(0, "open_clip_model.safetensors")
    elif filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    return repo, names


def _cached(cfg: dict[str, Any]) -> str | None:
    """The weights file in the local cache, or None."""
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, names = _hf_candidates(cfg)
        for name in names:
            found = try_to_load_from_cache(repo, name)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    if cfg.get("url"):
        path = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
        if os.path.isfile(path):
            return path
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _unreachable(cfg: dict[str, Any]) -> str | None:
    """Why the weights cannot be fetched now (None when their host answers)."""
    if _offline():
        return "HF_HUB_OFFLINE is set"
    if cfg.get("hf_hub"):
        from huggingface_hub import constants

        url = constants.ENDPOINT
    else:
        url = cfg.get("url", "")
    parsed = urlparse(url)
    host = parsed.hostname
    if not host:
        return "open_clip lists no download location"
    try:
        socket.create_connection((host, parsed.port or (80 if parsed.scheme == "http" else 443)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return f"{host} cannot be reached: {exc}"  # one attempt, no retries
    return None


def _missing(config: ClipModelConfig, why: str) -> AnnotatorUnavailable:
    hub = _schema(config) == "hf-hub"
    what = f"model {config.model!r}" if hub else f"model {config.model!r} pretrained={config.pretrained!r}"
    fetch = f"'{config.model}'" if hub else f"'{config.model}', pretrained='{config.pretrained}'"
    return AnnotatorUnavailable(
        f"CLIP weights for {what} are not in the local cache and cannot be downloaded ({why}). "
        f"Either run once where the network is available "
        f"(python -c \"import open_clip; open_clip.create_model({fetch})\") "
        f"and copy the cache (~/.cache/huggingface, ~/.cache/clip), or pass a local weights file: "
        f"checkpoint: /path/to/weights.pt in the recipe step, or --set STEP.checkpoint=/path/to/weights.pt"
    )


def weights_file(config: ClipModelConfig, fetch: bool = True) -> str:
    """Local path of the weights of a ``(model, pretrained)`` pair: cached, else downloaded
    (``fetch``) once a quick probe shows the host can be reached."""
    cfg = pretrained_cfg(config)
    found = _cached(cfg)
    if found:
        return found
    why = _unreachable(cfg) if fetch else "not fetching here"
    if why:
        raise _missing(config, why)
    from open_clip.pretrained import download_pretrained

    try:
        return download_pretrained(cfg)
    except Exception as exc:  # network errors come in many types
        raise _missing(config, f"download failed: {type(exc).__name__}: {exc}") from None


def _sha256(path: str | Path, what: str) -> str:
    if not Path(path).is_file():
        raise AnnotatorUnavailable(f"{what} {path}: no such file")
    return sha256_file(path)


def _folder_sha256(folder: Path) -> dict[str, str]:
    """SHA-256 of every file in ``folder`` (config, weights, tokenizer files), hidden ones aside."""
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def _cached_snapshot(repo: str, revision: str | None) -> Path | None:
    """The folder of ``repo``'s snapshot at ``revision`` (None: the one the cache's ``main``
    names) holding a config and weights, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, "open_clip_config.json", revision=revision)
    if not isinstance(found, str) or not os.path.isfile(found):
        return None
    folder = Path(found).parent
    return folder if any(folder.glob(f"*{ext}") for ext in (".safetensors", ".bin", ".pth")) else None


def hub_snapshot(config: ClipModelConfig, revision: str | None = None) -> tuple[str, Path]:
    """(commit, local folder) of the ``hf-hub:`` model's snapshot at ``revision``: the cached one
    (None: the cache's current one), else downloaded once a quick probe shows the hub answers."""
    repo = config.model.split(":", 1)[1]
    folder = _cached_snapshot(repo, revision)
    if folder is None:
        why = _unreachable({"hf_hub": repo})
        if why:
            raise _missing(config, why)
        from huggingface_hub import hf_hub_download
        from open_clip.pretrained import download_pretrained_from_hf

        try:
            folder = Path(hf_hub_download(repo, "open_clip_config.json", revision=revision)).parent
            download_pretrained_from_hf(repo, revision=folder.name)
        except Exception as exc:  # network errors come in many types
            raise _missing(config, f"download failed: {type(exc).__name__}: {exc}") from None
    return folder.name, folder


def hub_tokenizer(config: ClipModelConfig, folder: Path) -> str:
    """What ``open_clip.get_tokenizer`` should load for an ``hf-hub:`` model pinned to the
    snapshot ``folder``: the folder itself, unless its config names a Hugging Face tokenizer
    (open_clip loads that one by name from the hub)."""
    cfg = json.loads((folder / "open_clip_config.json").read_text(encoding="utf-8"))
    named = cfg.get("model_cfg", cfg).get("text_cfg", {}).get("hf_tokenizer_name")
    return config.model if named else f"local-dir:{folder}"


def check(config: ClipModelConfig) -> dict[str, Any]:
    """Driver-side check before any work: the weights exist locally (fetched if need be), the
    model is known. Returns the identity of the weights, for the step's fingerprint: SHA-256
    of the files (hashed once per file version, see :mod:`mmcurate.io.filehash`) or, for
    ``hf-hub:``, the snapshot's commit (``hf_revision``), which every worker loads."""
    identity: dict[str, Any] = {}
    if config.model_config:
        register_model_config(config)
        identity["model_config_sha256"] = sha256_file(config.model_config)
    schema = _schema(config)
    if config.checkpoint:
        identity["checkpoint_sha256"] = _sha256(config.checkpoint, "checkpoint")
    elif schema == "local-dir":
        folder = Path(config.model.split(":", 1)[1])
        if not (folder / "open_clip_config.json").is_file():
            raise AnnotatorUnavailable(f"{config.model}: no open_clip_config.json in that folder")
        identity["local_dir_sha256"] = _folder_sha256(folder)
    elif schema == "hf-hub":
        identity["hf_revision"] = hub_snapshot(config)[0]
    else:
        path = weights_file(config)
        identity.update(weights_file=os.path.basename(path), weights_sha256=sha256_file(path))
    return identity


def embed_dim(config: ClipModelConfig) -> int:
    """Width of the model's joint embedding, from its config (no weights loaded)."""
    import open_clip

    register_model_config(config)
    cfg = open_clip.get_model_config(config.model)
    if not cfg or "embed_dim" not in cfg:
        raise AnnotatorUnavailable(f"cannot read the embedding width of model {config.model!r} from its open_clip config")
    return int(cfg["embed_dim"])
