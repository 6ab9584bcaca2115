"""A shared annotation cache across runs, decisions-only (dry) runs, and what a run says it reused."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mmcurate
from conftest import image_bytes, make_shard
from mmcurate.cli import main
from mmcurate.store.cache import NotACache, PartCache
from mmcurate.store.runstore import RunStore

DEFAULT_ZERO = {"image_info": 0, "caption_info": 0, "sha256": 0}


def _shards(tmp_path, n_shards=2):
    """Shards whose images are 40, 60, ... 140 px wide: each width threshold keeps a known number."""
    paths = []
    for s in range(n_shards):
        samples = [(f"s{s}-{i}", {"jpg": image_bytes(40 + 20 * i, 90, seed=10 * s + i), "txt": b"a caption here"}) for i in range(6)]
        paths.append(str(make_shard(tmp_path / "src" / f"{s:06d}.tar", samples)))
    return paths


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*"))}


def test_a_second_out_with_another_threshold_computes_nothing_from_a_shared_cache(tmp_path, client):
    shards, cache = _shards(tmp_path), tmp_path / "cache"

    def run(out, expr):
        return mmcurate.curate(shards, "default", tmp_path / out, client=client, quiet=True, cache=cache, overrides=[f"image_size.expr={expr}"])

    first = run("a", "width >= 64")
    assert first.computed == {"image_info": 12, "caption_info": 12, "sha256": 8} and first.kept == 8
    stricter = run("b", "width >= 100")
    assert stricter.computed == DEFAULT_ZERO
    assert stricter.reused == {"image_info": 12, "caption_info": 12, "sha256": 6} and stricter.kept == 6
    assert "image_info 0 computed, 12 reused" in stricter.summary()
    info = json.loads((tmp_path / "b" / "run.json").read_text())
    assert info["annotate"]["sha256"] == {"computed": 0, "reused": 6} and info["cache"] == str(cache)
    assert set(info["seconds"]) >= {"write", "decisions"}
    # looser: only the newly surviving samples are hashed, and published for the next run
    looser = run("c", "width >= 40")
    assert looser.computed == {"image_info": 0, "caption_info": 0, "sha256": 4} and looser.kept == 12
    assert run("d", "width >= 40").computed == DEFAULT_ZERO
    assert pq.read_table(tmp_path / "d" / "decisions.parquet").num_rows == 12


def test_without_a_cache_nothing_is_shared(tmp_path, client, monkeypatch):
    monkeypatch.delenv("MMCURATE_CACHE", raising=False)
    shards = _shards(tmp_path, 1)
    mmcurate.curate(shards, "default", tmp_path / "a", client=client, quiet=True)
    again = mmcurate.curate(shards, "default", tmp_path / "b", client=client, quiet=True)
    assert again.computed == {"image_info": 6, "caption_info": 6, "sha256": 4}
    monkeypatch.setenv("MMCURATE_CACHE", str(tmp_path / "env-cache"))
    mmcurate.curate(shards, "default", tmp_path / "c", client=client, quiet=True)
    assert mmcurate.curate(shards, "default", tmp_path / "d", client=client, quiet=True).computed == DEFAULT_ZERO


def test_racing_publishers_never_tear_or_lose_a_part(tmp_path):
    cache = PartCache(tmp_path / "cache")
    name = "000000-0123456789abcdef.parquet"
    sources = []
    for n in (1000, 2000):
        path = tmp_path / f"run{n}" / name
        path.parent.mkdir()
        pq.write_table(pa.table({"pos": list(range(n))}), path)
        sources.append(path)
    errors, seen = [], set()

    def publish(source):
        try:
            for _ in range(200):
                cache.publish("image_info", name, source)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    reader = RunStore(tmp_path / "reader")
    while any(t.is_alive() for t in threads):
        if cache.path("image_info", name).exists():
            table = reader.read_part_if_readable(cache.path("image_info", name))  # None if unreadable
            seen.add(table.num_rows if table is not None else None)
    for t in threads:
        t.join()
    assert not errors
    assert seen <= {1000, 2000} and pq.read_table(cache.path("image_info", name)).num_rows in (1000, 2000)
    assert [p.name for p in cache.parts()] == [name]
    assert not [p for p in (tmp_path / "cache" / "image_info").iterdir() if p.name != name]  # no temporary file left


def test_a_dry_run_then_a_write_run_computes_nothing_and_writes_the_direct_runs_bytes(tmp_path, client):
    shards = _shards(tmp_path)
    dry = mmcurate.curate(shards, "default", tmp_path / "run", client=client, quiet=True, write=False)
    assert dry.dry_run and dry.shards == [] and dry.kept == 8
    assert not (tmp_path / "run" / "shards").exists()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "dry-run"
    assert "dry run: no output shards written" in dry.summary()
    run = mmcurate.open_run(tmp_path / "run")
    assert run.counts() == (12, 8) and (tmp_path / "run" / "report.html").exists()
    assert main(["inspect", str(tmp_path / "run")]) == 0

    wet = mmcurate.curate(shards, "default", tmp_path / "run", client=client, quiet=True)
    assert wet.computed == DEFAULT_ZERO and not wet.dry_run
    direct = mmcurate.curate(shards, "default", tmp_path / "direct", client=client, quiet=True)
    assert (wet.kept, wet.funnel) == (direct.kept, direct.funnel)
    assert _files(tmp_path / "run" / "shards") == _files(tmp_path / "direct" / "shards") != {}
    assert _files(tmp_path / "run" / "decisions.parquet") == _files(tmp_path / "direct" / "decisions.parquet")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "complete"


def test_cache_ls_du_and_prune_delete_only_cache_parts(tmp_path, client, capsys):
    shards, cache = _shards(tmp_path, 1), tmp_path / "cache"
    mmcurate.curate(shards, "default", tmp_path / "keep", client=client, quiet=True, cache=cache, overrides=["image_size.expr=width >= 100"])
    mmcurate.curate(shards, "default", tmp_path / "gone", client=client, quiet=True, cache=cache)
    mine = [cache / "notes.txt", cache / "image_info" / "notes.txt", cache / "x-0123456789abcdef.parquet"]
    for path in mine:
        path.write_text("the user's own file")

    assert main(["cache", "ls", str(cache)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert {line.split("/")[0] for line in listed} == {"read", "image_info", "caption_info", "sha256"} and len(listed) == 4
    assert main(["cache", "du", str(cache)]) == 0
    assert "4 part(s)  total" in capsys.readouterr().out

    # "gone" hashed 4 samples where "keep" had 3: the 4-row part now in the cache is held only by "gone"
    shutil.rmtree(tmp_path / "gone")
    assert main(["cache", "prune", str(cache), "--unreferenced"]) == 0
    assert "deleted 1 part(s)" in capsys.readouterr().out
    assert {p.kind for p in PartCache(cache).parts()} == {"read", "image_info", "caption_info"}
    old = time.time() - 10 * 86400
    os.utime(cache / "read" / next(p.name for p in PartCache(cache).parts() if p.kind == "read"), (old, old))
    assert main(["cache", "prune", str(cache), "--older-than", "5"]) == 0
    assert {p.kind for p in PartCache(cache).parts()} == {"image_info", "caption_info"}
    assert all(path.read_text() == "the user's own file" for path in mine)
    # a run whose parts were pruned from the cache still reads back
    assert mmcurate.open_run(tmp_path / "keep").counts() == (6, 3)


def test_prune_refuses_a_folder_that_is_not_a_cache(tmp_path, capsys):
    folder = tmp_path / "data" / "image_info"
    folder.mkdir(parents=True)
    (folder / "x-0123456789abcdef.parquet").write_bytes(b"precious")
    with pytest.raises(NotACache):
        PartCache(tmp_path / "data").prune(older_than_days=0)
    assert main(["cache", "prune", str(tmp_path / "data"), "--older-than", "0"]) == 2
    assert "not an mmcurate cache" in capsys.readouterr().err
    assert (folder / "x-0123456789abcdef.parquet").read_bytes() == b"precious"


def test_the_command_line_dry_runs_shares_a_cache_and_says_what_it_reused(tmp_path, client, capsys):
    shards, out, cache = _shards(tmp_path, 1), str(tmp_path / "run"), str(tmp_path / "cache")
    args = ["filter", *shards, "--recipe", "default", "--out", out, "--cache", cache, "--scheduler", client.scheduler.address]
    assert main([*args, "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert "dry run: no output shards written" in said and "annotation rows: image_info 6 computed, 0 reused;" in said
    assert main(["inspect", out]) == 0 and "status dry-run" in capsys.readouterr().out
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "1 output shard(s)" in said and "image_info 0 computed, 6 reused; caption_info 0 computed, 6 reused; sha256 0 computed, 4 reused" in said
    assert "time: image_info, caption_info, image_size, caption, sha256 " in said


def test_a_cache_that_cannot_take_a_part_never_fails_the_run(tmp_path, client, caplog):
    shards, cache = _shards(tmp_path, 1), tmp_path / "cache"
    mmcurate.curate(shards, "default", tmp_path / "a", client=client, quiet=True, cache=cache)
    shutil.rmtree(cache / "sha256")
    (cache / "sha256").write_text("not a folder")  # the cache cannot store sha256 parts
    looser = mmcurate.curate(shards, "default", tmp_path / "b", client=client, quiet=True, cache=cache, overrides=["image_size.expr=width >= 40"])
    assert looser.computed == {"image_info": 0, "caption_info": 0, "sha256": 6} and looser.kept == 6 and looser.complete
    assert (cache / "sha256").read_text() == "not a folder"
