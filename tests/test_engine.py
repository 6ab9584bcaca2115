"""The Dask engine: an external scheduler and workers, and a worker dying mid-task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import pyarrow as pa
import pytest

import mmcurate
from conftest import make_shard, simple_samples, wait_for
from mmcurate import annotators
from mmcurate.annotators import Annotator


@pytest.fixture
def external_cluster(tmp_path):
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1."""
    info = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    scheduler = subprocess.Popen(
        dask + ["--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(info)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs = [scheduler]
    try:
        wait_for(info)
        address = json.loads(info.read_text())["address"]
        worker_cmd = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"]
        procs += [subprocess.Popen(worker_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
        from dask.distributed import Client

        with Client(address) as c:
            c.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.timeout(180)
def test_cli_runs_on_an_existing_scheduler(tmp_path, external_cluster):
    src = tmp_path / "src"
    shards = [str(make_shard(src / f"{i:06d}.tar", simple_samples(f"s{i}-", 5, seed=i))) for i in range(3)]
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", "filter", *shards, "--recipe", "default", "--out", str(out), "--scheduler", external_cluster],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"joined Dask scheduler {external_cluster} (2 workers)" in proc.stderr
    assert "15 samples in, 15 kept, 0 dropped" in proc.stdout
    assert mmcurate.open_run(out).decisions.num_rows == 15


@dataclass(frozen=True)
class DiesOnceConfig:
    marker: str = ""


class DiesOnce(Annotator):
    """Kills its worker process the first time it runs (a marker file remembers)."""

    name = "dies_once"
    Config = DiesOnceConfig
    columns = {"survived": pa.bool_()}

    def annotate(self, batch):
        if not os.path.exists(self.config.marker):
            Path(self.config.marker).write_text(str(os.getpid()))
            os._exit(1)
        return [{"survived": True} for _ in batch]


@pytest.mark.timeout(180)
def test_a_worker_dying_mid_task_is_retried_with_the_same_result(tmp_path, client):
    import test_engine

    cloudpickle.register_pickle_by_value(test_engine)  # workers need not import the test module
    annotators.register(DiesOnce)
    marker = tmp_path / "died"

    def recipe(path):
        steps = [{"annotate": "image_info"}, {"annotate": "dies_once", "marker": str(path)}, {"filter": "survived"}]
        return mmcurate.Recipe.from_dict({"name": "dies", "steps": steps})

    src = tmp_path / "src"
    shards = [str(make_shard(src / f"{i:06d}.tar", simple_samples(f"s{i}-", 4, seed=i))) for i in range(3)]
    clean = tmp_path / "never-dies"
    clean.write_text("")
    result = mmcurate.curate(shards, recipe(marker), tmp_path / "run", client=client, quiet=True)
    assert marker.exists(), "the worker was never killed"
    assert int(marker.read_text()) not in client.run(os.getpid).values()
    reference = mmcurate.curate(shards, recipe(clean), tmp_path / "reference", client=client, quiet=True)
    assert result.kept == reference.kept == 12
    assert [p.read_bytes() for p in result.shards] == [p.read_bytes() for p in reference.shards]


class BatchBytes(Annotator):
    """Records the bytes of the samples each annotate() call holds."""

    name = "batch_bytes"
    needs_pixels = False
    columns = {"n": pa.int32()}
    calls: list[int] = []

    def annotate(self, batch):
        BatchBytes.calls.append(sum(v.sample.nbytes for v in batch))
        return [{"n": len(batch)} for _ in batch]


def test_a_batch_of_large_samples_ends_at_the_byte_budget(tmp_path, monkeypatch):
    """However many samples an annotator asks for per call (CLIP asks for thousands), a shard
    task holds at most about BATCH_BYTES of sample bytes at once: large video members stay flat."""
    from mmcurate.engine import shard_task
    from mmcurate.io.inputs import resolve_inputs
    from mmcurate.engine.plan import build_plan

    annotators.register(BatchBytes)
    monkeypatch.setattr(shard_task, "BATCH_BYTES", 300_000)
    samples = [(f"v{i}", {"mp4": os.urandom(100_000), "txt": b"a clip"}) for i in range(10)]
    (shard,) = resolve_inputs(str(make_shard(tmp_path / "000000.tar", samples)))
    recipe = mmcurate.Recipe.from_dict({"name": "t", "modalities": {"video": ["mp4"], "text": ["txt"]}, "steps": [{"annotate": "batch_bytes"}]})
    (group,) = build_plan(recipe).stages
    BatchBytes.calls.clear()
    task = shard_task.GroupTask(shard, str(tmp_path / "run"), dict(recipe.modalities), group.steps, batch_size=1000)
    result = shard_task.run_group(task)
    assert result.summary.samples == result.summary.kept == 10
    assert BatchBytes.calls == [300_018] * 3 + [100_006]  # 3 samples (bytes + captions) per call, then the last one


SCRIPT_WITHOUT_GUARD = '''
import os
import pyarrow as pa
import mmcurate
from mmcurate import annotators

with open("ran.txt", "a") as f:  # one line per time this module runs
    f.write(f"{os.getpid()}\\n")


@annotators.register
class Pid(annotators.Annotator):  # defined in the script itself: reaches the workers by value
    name = "test_worker_pid"
    columns = {"worker_pid": pa.int64()}

    def annotate_one(self, sample):
        return {"worker_pid": os.getpid()}


recipe = mmcurate.Recipe.load("default").with_step({"annotate": "test_worker_pid"}, after="image_info")
result = mmcurate.curate("shard.tar", recipe, "run", workers=2, quiet=True)
print(result.kept, sorted({r["worker_pid"] for r in mmcurate.open_run("run").annotations().to_pylist()}))
'''


def test_a_script_without_a_main_guard_runs_once_and_its_annotator_runs_on_the_workers(tmp_path):
    """The README's example pasted into a file, with no ``if __name__ == "__main__":``: the local
    cluster's worker processes do not run the script again (no "Nanny failed to start", no second
    import of what it imports), and an annotator the script defines still runs on them."""
    make_shard(tmp_path / "shard.tar", simple_samples("k", 6))
    (tmp_path / "script.py").write_text(SCRIPT_WITHOUT_GUARD)
    proc = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len((tmp_path / "ran.txt").read_text().split()) == 1  # only the driver ran the script
    kept, pids = proc.stdout.split(" ", 1)
    assert int(kept) == 6 and str(os.getpid()) not in pids and (tmp_path / "run" / "shards" / "curated-000000.tar").exists()
