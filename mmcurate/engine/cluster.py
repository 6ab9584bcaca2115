"""Dask engine: start a LocalCluster or join a scheduler, and map tasks with a progress bar.

A local cluster can hold GPU workers beside the CPU ones: one process per CUDA device,
which sees only its device (``CUDA_VISIBLE_DEVICES``) and offers the Dask resource ``GPU``.
Tasks that ask for ``GPU`` run only there; other tasks run anywhere.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from dask.distributed import Client, LocalCluster, WorkerPlugin, as_completed
from tqdm import tqdm

from ..io.inputs import ShardRef, hash_identity

__all__ = ["ClusterError", "Failed", "TaskFailed", "connect", "cuda_device_count", "map_tasks", "offers", "per_task"]

RETRIES = 3
"""How many times a task that raised an I/O error (``OSError``) runs again."""
BACKOFF_S = 1.0
"""Seconds before the first retry; each further retry waits twice as long."""


class ClusterError(RuntimeError):
    """The local Dask cluster could not be started."""


class TaskFailed(RuntimeError):
    """A task failed for a reason other than bad sample data (which is recorded, not raised)."""


@dataclass(frozen=True)
class Failed:
    """Stands in :func:`map_tasks`' results for an item that still failed after its retries."""

    error: str


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def cuda_device_count() -> int:
    """CUDA devices this machine has (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def offers(client: Client, resources: dict[str, float] | None) -> bool:
    """Whether some worker of ``client``'s cluster offers all of ``resources`` (False for none)."""
    if not resources:
        return False
    for worker in client.scheduler_info(n_workers=-1)["workers"].values():
        have = worker.get("resources", {})
        if all(have.get(name, 0) >= amount for name, amount in resources.items()):
            return True
    return False


def _add_gpu_workers(cluster: LocalCluster, gpus: int) -> None:
    """Add one worker process per CUDA device, offering resource ``GPU`` and seeing only its device."""
    template = next(iter(cluster.worker_spec.values()))
    for device in range(gpus):
        spec = copy.deepcopy(template)
        spec["options"].update(nthreads=1, resources={"GPU": 1}, env={"CUDA_VISIBLE_DEVICES": str(device)})
        cluster.worker_spec[f"gpu-{device}"] = spec
    cluster.scale(len(cluster.worker_spec))  # starts the specs just added, keeps the others


@contextlib.contextmanager
def connect(
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    client: Client | None = None,
    quiet: bool = False,
    gpus: int = 0,
) -> Iterator[Client]:
    """Yield a client: the one given, one joined to ``scheduler``, or a new LocalCluster's
    (``workers`` CPU workers plus ``gpus`` GPU workers)."""
    if client is not None:
        yield client
        return
    if scheduler:
        with Client(scheduler) as joined:
            _say(f"joined Dask scheduler {scheduler} ({len(joined.scheduler_info()['workers'])} workers)", quiet)
            yield joined
        return
    logging.getLogger("distributed").setLevel(logging.ERROR)
    n = workers or default_workers()
    with _workers_skip_main(), _local_cluster(n, threads_per_worker) as cluster, Client(cluster) as local:
        try:
            if quiet:
                local.register_plugin(_NoWarnings(), name="mmcurate-quiet")  # also on workers started later
            if gpus:
                _add_gpu_workers(cluster, gpus)
                local.wait_for_workers(n + gpus, timeout=120)
        except (OSError, TimeoutError) as exc:  # a worker died on the way up ("Stream is closed"), or never came
            raise ClusterError(f"the local Dask cluster lost a worker while starting ({type(exc).__name__}: {exc}); "
                               "re-run the same command to resume") from exc
        extra = f" + {gpus} GPU worker(s)" if gpus else ""
        _say(f"local Dask cluster: {n} workers x {threads_per_worker} threads{extra}; dashboard {local.dashboard_link}", quiet)
        yield local


@contextlib.contextmanager
def _workers_skip_main() -> Iterator[None]:
    """Worker processes started meanwhile (spawned, also when one is replaced) do not import the
    driver's ``__main__`` again, as they would not for ``python -c`` or a notebook: a script
    without an ``if __name__ == "__main__":`` guard would run once more in each (Dask's "Nanny
    failed to start"), and a script that imports torch would import it in each. What the script
    defines (an annotator class) still reaches the workers, pickled by value."""
    main = sys.modules.get("__main__")
    hidden = {k: main.__dict__.pop(k) for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    if main is not None and "__spec__" in hidden:
        main.__spec__ = None  # multiprocessing.spawn reads both: no spec name, no file, nothing to import
    try:
        yield
    finally:
        if main is not None:
            main.__dict__.update(hidden)


class _NoWarnings(WorkerPlugin):
    """Ignore Python warnings in the worker process (``quiet``: libraries' warnings, once per worker)."""

    def setup(self, worker: Any) -> None:
        warnings.simplefilter("ignore")


def _local_cluster(n: int, threads_per_worker: int, attempts: int = 2) -> LocalCluster:
    """A LocalCluster of ``n`` worker processes; started again once if a worker dies while
    starting, then :class:`ClusterError` with the cause. The dashboard takes port 8787, or
    silently another when that one is taken (the summary line gives its link)."""
    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
                return LocalCluster(
                    n_workers=n,
                    threads_per_worker=threads_per_worker,
                    processes=True,
                    dashboard_address=":8787",
                    silence_logs=logging.ERROR,
                )
        except RuntimeError as exc:  # "Nanny failed to start": a worker process died on the way up
            if attempt == attempts:
                raise ClusterError(f"the local Dask cluster did not start ({exc}); re-run the same command to resume") from exc
    raise AssertionError("unreachable")


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def _retrying(fn: Callable[[Any], Any], retries: int, backoff: float, item: Any) -> Any:
    """``fn(item)``, run again after an I/O error up to ``retries`` times, waiting longer each time."""
    attempt = 0
    while True:
        try:
            return fn(item)
        except OSError:
            if attempt == retries:
                raise
            time.sleep(backoff * 2**attempt)
            attempt += 1


def _run_chunk(fn: Callable[[Any], Any], retries: int, backoff: float, items: Sequence[Any]) -> list[Any]:
    """``fn`` over ``items`` in one task, each retried alone; an item that still fails gets a
    :class:`Failed` in its place and the others go on."""
    results: list[Any] = []
    for item in items:
        try:
            results.append(_retrying(fn, retries, backoff, item))
        except Exception as exc:
            results.append(Failed(f"{type(exc).__name__}: {exc}"))
    return results


def map_tasks(
    client: Client,
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    label: str,
    describe: Callable[[Any], str],
    quiet: bool = False,
    resources: dict[str, float] | None = None,
    keep_going: bool = False,
    per_task: int = 1,
) -> list[Any]:
    """Run ``fn`` on every item, in order, showing progress; with ``resources``, only on
    workers that offer them. A task that raises ``OSError`` is retried (:data:`RETRIES` times,
    with backoff); a worker that dies is replaced and its tasks rerun by Dask. With ``per_task``
    above 1, that many items run in one Dask task (each retried alone): fewer round trips to
    the scheduler where each item is quick.

    An item that still fails raises :class:`TaskFailed` and cancels the rest, or, with
    ``keep_going``, gets a :class:`Failed` in its place while every other item finishes.
    """
    chunks = [range(i, min(i + per_task, len(items))) for i in range(0, len(items), max(per_task, 1))]
    if per_task > 1:
        task = functools.partial(_run_chunk, fn, RETRIES, BACKOFF_S)
        futures = client.map(task, [[items[i] for i in chunk] for chunk in chunks], pure=False, resources=resources)
    else:
        task = functools.partial(_retrying, fn, RETRIES, BACKOFF_S)
        futures = client.map(task, items, pure=False, resources=resources)
    index = {f.key: chunk for f, chunk in zip(futures, chunks)}
    results: list[Any] = [None] * len(items)
    with tqdm(total=len(items), desc=label, unit="shard", disable=quiet, file=sys.stderr, leave=True) as bar:
        for future in as_completed(futures):
            chunk = index[future.key]
            try:
                got = future.result() if per_task > 1 else [future.result()]
            except Exception as exc:
                if not keep_going:
                    for other in futures:
                        other.cancel()
                    raise TaskFailed(f"{label} failed on {describe(items[chunk[0]])}: {type(exc).__name__}: {exc}") from exc
                got = [Failed(f"{type(exc).__name__}: {exc}")] * len(chunk)
            for i, result in zip(chunk, got):
                if per_task > 1 and isinstance(result, Failed) and not keep_going:
                    for other in futures:
                        other.cancel()
                    raise TaskFailed(f"{label} failed on {describe(items[i])}: {result.error}")
                results[i] = result
            bar.update(len(chunk))
    return results


def per_task(client: Client, items: int, tasks_per_worker: int = 2, most: int = 32) -> int:
    """Items per task (at most ``most``) so that ``items`` quick items make about
    ``tasks_per_worker`` tasks per worker."""
    workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    return max(1, min(most, -(-items // (workers * tasks_per_worker))))


def hash_unstamped(client: Client, shards: list[ShardRef], label: str, quiet: bool,
                   keep_going: bool = False) -> tuple[list[ShardRef], dict[str, str]]:
    """``shards``, those whose filesystem reports no change marker (ETag, mtime, version) with a
    hash of their content in their identity, hashed on the workers; ``(shards, failed)``, where
    ``failed`` (url -> error) holds the shards whose hashing still failed (with ``keep_going``;
    without it such a shard raises :class:`TaskFailed`)."""
    unstamped = [s for s in shards if s.unstamped]
    if not unstamped:
        return shards, {}
    hashed = map_tasks(client, hash_identity, unstamped, label, lambda s: s.url, quiet, keep_going=keep_going)
    by_url = {ref.url: new for ref, new in zip(unstamped, hashed)}
    failed = {url: new.error for url, new in by_url.items() if isinstance(new, Failed)}
    return [s if s.url in failed else by_url.get(s.url, s) for s in shards], failed
