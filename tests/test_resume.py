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
from mmcurate.store.runstore import RunConflict


def _shards(tmp_path, n_shards=3, per_shard=10):
    src = tmp_path / "src"
    return [str(make_shard(src / f"{i:06d}.tar", simple_samples(f"s{i}-", per_shard, seed=i))) for i in range(n_shards)]


def _output_bytes(out):
    files = sorted((out / "shards").glob("*")) + sorted((out / "decisions.parquet").glob("*"))  # decisions: a dataset
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
    first = mmcurate.curate(shards, "default", tmp_path / "run", client=client, quiet=True)
    (old_shard,) = first.shards
    # The default recipe with one more annotate step: its first three steps are unchanged.
    default = mmcurate.Recipe.load("default").to_dict()
    steps = default["steps"]
    steps.insert(len(steps) - 1, {"annotate": "phash"})
    recipe = mmcurate.Recipe.from_dict({**default, "name": "default-phash"})
    with pytest.raises(RunConflict):
        mmcurate.curate(shards, recipe, tmp_path / "run", client=client, quiet=True)
    result = mmcurate.curate(shards, recipe, tmp_path / "run", client=client, quiet=True, overwrite=True)
    assert result.computed == {"image_info": 0, "caption_info": 0, "sha256": 0, "phash": 8}
    run = mmcurate.open_run(tmp_path / "run")
    assert run.recipe.name == "default-phash"
    assert run.decisions.num_rows == 8
    assert result.shards == [old_shard] and result.kept == first.kept == 8  # rewritten by the new run
    mmcurate.curate(shards, recipe, tmp_path / "fresh", client=client, quiet=True)
    assert _output_bytes(tmp_path / "run") == _output_bytes(tmp_path / "fresh")


def _finished_parts(folder) -> list:
    """Stored parts (``.NAME.tmp`` files are writes in progress)."""
    return [p for p in folder.glob("*.parquet") if not p.name.startswith(".")] if folder.exists() else []


@pytest.mark.timeout(240)
def test_sigkill_mid_run_then_rerun_gives_identical_output(tmp_path, client):
    shards = _shards(tmp_path, n_shards=16, per_shard=60)
    reference = tmp_path / "reference"
    cmd = [sys.executable, "-m", "mmcurate.cli", "filter", *shards, "--recipe", "default", "--workers", "2", "--quiet"]
    subprocess.run(cmd + ["--out", str(reference)], check=True, timeout=180)

    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(out)], start_new_session=True)
    parts = out / "annotations" / "image_info"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not _finished_parts(parts):
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, mid-run
        proc.wait(timeout=30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the orphaned local workers
        except ProcessLookupError:
            pass
    assert not (out / "decisions.parquet").exists(), "the run finished before it could be killed"
    stored = _finished_parts(parts)
    assert 0 < len(stored) < 16
    reused = sum(pq.read_metadata(p).num_rows for p in stored)
    again = mmcurate.curate(shards, "default", out, client=client, quiet=True)
    assert again.computed["image_info"] == 16 * 60 - reused  # every stored row reused, the rest computed
    assert _output_bytes(out) == _output_bytes(reference)


def test_a_looser_threshold_computes_only_the_newly_surviving_rows(tmp_path, client):
    from conftest import image_bytes

    widths = [40, 60, 70, 80, 100, 120, 140]
    samples = [(f"k{i}", {"jpg": image_bytes(w, 100, seed=i), "txt": b"a caption here"}) for i, w in enumerate(widths)]
    shard = str(make_shard(tmp_path / "src" / "000000.tar", samples))
    out = tmp_path / "run"
    strict = mmcurate.curate(shard, "default", out, client=client, quiet=True, overrides=["image_size.expr=width >= 100"])
    assert strict.kept == 3 and strict.computed == {"image_info": 7, "caption_info": 7, "sha256": 3}
    looser = mmcurate.curate(shard, "default", out, client=client, quiet=True, overwrite=True)
    # 70 and 80 px wide now pass the default 64: sha256, after the filter, is computed for those two only.
    assert looser.kept == 5
    assert looser.computed == {"image_info": 0, "caption_info": 0, "sha256": 2}
    mmcurate.curate(shard, "default", tmp_path / "fresh", client=client, quiet=True)
    assert _output_bytes(out) == _output_bytes(tmp_path / "fresh")


def test_a_different_input_list_in_the_same_directory_is_refused_unless_overwrite(tmp_path, client):
    a, b, c = _shards(tmp_path, 3, 4)
    out = tmp_path / "run"
    mmcurate.curate([a, b], "default", out, client=client, quiet=True)
    before = _output_bytes(out)
    for other in ([a, b, c], [b, a], [a]):
        with pytest.raises(RunConflict):
            mmcurate.curate(other, "default", out, client=client, quiet=True)
        assert _output_bytes(out) == before  # the refused call changed nothing
    result = mmcurate.curate([a, b, c], "default", out, client=client, quiet=True, overwrite=True)
    assert result.samples_in == 12
    assert result.computed == {"image_info": 4, "caption_info": 4, "sha256": 4}  # only the new shard


def _stamps(out) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted((out / "shards").glob("*.tar"))}


def _index(out) -> list[tuple[str, int, int]]:
    import json

    entries = json.loads((out / "shards" / "index.json").read_text())["shardlist"]
    return [(e["url"], e["nsamples"], e["filesize"]) for e in entries]


def test_a_rerun_keeps_output_shards_whose_bytes_would_not_change(tmp_path, client):
    from conftest import image_bytes

    shards = _shards(tmp_path, 3, 4)  # 96 px wide images
    last = [(f"s9-{i:05d}", {"jpg": image_bytes(70 if i == 2 else 96, 80, seed=90 + i), "txt": b"a caption"}) for i in range(4)]
    shards[2] = str(make_shard(tmp_path / "src" / "000009.tar", last))
    out, sizes = tmp_path / "run", ["output.samples_per_shard=4"]
    first = mmcurate.curate(shards, "default", out, client=client, quiet=True, overrides=sizes)
    assert [p.name for p in first.shards] == ["curated-000000.tar", "curated-000001.tar", "curated-000002.tar"]
    stamps, index = _stamps(out), _index(out)

    mmcurate.curate(shards, "default", out, client=client, quiet=True, overrides=sizes)  # the same command again
    assert _stamps(out) == stamps and _index(out) == index  # not one shard rewritten

    stricter = [*sizes, "image_size.expr=width >= 80 and height >= 64"]  # drops one sample of the last input shard
    second = mmcurate.curate(shards, "default", out, client=client, quiet=True, overwrite=True, overrides=stricter)
    assert second.kept == 11
    now = _stamps(out)
    assert {n for n in now if now[n] == stamps[n]} == {"curated-000000.tar", "curated-000001.tar"}  # only the last rewritten
    mmcurate.curate(shards, "default", tmp_path / "fresh", client=client, quiet=True, overrides=stricter)
    assert _output_bytes(out) == _output_bytes(tmp_path / "fresh") and _index(out) == _index(tmp_path / "fresh")

    edited = out / "shards" / "curated-000000.tar"
    edited.write_bytes(edited.read_bytes()[:-1024])  # changed after the run: no longer what mmcurate wrote
    mmcurate.curate(shards, "default", out, client=client, quiet=True, overwrite=True, overrides=stricter)
    assert _output_bytes(out) == _output_bytes(tmp_path / "fresh")


def test_a_threshold_change_over_stored_rows_decides_as_a_fresh_run(tmp_path, client):
    from conftest import image_bytes

    samples = [(f"k{i}", {"jpg": image_bytes(40 + 10 * i, 100, seed=i), "txt": b"words here"}) for i in range(8)]
    samples[1] = ("k1", {"jpg": b"not a jpeg", "txt": b"a caption"})  # image_info's error
    samples[5] = ("k5", {"jpg": image_bytes(120, 100, seed=5), "txt": b""})  # no words
    samples[6] = ("k6", samples[7][1])  # an exact duplicate
    shard = str(make_shard(tmp_path / "src" / "000000.tar", samples))
    first = mmcurate.curate(shard, "default", tmp_path / "run", client=client, quiet=True)
    stricter = ["image_size.expr=width >= 70 and aspect_ratio <= 4"]
    again = mmcurate.curate(shard, "default", tmp_path / "run", client=client, quiet=True, overwrite=True, overrides=stricter)
    fresh = mmcurate.curate(shard, "default", tmp_path / "fresh", client=client, quiet=True, overrides=stricter)
    assert again.computed == dict.fromkeys(first.computed, 0) and again.reused == {"image_info": 8, "caption_info": 7, "sha256": 4}
    columns = ["key", "kept", "step", "reason"]
    decided = pq.read_table(tmp_path / "run" / "decisions.parquet", columns=columns)
    assert decided == pq.read_table(tmp_path / "fresh" / "decisions.parquet", columns=columns)
    assert {r["step"] for r in decided.to_pylist()} == {"image_info", "image_size", "caption", "dedup_exact", None}
