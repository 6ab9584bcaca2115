"""A run directory on object storage: a real S3-compatible server (moto) on 127.0.0.1, and
``dask scheduler`` plus two ``dask worker`` processes that share no working directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
import webdataset as wds

import mmcurate
from conftest import DEMO_SHARDS, REPO, wait_for
from mmcurate.store.lock import LOCK_NAME, RunLocked
from mmcurate.store.runstore import RunStore

BUCKET = "mmcurate-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server process on 127.0.0.1 with a fresh bucket; the endpoint and dummy
    credentials go through the environment, the way a user points mmcurate (and its workers) at
    a store."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:  # not listening yet
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir(BUCKET)
        yield fs
    finally:
        server.kill()
        server.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def scheduler(s3, tmp_path_factory):
    """``dask scheduler`` and two ``dask worker`` processes, each in its own working directory."""
    base = tmp_path_factory.mktemp("objstore-cluster")
    info = base / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(info)],
            cwd=base,
            **quiet,
        )
    ]
    try:
        wait_for(info)
        address = json.loads(info.read_text())["address"]
        for i in range(2):
            cwd = base / f"worker-{i}"
            cwd.mkdir()
            worker = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-dashboard", "--no-nanny", "--host", "127.0.0.1"]
            procs.append(subprocess.Popen(worker + ["--local-directory", str(cwd)], cwd=cwd, **quiet))
        from dask.distributed import Client

        with Client(address) as c:
            c.wait_for_workers(2, timeout=60)
        yield address, [base / "worker-0", base / "worker-1"]
    finally:
        for p in procs:  # nothing of theirs needs a clean shutdown
            p.kill()
            p.wait()


def _objects(fs: fsspec.AbstractFileSystem, prefix: str) -> dict[str, bytes]:
    fs.invalidate_cache()
    return {path[len(prefix) + 1 :]: fs.cat_file(path) for path in fs.find(prefix)}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.cluster
@pytest.mark.timeout(240)
def test_a_run_on_s3_matches_a_local_run_and_resumes_without_a_shared_filesystem(s3, scheduler, tmp_path, monkeypatch):
    address, worker_dirs = scheduler
    monkeypatch.chdir(tmp_path)
    shards = [str(p) for p in DEMO_SHARDS]
    url = f"s3://{BUCKET}/run"
    local = mmcurate.curate(shards, "default", tmp_path / "local", scheduler=address, quiet=True)
    remote = mmcurate.curate(shards, "default", url, scheduler=address, quiet=True)

    assert (remote.samples_in, remote.kept, remote.funnel) == (local.samples_in, local.kept, local.funnel)
    stored = _objects(s3, f"{BUCKET}/run")
    here = _files(tmp_path / "local")
    outputs = sorted(name for name in here if name.startswith("shards/"))
    assert outputs == ["shards/curated-000000.tar", "shards/index.json"]
    for name in outputs:  # the curated set, byte for byte
        assert stored[name] == here[name], name
    decisions = sorted(name for name in here if name.startswith("decisions.parquet/"))
    assert decisions == sorted(name for name in stored if name.startswith("decisions.parquet/"))
    assert len(decisions) == len(shards) + 1  # one file per input shard and _shards.parquet
    for name in decisions:
        assert stored[name] == here[name], name
    assert sorted(n for n in stored if n.startswith("annotations/")) == sorted(n for n in here if n.startswith("annotations/"))
    assert b"<h1>mmcurate run:" in stored["report.html"]
    assert json.loads(stored["run.json"])["status"] == "complete"
    leftovers = [n for n in stored if n.endswith(".tmp") or ".pieces" in n or n.startswith("state/") or n == LOCK_NAME]
    assert not leftovers  # no temporary objects, pieces, state or lock remain
    for cwd in [tmp_path, *worker_dirs]:  # nothing of the run landed on a local disk
        assert not [p for p in cwd.rglob("*") if "s3:" in p.name or p.name in {"run.json", "decisions.parquet"} and "local" not in p.parts]

    run = mmcurate.open_run(url)
    assert str(run.root) == url
    assert run.counts() == (local.samples_in, local.kept)
    assert run.decisions.equals(pq.read_table(tmp_path / "local" / "decisions.parquet"))
    assert run.funnel() == mmcurate.open_run(tmp_path / "local").funnel()
    streamed = wds.WebDataset(shards, shardshuffle=False).compose(mmcurate.select(run=url))
    assert [s["__key__"] for s in streamed] == [r["key"] for r in run.decisions.to_pylist() if r["kept"]]

    again = mmcurate.curate(shards, "default", url, scheduler=address, quiet=True)
    assert again.computed and set(again.computed.values()) == {0}  # every stored part reused
    assert _objects(s3, f"{BUCKET}/run/shards") == {n.removeprefix("shards/"): here[n] for n in outputs}

    with RunStore(url).lock():  # another run holds the directory
        with pytest.raises(RunLocked) as caught:
            mmcurate.curate(shards, "default", url, scheduler=address, quiet=True)
    assert f"pid {os.getpid()} on host {socket.gethostname()}, started " in str(caught.value)
    assert not s3.exists(f"{BUCKET}/run/{LOCK_NAME}")


def test_a_lock_object_left_by_a_dead_process_is_taken_over_and_a_live_one_refuses(s3, caplog):
    url = f"s3://{BUCKET}/locks"
    lock = f"{BUCKET}/locks/{LOCK_NAME}"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    s3.pipe_file(lock, json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00Z", "renewed": time.time()}).encode())
    with RunStore(url).lock():
        assert json.loads(s3.cat_file(lock))["pid"] == os.getpid()
    assert f"taking over the lock of a run that no longer holds it (pid {dead.pid} on host" in caplog.text
    assert not s3.exists(lock)

    elsewhere = {"pid": 1, "host": "another-machine", "started": "2026-01-01T00:00:00Z", "renewed": time.time()}
    s3.pipe_file(lock, json.dumps(elsewhere).encode())
    with pytest.raises(RunLocked, match="pid 1 on host another-machine"):
        with RunStore(url).lock():
            pass
    assert json.loads(s3.cat_file(lock)) == elsewhere  # the live holder's lock is left alone

    with pytest.raises(OSError) as caught:  # the first request names what it was about
        with RunStore("s3://no-such-bucket/run").lock():
            pass
    assert caught.value.filename == f"s3://no-such-bucket/run/{LOCK_NAME}"
