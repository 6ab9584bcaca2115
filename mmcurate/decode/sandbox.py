"""Decode under a time limit in a killable child process, so one bad file cannot stall a worker.

decord and FFmpeg can hang (or crash) inside C code, where neither a Python thread timeout
nor a signal handler reaches. So media decoding runs in a long-lived child process
(``python -m mmcurate.decode.sandbox``), one per calling thread, started on first use:

* The parent sends a request (op name, JSON parameters, the member's bytes) over the
  child's stdin and waits for the answer on its stdout, with ``select`` and a deadline on
  both the write and the read.
* Past the deadline the parent kills the child (SIGKILL), reaps it, and raises
  :class:`DecodeTimeout` (reason ``decode_timeout: ...``); the next request starts a fresh
  child. A child that dies mid-request (a decoder crash) gives ``decode_error: ...``.
* Each request may grow the child's address space by at most ``memory_mb`` (``RLIMIT_AS``,
  set by the child before it reads the member): a decode past it fails as
  ``decode_error: OP exceeded the decode memory limit (N MiB)``, and the worker never holds
  what the decoder could not.
* Answers carry JSON metadata and raw numpy arrays (dtype and shape in the JSON):
  nothing is pickled, in either direction.
* The child dies with its parent (stdin closes; on Linux also ``PR_SET_PDEATHSIG``) and
  sends FFmpeg's and decord's log output to /dev/null (its stdout is kept for answers).

``timeout_s=None`` decodes in the calling process instead (benchmarks, trusted data).
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from .audio import Audio, decode_audio
from .audio_header import DEFAULT_MAX_DECODED_MB, DEFAULT_MAX_DURATION_S, check_audio_header, check_decoded_audio
from .errors import DecodeError, one_line
from .video import FrameRequest, VideoFrames, VideoInfo, probe_video, sample_frames, video_decoders

__all__ = [
    "DEFAULT_MEMORY_MB",
    "DEFAULT_TIMEOUT_S",
    "DecodeTimeout",
    "TimeLimit",
    "check_timeout",
    "decode_audio_limited",
    "probe_video_limited",
    "sample_frames_limited",
]

DEFAULT_TIMEOUT_S = 60.0
"""Default time limit for decoding one member (seconds)."""
DEFAULT_MEMORY_MB = 1024
"""Default address space one decode may add to its child (MiB): room for a 4K frame batch or
the largest audio the header checks admit, and a bound on what a hostile member can take."""
STARTUP_TIMEOUT_S = 120.0
"""How long a fresh child may take to import its decoders (not counted against a member)."""

_HEADER = struct.Struct("<IQ")  # JSON length, payload length
_READY = b"R"

Meta = dict[str, Any]
Op = Callable[[bytes, Meta], tuple[Meta, list[np.ndarray]]]


class DecodeTimeout(DecodeError):
    """Decoding one member took longer than its time limit; the child was killed."""


# --------------------------------------------------------------------------- ops (run in the child)


def _op_video_info(data: bytes, params: Meta) -> tuple[Meta, list[np.ndarray]]:
    return probe_video(data).to_dict(), []


def _op_video_frames(data: bytes, params: Meta) -> tuple[Meta, list[np.ndarray]]:
    got = sample_frames(data, FrameRequest(**params))
    return {"timestamps_s": got.timestamps_s, "decoder": got.decoder}, [got.frames]


def _op_audio(data: bytes, params: Meta) -> tuple[Meta, list[np.ndarray]]:
    got = decode_audio(data, params.get("sample_rate"))
    check_decoded_audio(got.duration_s, got.waveform.nbytes, params.get("max_duration_s"), params["max_decoded_bytes"])
    return {"sample_rate": got.sample_rate}, [got.waveform]


_OPS: dict[str, Op] = {"video_info": _op_video_info, "video_frames": _op_video_frames, "audio": _op_audio}
_MEDIA = {"video_info": "video", "video_frames": "video", "audio": "audio"}


# --------------------------------------------------------------------------- typed entry points


def probe_video_limited(data: bytes, timeout_s: float | None = DEFAULT_TIMEOUT_S, memory_mb: int | None = DEFAULT_MEMORY_MB) -> VideoInfo:
    """:func:`~mmcurate.decode.video.probe_video` under a time and memory limit."""
    meta, _ = _call("video_info", data, {}, timeout_s, memory_mb)
    return VideoInfo(**meta)


def sample_frames_limited(
    data: bytes, request: FrameRequest, timeout_s: float | None = DEFAULT_TIMEOUT_S, memory_mb: int | None = DEFAULT_MEMORY_MB
) -> VideoFrames:
    """:func:`~mmcurate.decode.video.sample_frames` under a time and memory limit."""
    params = {k: getattr(request, k) for k in ("n", "every_s", "size", "max_frames")}
    meta, arrays = _call("video_frames", data, params, timeout_s, memory_mb)
    return VideoFrames(arrays[0], meta["timestamps_s"], meta["decoder"])


def decode_audio_limited(
    data: bytes,
    sample_rate: int | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    memory_mb: int | None = DEFAULT_MEMORY_MB,
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
    max_decoded_mb: int = DEFAULT_MAX_DECODED_MB,
) -> Audio:
    """:func:`~mmcurate.decode.audio.decode_audio` under a time and memory limit. Audio longer
    than ``max_duration_s`` (None: any length) or decoding to more than ``max_decoded_mb`` MiB
    is refused from its header when the header says (WAV, FLAC), else after decoding."""
    max_decoded_bytes = max_decoded_mb << 20
    check_audio_header(data, max_duration_s, max_decoded_bytes)
    params = {"sample_rate": sample_rate, "max_duration_s": max_duration_s, "max_decoded_bytes": max_decoded_bytes}
    meta, arrays = _call("audio", data, params, timeout_s, memory_mb)
    return Audio(arrays[0], meta["sample_rate"])


@dataclass(frozen=True)
class TimeLimit:
    """Base of the configs of annotators that decode media: per-member time and memory limits."""

    timeout_s: float | None = DEFAULT_TIMEOUT_S
    """Seconds one member's decode may take; past it the sample drops as ``decode_timeout``
    (null: decode in this process, without a time or memory limit, for trusted data)."""
    memory_mb: int | None = DEFAULT_MEMORY_MB
    """MiB of address space one member's decode may add to the decode process; past it the
    sample drops as ``decode_error: ... exceeded the decode memory limit`` (null: no limit)."""

    def __post_init__(self) -> None:
        check_timeout(self.timeout_s)
        if self.memory_mb is not None and not self.memory_mb > 0:
            raise ValueError(f"memory_mb must be > 0 MiB, or null for no memory limit; not {self.memory_mb}")


def check_timeout(timeout_s: float | None) -> None:
    """ValueError unless ``timeout_s`` is a positive number of seconds or None (no child, no limit)."""
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0 seconds, or null to decode in-process without a limit; not {timeout_s}")


def _call(op: str, data: bytes, params: Meta, timeout_s: float | None, memory_mb: int | None) -> tuple[Meta, list[np.ndarray]]:
    if not data:  # known without a decoder
        raise DecodeError(f"decode_error: empty {_MEDIA[op]} member")
    check_timeout(timeout_s)
    if timeout_s is None:
        return _OPS[op](data, params)
    return _child().call(op, data, params, timeout_s, memory_mb)


# --------------------------------------------------------------------------- wire format


def _frame(meta: Meta, payload_len: int) -> bytes:
    """The header and JSON that precede a payload of ``payload_len`` bytes (sent after it, uncopied)."""
    blob = json.dumps(meta).encode()
    return _HEADER.pack(len(blob), payload_len) + blob


def _answer_parts(meta: Meta, arrays: list[np.ndarray]) -> list[bytes | memoryview]:
    """An answer as buffers to write in turn: the frame, then each array's bytes (not copied)."""
    arrays = [np.ascontiguousarray(a) for a in arrays]
    specs = [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]
    return [_frame({**meta, "_arrays": specs}, sum(a.nbytes for a in arrays)), *(memoryview(a).cast("B") for a in arrays)]


def _decode_answer(meta: Meta, payload: bytearray) -> tuple[Meta, list[np.ndarray]]:
    """Arrays over ``payload`` itself (a bytearray: writable, as torch.from_numpy wants)."""
    arrays, offset = [], 0
    for spec in meta.pop("_arrays"):
        dtype = np.dtype(spec["dtype"])
        count = int(np.prod(spec["shape"], dtype=np.int64))
        arrays.append(np.frombuffer(payload, dtype, count, offset).reshape(spec["shape"]))
        offset += count * dtype.itemsize
    return meta, arrays


# --------------------------------------------------------------------------- parent side


class _Expired(Exception):
    pass


class _Child:
    """One decode child process and the calling thread's channel to it."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.thread = threading.current_thread()
        """The thread it serves (and whose end kills the process)."""

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def _start(self) -> subprocess.Popen[bytes]:
        video_decoders()  # a bad MMCURATE_VIDEO_DECODER is the caller's error, not a dead child
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # this mmcurate, whatever is installed
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("MALLOC_ARENA_MAX", "2")  # per-thread malloc arenas would eat the memory limit
        proc = subprocess.Popen(
            [sys.executable, "-m", "mmcurate.decode.sandbox"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None
        os.set_blocking(proc.stdin.fileno(), False)
        os.set_blocking(proc.stdout.fileno(), False)
        self.proc = proc
        try:
            if _read_exact(proc.stdout.fileno(), 1, time.monotonic() + STARTUP_TIMEOUT_S) != _READY:
                raise EOFError
        except (_Expired, EOFError):
            code = self.kill()
            raise RuntimeError(f"mmcurate decode process did not start (exit status {code})") from None
        return proc

    def kill(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        proc.kill()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        return proc.wait()

    def call(self, op: str, data: bytes, params: Meta, timeout_s: float, memory_mb: int | None) -> tuple[Meta, list[np.ndarray]]:
        proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
        assert proc.stdin is not None and proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        try:
            _write_all(proc.stdin.fileno(), _frame({"op": op, "params": params, "memory_mb": memory_mb}, len(data)), deadline)
            _write_all(proc.stdin.fileno(), data, deadline)
            json_len, payload_len = _HEADER.unpack(_read_exact(proc.stdout.fileno(), _HEADER.size, deadline))
            meta = json.loads(_read_exact(proc.stdout.fileno(), json_len, deadline))
            payload = _read_exact(proc.stdout.fileno(), payload_len, deadline)
        except _Expired:
            self.kill()
            raise DecodeTimeout(f"decode_timeout: {op} took longer than {timeout_s:g} s (decoder killed)") from None
        except (EOFError, BrokenPipeError):
            code = self.kill()
            how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
            raise DecodeError(f"decode_error: decoder process died during {op} ({how})") from None
        if "error" in meta:
            raise DecodeError(meta["error"])
        return _decode_answer(meta, payload)


def _wait(fd: int, write: bool, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _Expired
    ready = select.select([], [fd], [], remaining)[1] if write else select.select([fd], [], [], remaining)[0]
    if not ready:
        raise _Expired


def _write_all(fd: int, data: bytes | memoryview, deadline: float) -> None:
    view = memoryview(data)
    while view:
        _wait(fd, True, deadline)
        try:
            view = view[os.write(fd, view[: 1 << 20]) :]
        except BlockingIOError:
            continue


def _read_exact(fd: int, n: int, deadline: float) -> bytearray:
    """``n`` bytes from ``fd``, read into one buffer (a large answer is held once, not twice)."""
    out = bytearray(n)
    view, got = memoryview(out), 0
    while got < n:
        _wait(fd, False, deadline)
        try:
            count = os.readv(fd, [view[got : got + (1 << 22)]])
        except BlockingIOError:
            continue
        if not count:
            raise EOFError
        got += count
    return out


_local = threading.local()
_children: list[_Child] = []
_children_lock = threading.Lock()


def _child() -> _Child:
    """The calling thread's decode child (Dask runs one task per thread)."""
    child = getattr(_local, "child", None)
    if child is None:
        child = _local.child = _Child()
        with _children_lock:
            # The kernel kills a child when the thread that started it ends (PR_SET_PDEATHSIG),
            # e.g. a short-lived preparing thread's; reap those, or each stays a zombie.
            for ended in [c for c in _children if not c.thread.is_alive()]:
                ended.kill()
                _children.remove(ended)
            _children.append(child)
    return child


@atexit.register
def _stop_children() -> None:
    with _children_lock:
        for child in _children:
            child.kill()


# --------------------------------------------------------------------------- child side


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def _read_stream(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n) if n else b""
    if len(data) != n:
        raise EOFError
    return data


def _skip_stream(stream: BinaryIO, n: int) -> None:
    while n:
        n -= len(_read_stream(stream, min(n, 1 << 20)))


def _limit_memory(memory_mb: int | None) -> None:
    """Let this process's address space grow by at most ``memory_mb`` MiB from now (None: no
    limit); the soft limit only, so the next request can set its own. Linux only (elsewhere
    there is no /proc/self/statm, and RLIMIT_AS is not enforced)."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    soft = hard
    if memory_mb is not None:
        try:
            with open("/proc/self/statm") as statm:
                size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return
        soft = size + (memory_mb << 20) if hard == resource.RLIM_INFINITY else min(hard, size + (memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


_OUT_OF_MEMORY = ("cannot allocate memory", "can't allocate memory", "bad_alloc", "out of memory")
"""What decoders' messages say when an allocation failed (FFmpeg's ENOMEM, torch, C++)."""


def _out_of_memory(request: Meta) -> str:
    limit = request["memory_mb"]
    return f"decode_error: {request['op']} " + (f"exceeded the decode memory limit ({limit} MiB)" if limit else "ran out of memory")


def _answer(request: Meta, data: bytes) -> list[bytes | memoryview]:
    """The answer to one request: the op's metadata and arrays, or its error."""
    op = request["op"]
    try:
        return _answer_parts(*_OPS[op](data, request["params"]))
    except DecodeError as exc:
        error = str(exc)
    except Exception as exc:  # a decoder bug is this member's error, not the child's end
        if isinstance(exc, MemoryError) or any(s in str(exc).lower() for s in _OUT_OF_MEMORY):
            error = _out_of_memory(request)
        else:
            error = f"decode_error: {type(exc).__name__}: {one_line(exc)}"
    return [_frame({"error": error}, 0)]


def _preload() -> None:
    """Import the decoders before the first deadline starts; one that is missing fails its ops
    with its own error, not every op."""
    for decoder in video_decoders():
        try:
            importlib.import_module("av" if decoder == "pyav" else decoder)
        except Exception:  # ImportError, or a library that cannot load
            pass


def _serve() -> None:
    """Child main loop: answer requests on stdin until it closes."""
    _die_with_parent()
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # C libraries printing to stdout cannot corrupt answers
    requests = sys.stdin.buffer
    _preload()
    answers.write(_READY)
    answers.flush()
    while True:
        try:
            json_len, payload_len = _HEADER.unpack(_read_stream(requests, _HEADER.size))
            request = json.loads(_read_stream(requests, json_len))
            _limit_memory(request["memory_mb"])
            try:
                parts = _answer(request, _read_stream(requests, payload_len))
            except MemoryError:  # the member alone is over the limit; read past it
                _skip_stream(requests, payload_len)
                parts = [_frame({"error": _out_of_memory(request)}, 0)]
        except EOFError:
            return
        for part in parts:
            answers.write(part)
        answers.flush()


if __name__ == "__main__":
    _serve()
