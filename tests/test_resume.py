"""The run directory as annotation store: resume, cheap re-decisions, crash safety, conflicts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

import mmcurate
from conftest import make_shard, simple_samples
from mmcurate.store import RunConflict


def _shards(tmp_path, n_shards=3, per_shard=10):
    src = tmp_path / "src"
    return [str(make_shard(src / f"{i:06d}.tar", simple_samples(f"s{i}-", per_shard, seed=i))) for i in range(n_shards)]


def _output_bytes(out):
    files = sorted((out / "shards").glob("*")) + [out / "decisions.parquet"]
    return {p.name: p.read_bytes() for p in files}


def test_rerunning_the_same_command_does_no_annotation_work(tmp_path, client):
    shards = _shards(tmp_path)
    first = mmcurate.curate(shards, "default", tmp_path / "run", client=client, quiet=True)
    assert first.computed == {"image_info": 30, "caption_info": 30, "sha256": 30}
    before = _output_bytes(tmp_path / "run")
    again = mmcurate.curate(shards, "default", tmp_path / "run", client=client, quiet=True)
    assert again.computed == {"image_info": 0, "caption_info": 0, "sha256": 0}
    assert _output_bytes(tmp_path / "run") == before


def test_a_new_threshold_recomputes_no_annotation(tmp_path, client):
    src = tmp_path / "src"
    from conftest import image_bytes

    samples = [(f"k{i}", {"jpg": image_bytes(40 + 20 * i, 100, seed=i), "txt": b"a caption here"}) for i in range(6)]
    shard = str(make_shard(src / "000000.tar", samples))
    out = tmp_path / "run"
    first = mmcurate.curate(shard, "default", out, client=client, quiet=True)
    assert first.kept == 4  # 40 and 60 px wide are under the default 64
    stricter = mmcurate.curate(
        shard, "default", out, client=client, quiet=True, overwrite=True, overrides=["image_size.expr=width >= 100"]
    )
    assert stricter.computed == {"image_info": 0, "caption_info": 0, "sha256": 0}
    assert stricter.kept == 3
    decisions = pq.read_table(out / "decisions.parquet").to_pylist()
    assert {d["key"] for d in decisions if d["reason"] == "fails width >= 100"} == {"k0", "k1", "k2"}


def test_a_different_run_in_the_same_directory_is_refused(tmp_path, client):
    shards = _shards(tmp_path, 1, 3)
    mmcurate.curate(shards, "default", tmp_path / "run", client=client, quiet=True)
    with pytest.raises(RunConflict, match="--overwrite"):
        mmcurate.curate(shards, "datacomp-basic", tmp_path / "run", client=client, quiet=True)
    other = tmp_path / "notarun"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(RunConflict, match="holds no mmcurate run"):
        mmcurate.curate(shards, "default", other, client=client, quiet=True)
    assert (other / "precious.txt").read_text() == "keep me"


def test_overwrite_replaces_the_run_and_reuses_matching_annotations(tmp_path, client):
    shards = _shards(tmp_path, 2, 4)
    mmcurate.curate(shards, "default", tmp_path / "run", client=client, quiet=True)
    result = mmcurate.curate(shards, "datacomp-basic", tmp_path / "run", client=client, quiet=True, overwrite=True)
    # datacomp-basic orders its annotators differently: their upstream differs, so they are recomputed.
    assert result.computed["caption_info"] == 8
    run = mmcurate.open_run(tmp_path / "run")
    assert run.recipe.name == "datacomp-basic"
    assert run.decisions.num_rows == 8


@pytest.mark.timeout(240)
def test_sigkill_mid_run_then_rerun_gives_identical_output(tmp_path):
    shards = _shards(tmp_path, n_shards=16, per_shard=60)
    reference = tmp_path / "reference"
    cmd = [sys.executable, "-m", "mmcurate.cli", "filter", *shards, "--recipe", "default", "--workers", "2", "--quiet"]
    subprocess.run(cmd + ["--out", str(reference)], check=True, timeout=180)

    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(out)], start_new_session=True)
    parts = out / "annotations" / "image_info"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (parts.exists() and any(parts.iterdir())):
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, mid-run
        proc.wait(timeout=30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the orphaned local workers
        except ProcessLookupError:
            pass
    assert not (out / "decisions.parquet").exists(), "the run finished before it could be killed"
    assert len(list(parts.iterdir())) < 16
    subprocess.run(cmd + ["--out", str(out)], check=True, timeout=180)
    assert _output_bytes(out) == _output_bytes(reference)
