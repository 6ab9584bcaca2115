"""Real faulty inputs for tests: a ``flaky://`` fsspec filesystem and local HTTP servers.

``flaky://PATH`` reads the local file ``PATH``; while ``PATH.faults`` (JSON ``{"after": N,
"times": K, "fault": F}``) says so, a read that reaches byte N raises ``ConnectionResetError``
(F ``reset``) or ends the stream there (F ``eof``: a short read), counting one of the K down. The state lives on disk, so it holds across Dask worker processes;
:class:`RegisterFlaky` registers the protocol in every worker, present and future.
"""

from __future__ import annotations

import functools
import http.server
import json
import ssl
import threading
from pathlib import Path
from typing import Any

import fsspec
from distributed.diagnostics.plugin import WorkerPlugin
from fsspec.implementations.local import LocalFileSystem


def set_faults(path: Path, after: int, times: int, fault: str = "reset") -> None:
    """Make the next ``times`` reads of ``flaky://path`` fail once they reach byte ``after``."""
    Path(f"{path}.faults").write_text(json.dumps({"after": after, "times": times, "fault": fault}))


def faults_left(path: Path) -> int:
    spec = Path(f"{path}.faults")
    return json.loads(spec.read_text())["times"] if spec.exists() else 0


class _FlakyFile:
    def __init__(self, fh: Any, spec: Path):
        self.fh, self.spec, self.ended = fh, spec, False

    def read(self, size: int = -1) -> bytes:
        if self.ended:
            return b""
        pos = self.fh.tell()
        data = self.fh.read(size)
        state = json.loads(self.spec.read_text())
        if pos + len(data) > state["after"] and state["times"] > 0:
            state["times"] -= 1
            self.spec.write_text(json.dumps(state))
            if state["fault"] == "reset":
                raise ConnectionResetError(104, "Connection reset by peer (flaky test filesystem)")
            self.ended = True
            return data[: max(0, state["after"] - pos)]
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)

    def __enter__(self) -> "_FlakyFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.fh.close()


class FlakyFileSystem(LocalFileSystem):
    protocol = ("flaky",)

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        path = str(path)
        return super()._strip_protocol(path[len("flaky://") :] if path.startswith("flaky://") else path)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        fh = super()._open(path, mode, **kwargs)
        spec = Path(f"{self._strip_protocol(path)}.faults")
        if "r" in mode and spec.exists():
            return _FlakyFile(fh, spec)
        return fh


def register() -> None:
    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)


class RegisterFlaky(WorkerPlugin):
    """Registers ``flaky://`` in each Dask worker."""

    def setup(self, worker: Any) -> None:
        register()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Plain ``http.server`` (no Range support), optionally without ``Last-Modified``, and
    cutting the connection mid-body for the first ``cuts[name]`` GETs of a file."""

    last_modified = True
    cuts: dict[str, int] = {}

    def send_header(self, keyword: str, value: str) -> None:
        if keyword != "Last-Modified" or self.last_modified:
            super().send_header(keyword, value)

    def copyfile(self, source: Any, outputfile: Any) -> None:
        name = self.path.lstrip("/")
        if self.cuts.get(name, 0) > 0:
            self.cuts[name] -= 1
            data = source.read()
            outputfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        super().copyfile(source, outputfile)

    def log_message(self, *args: Any) -> None:
        pass


class _Quiet(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that stops reading after the tar's end marker is no error


class Server:
    """A threaded HTTP server on 127.0.0.1 serving ``root``; HTTPS with ``tls`` (a server context)."""

    def __init__(self, root: Path, last_modified: bool = True, tls: ssl.SSLContext | None = None):
        handler = type("Handler", (_Handler,), {"last_modified": last_modified, "cuts": {}})
        self.cuts: dict[str, int] = handler.cuts
        self.httpd = _Quiet(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self) -> "Server":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
