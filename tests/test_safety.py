"""Data safety: mmcurate deletes only what it wrote, writes only inside --out, one run per --out,
a damaged part is recomputed, and a failing disk gives one clear line."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mmcurate
from conftest import REPO, make_shard, simple_samples
from mmcurate.cli import main
from mmcurate.store.lock import RunLocked
from mmcurate.recipe import Recipe, RecipeError
from mmcurate.store.runstore import RunConflict, RunStore
from mmcurate.io.tarwrite import write_tar


def _shards(folder: Path, n_shards: int = 2, per_shard: int = 4) -> list[str]:
    return [str(make_shard(folder / f"{i:06d}.tar", simple_samples(f"s{i}-", per_shard, seed=i))) for i in range(n_shards)]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _outputs(out: Path) -> dict[str, bytes]:
    return {**_tree(out / "shards"), **_tree(out / "decisions.parquet")}


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_out_that_contains_the_inputs_is_refused_and_the_inputs_kept(tmp_path, client, overwrite):
    data = tmp_path / "data"
    shards = _shards(data / "shards")
    before = _tree(data)
    with pytest.raises(RunConflict, match="contains the input"):
        mmcurate.curate(shards[0], "default", data, client=client, quiet=True, overwrite=overwrite)
    (tmp_path / "link").symlink_to(data / "shards")
    with pytest.raises(RunConflict, match="contains the input"):  # the same directory, reached through a link
        mmcurate.curate(shards, "default", tmp_path / "link", client=client, quiet=True, overwrite=overwrite)
    assert _tree(data) == before


def test_overwrite_of_a_directory_that_holds_no_run_is_refused(tmp_path, client):
    shards = _shards(tmp_path / "src", 1, 2)
    out = tmp_path / "mine"
    (out / "shards").mkdir(parents=True)
    (out / "notes.txt").write_text("keep me")
    (out / "shards" / "curated-000000.tar").write_bytes(b"my own tar")
    with pytest.raises(RunConflict, match="holds no mmcurate run; choose a new or empty --out") as caught:
        mmcurate.curate(shards, "default", out, client=client, quiet=True, overwrite=True)
    assert "--overwrite" not in str(caught.value)
    assert _tree(out) == {"notes.txt": b"keep me", "shards/curated-000000.tar": b"my own tar"}  # no lock file left either


def test_a_users_files_in_out_survive_a_rerun_that_changes_the_output(tmp_path, client):
    shards = _shards(tmp_path / "src", 2, 4)
    out = tmp_path / "run"
    first = mmcurate.curate(shards, "default", out, client=client, quiet=True, overrides=["output.samples_per_shard=3"])
    assert [p.name for p in first.shards] == ["curated-000000.tar", "curated-000001.tar", "curated-000002.tar"]
    (out / "shards" / "curated-999999.tar").write_bytes(b"a shard the user keeps here")
    (out / "shards" / "notes.txt").write_text("mine")
    (out / "notes.txt").write_text("mine too")

    second = mmcurate.curate(shards, "default", out, client=client, quiet=True, overwrite=True, overrides=["output.prefix=train"])
    assert [p.name for p in second.shards] == ["train-000000.tar"]
    files = sorted(p.name for p in (out / "shards").iterdir())
    assert files == ["curated-999999.tar", "index.json", "notes.txt", "train-000000.tar"]
    assert (out / "shards" / "curated-999999.tar").read_bytes() == b"a shard the user keeps here"
    assert (out / "notes.txt").read_text() == "mine too"
    index = json.loads((out / "shards" / "index.json").read_text())
    assert [e["url"] for e in index["shardlist"]] == ["train-000000.tar"]


def test_leftovers_of_a_killed_write_are_cleared_and_nothing_else(tmp_path, client):
    shards = _shards(tmp_path / "src", 2, 4)
    out = tmp_path / "run"
    mmcurate.curate(shards, "default", out, client=client, quiet=True)
    before = _outputs(out)
    (out / "shards" / ".pieces").mkdir()
    (out / "shards" / ".pieces" / "curated-000000.tar.000001.piece").write_bytes(b"half a piece")
    (out / "shards" / ".pieces" / "mine.txt").write_text("mine")
    (out / "shards" / ".curated-000000.tar.0123abcd.tmp").write_bytes(b"half a shard")
    mmcurate.curate(shards, "default", out, client=client, quiet=True)
    assert _outputs(out) == {**before, ".pieces/mine.txt": b"mine"}


def test_a_file_mmcurate_did_not_write_is_never_written_over(tmp_path, client):
    shards = _shards(tmp_path / "src", 2, 4)
    out = tmp_path / "run"
    mmcurate.curate(shards, "default", out, client=client, quiet=True)
    theirs = out / "shards" / "curated-000001.tar"
    theirs.write_bytes(b"placed by the user")
    with pytest.raises(RunConflict, match=f"{theirs}: exists, and nothing shows mmcurate wrote it"):
        mmcurate.curate(shards, "default", out, client=client, quiet=True, overwrite=True, overrides=["output.samples_per_shard=4"])
    assert theirs.read_bytes() == b"placed by the user"


@pytest.mark.parametrize(
    "edit,field,step",
    [
        ({"output": {"prefix": "train/curated"}}, "'prefix'", "output"),
        ({"output": {"prefix": "../../in/data"}}, "'prefix'", "output"),
        ({"output": {"prefix": ".."}}, "'prefix'", "output"),
        ({"steps": [{"id": "../../escaped", "annotate": "image_info"}]}, "'id'", "step 1 (../../escaped)"),
        ({"steps": [{"id": "a/b", "annotate": "image_info"}]}, "'id'", "step 1 (a/b)"),
        ({"steps": [{"id": ".hidden", "annotate": "image_info"}]}, "'id'", "step 1 (.hidden)"),
    ],
)
def test_prefix_and_step_ids_that_are_paths_are_rejected_at_load(tmp_path, edit, field, step):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"name": "r", "steps": [{"annotate": "image_info"}], **edit}))
    with pytest.raises(RecipeError) as caught:
        Recipe.load(str(recipe))
    assert f"{recipe}: {step}: field {field}" in str(caught.value) and "plain name" in str(caught.value)


def test_a_path_prefix_given_with_set_is_rejected():
    with pytest.raises(RecipeError, match="field 'prefix'"):
        Recipe.load("default", ["output.prefix=../../in/data"])


_HOLD = "import sys; from mmcurate.store.runstore import RunStore\nwith RunStore(sys.argv[1]).lock():\n    print('held', flush=True); sys.stdin.read()"


def test_a_second_run_on_a_locked_out_fails_naming_the_holder(tmp_path, client):
    shards = _shards(tmp_path / "src", 1, 2)
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RunLocked) as caught:
            mmcurate.curate(shards, "default", out, client=client, quiet=True)
        assert f"pid {holder.pid} on host {socket.gethostname()}, started " in str(caught.value)
        assert not (out / "run.json").exists()
    finally:
        holder.communicate("", timeout=60)  # the holder ends and releases the lock
    assert mmcurate.curate(shards, "default", out, client=client, quiet=True).kept == 2
    assert not (out / ".mmcurate.store.lock").exists()


def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path, client, caplog):
    shards = _shards(tmp_path / "src", 1, 2)
    out = tmp_path / "run"
    mmcurate.curate(shards, "default", out, client=client, quiet=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00Z"}
    (out / ".mmcurate.store.lock").write_text(json.dumps(stale))
    again = mmcurate.curate(shards, "default", out, client=client, quiet=True)
    assert again.kept == 2
    assert f"taking over the lock of a run that no longer holds it (pid {dead.pid} on host" in caplog.text
    assert not (out / ".mmcurate.store.lock").exists()


def _cli(*args: str, fsize: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:  # a full disk: writes past ``fsize`` bytes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    # Under the limit Python must not write bytecode: it keeps a short write of a stale .pyc as
    # if whole, and every later import of that module fails ("marshal data too short").
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"} if fsize else None
    return subprocess.run(
        [sys.executable, "-m", "mmcurate.cli", *args], capture_output=True, text=True, timeout=300, cwd=REPO, env=env,
        preexec_fn=limit if fsize else None,
    )


def test_a_zero_byte_part_is_recomputed_with_a_warning_and_the_same_result(tmp_path):
    shards = _shards(tmp_path / "src", 2, 3)
    out = tmp_path / "run"
    args = ["filter", *shards, "--recipe", "default", "--out", str(out), "--workers", "1", "--quiet"]
    assert _cli(*args).returncode == 0
    before = _outputs(out)
    part = sorted((out / "annotations" / "image_info").glob("*.parquet"))[0]
    part.write_bytes(b"")  # what a crash on a filesystem without ordered writes can leave
    again = _cli(*args)
    assert again.returncode == 0, again.stderr
    assert f"mmcurate: warning: {part}: stored part unreadable (ArrowInvalid: " in again.stderr
    assert "recomputing it" in again.stderr
    assert _outputs(out) == before
    assert pq.read_table(part).num_rows == 3


def test_a_full_disk_is_one_clear_line_leaves_no_temp_files_and_resumes(tmp_path, client):
    shards = _shards(tmp_path / "src", 2, 4)
    out = tmp_path / "run"
    args = ["filter", *shards, "--recipe", "default", "--out", str(out), "--scheduler", client.scheduler.address, "--quiet"]
    full = _cli(*args, fsize=16_000)  # run.json fits; the 8-sample output shard does not
    assert full.returncode == 2
    assert full.stderr == f"mmcurate: error: {out / 'shards' / 'curated-000000.tar'}: File too large\n"
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not (out / ".mmcurate.store.lock").exists()
    resumed = _cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert mmcurate.open_run(out).info["status"] == "complete"


def test_an_out_under_a_regular_file_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    shard = _shards(tmp_path / "src", 1, 1)[0]
    assert main(["filter", shard, "--recipe", "default", "--out", str(tmp_path / "file" / "run")]) == 2
    assert capsys.readouterr().err == f"mmcurate: error: {tmp_path / 'file' / 'run'}: Not a directory\n"


def _fill_up(path: Path) -> None:
    """Write ``path`` past a 4 KiB file-size limit (a full disk): each writer must fail cleanly."""
    store = RunStore(path.parent)
    if path.suffix == ".parquet":
        store.write_rows(path, range(2000), [f"k{i}" for i in range(2000)], [{"n": i} for i in range(2000)], {"n": pa.int64()})
    elif path.suffix == ".json":
        store.save_run_info({"filler": "x" * 10_000})
    else:
        write_tar(path, [("k.bin", os.urandom(10_000))])


@pytest.mark.parametrize("name", ["part.parquet", "run.json", "out.tar"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"old")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(OSError) as caught:
            _fill_up(path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert caught.value.filename == str(path) and caught.value.strerror == "File too large"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert path.read_bytes() == b"old"
