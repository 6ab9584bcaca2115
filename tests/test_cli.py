"""The ``mmcurate`` command on the demo shards, and its errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from conftest import DEMO_SHARDS, REPO
from mmcurate.cli import main

DEMO = str(REPO / "shards" / "demo-{000000..000003}.tar")


def _mmcurate(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mmcurate.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    proc = _mmcurate("filter", DEMO, "--recipe", "default", "--out", str(out), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_demo_shards_are_committed_and_small():
    assert len(DEMO_SHARDS) == 4
    assert sum(p.stat().st_size for p in DEMO_SHARDS) < 4_000_000


def test_readme_command_prints_the_funnel_where_every_step_acts(demo_run):
    _, proc = demo_run
    assert "200 samples in, 174 kept, 26 dropped" in proc.stdout
    rows = [line for line in proc.stdout.splitlines()[2:] if len(line.split()) > 3 and line.split()[1].isdigit()]
    lines = {line.split()[0]: line for line in rows}
    assert "decode_error 4" in lines["image_info"] and "missing_image 1" in lines["image_info"]
    assert "fails width >= 64" in lines["image_size"] and "fails aspect_ratio <= 4" in lines["image_size"]
    assert "fails caption_valid_utf8 3" in lines["caption"] and "fails caption_words >= 1 5" in lines["caption"]
    assert "duplicate_of 6" in lines["dedup_exact"]
    assert "dedup_exact (exact): 6 removed in 5 duplicate cluster(s)" in proc.stdout
    assert "cluster of 3: kept 000000010; dropped 000001002, 000003045" in proc.stdout
    assert "dashboard" in proc.stderr and "stage 1/2" in proc.stderr  # where to watch, and progress


def test_inspect_shows_funnel_counts_and_top_reasons(demo_run):
    out, _ = demo_run
    proc = _mmcurate("inspect", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "200 samples in, 174 kept, 26 dropped" in proc.stdout
    assert "top drop reasons:" in proc.stdout
    assert "decode_error: not a recognised image format" in proc.stdout
    # the 6 exact duplicates of 5 kept samples: one line for the kind, not one per kept key
    assert "       6  duplicate_of:KEY (of 5 kept sample(s))" in proc.stdout and "duplicate_of:0" not in proc.stdout


def test_datacomp_basic_removes_more_than_default(tmp_path):
    proc = _mmcurate("filter", DEMO, "--recipe", "datacomp-basic", "--out", str(tmp_path / "dc"), "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    kept = int(proc.stdout.split(" kept")[0].split(", ")[-1])
    assert kept < 174
    assert "fails width >= 200" in proc.stdout or "fails height >= 200" in proc.stdout


def test_help_teaches_the_commands():
    proc = _mmcurate("filter", "--help")
    assert proc.returncode == 0
    for flag in ("--recipe", "--out", "--set", "--scheduler", "--workers", "--overwrite", "examples:"):
        assert flag in proc.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["filter", "nope/*.tar", "--recipe", "default", "--out", "x"], "nope/*.tar: no shard matches"),
        (["filter", DEMO, "--recipe", "nosuch", "--out", "x"], "nosuch: no such recipe"),
        (["filter", DEMO, "--recipe", "default", "--out", "x", "--set", "image_size.expr=width >"], "step 3 (image_size)"),
        (["inspect", "nowhere"], "not an mmcurate run directory"),
    ],
)
def test_errors_are_one_clear_line(tmp_path, capsys, args, message):
    args = [str(tmp_path / a) if a == "x" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmcurate: error:") and message in err
    assert not (tmp_path / "x").exists()  # nothing written before the inputs and recipe are valid


def test_near_dup_recipe_finds_the_planted_near_duplicates(tmp_path):
    proc = _mmcurate("filter", DEMO, "--recipe", "near-dup", "--out", str(tmp_path / "nd"), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "200 samples in, 170 kept, 30 dropped" in proc.stdout
    assert "dedup_phash (phash): 4 removed in 4 duplicate cluster(s)" in proc.stdout
    for source, copy in [("000000005", "000001048"), ("000001012", "000002045"), ("000002002", "000003040"), ("000003030", "000003048")]:
        pair = {source, copy}
        assert any(set(line.replace(";", "").replace(",", "").split()) >= pair for line in proc.stdout.splitlines() if "cluster of 2" in line)


def test_inspect_one_sample_shows_every_annotation_and_the_decision(demo_run):
    out, _ = demo_run
    proc = _mmcurate("inspect", str(out), "--sample", "000001002")
    assert proc.returncode == 0, proc.stderr
    assert "decision: dropped by dedup_exact: duplicate_of:000000010" in proc.stdout
    assert "000001002.jpg (" in proc.stdout
    for line in ("width: 305", "caption_words: 6", "caption_valid_utf8: True", "dup_cluster_size: 3"):
        assert line in proc.stdout
    kept = _mmcurate("inspect", str(out), "--sample", "000000010").stdout
    assert "decision: kept in curated-000000.tar" in kept
    broken = _mmcurate("inspect", str(out), "--sample", "000000012").stdout
    assert "decision: dropped by image_info: decode_error" in broken and "error: decode_error" in broken


def test_inspect_dropped_by_lists_keys_and_reasons(demo_run):
    out, _ = demo_run
    proc = _mmcurate("inspect", str(out), "--dropped-by", "image_size")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert len(rows) == 7 and all(len(r) == 3 for r in rows)
    assert ["000000017", "fails width >= 64"] == rows[0][:2] and rows[0][2].endswith("demo-000000.tar")
    assert sum(r[1] == "fails aspect_ratio <= 4" for r in rows) == 3


@pytest.mark.parametrize(
    "flag,value,message",
    [("--sample", "nosuchkey", "no input sample with key 'nosuchkey' (keys look like 000000000"), ("--dropped-by", "nostep", "no step 'nostep'; steps are read, image_info")],
)
def test_inspect_names_an_unknown_key_or_step(demo_run, capsys, flag, value, message):
    out, _ = demo_run
    assert main(["inspect", str(out), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmcurate: error:") and message in err


def test_report_command_rewrites_the_report(demo_run, tmp_path):
    out, proc = demo_run
    assert f"report: {out / 'report.html'}" in proc.stdout
    target = tmp_path / "again.html"
    assert main(["report", str(out), "--to", str(target), "--thumbs", "2"]) == 0
    assert "Duplicate clusters" in target.read_text()


def test_annotators_lists_one_whose_config_has_required_fields(capsys):
    from dataclasses import dataclass

    import pyarrow as pa

    from mmcurate import annotators

    @dataclass(frozen=True)
    class NeedsPath:
        path: str

    @annotators.register
    class ModelScore(annotators.Annotator):
        name = "test_needs_path"
        Config = NeedsPath
        columns = {"model_score": pa.float32()}

    assert main(["annotators"]) == 0
    out = capsys.readouterr().out
    assert "test_needs_path      registered in Python" in out and "columns: (depend on the step's settings)" in out
    assert "clip_tags" in out and "columns: tag_watermark, tag_text_heavy, tag_nsfw" in out


NOISY = """
import warnings

import pyarrow as pa

from mmcurate import annotators


@annotators.register
class Noisy(annotators.Annotator):
    name = "noisy"
    columns = {"noise": pa.int64()}

    def annotate_one(self, sample):
        warnings.warn("Converting a tensor with requires_grad=True to a scalar may lead to errors")
        return {"noise": 1}
"""


def test_quiet_says_only_what_must_be_said(tmp_path):
    """``--quiet`` with port 8787 taken and an annotator that warns on every worker (like torch's
    requires_grad line): stdout and stderr are empty but for the one input nothing could be read from."""
    (tmp_path / "noisy.py").write_text(NOISY)
    recipe = tmp_path / "noisy.yaml"
    recipe.write_text("name: noisy\nsteps:\n  - annotate: noisy\n  - filter: 'noise >= 1'\n")
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar " * 300)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)}
    code = "import sys, noisy; from mmcurate.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["filter", str(DEMO_SHARDS[0]), str(garbage), "--recipe", str(recipe), "--out", str(tmp_path / "run"), "--workers", "2"]
    with socket.socket() as dashboard:
        try:
            dashboard.bind(("127.0.0.1", 8787))
            dashboard.listen()
        except OSError:
            pass  # something else holds 8787 already: the same case
        quiet = subprocess.run([sys.executable, "-c", code, *args, "--quiet"], capture_output=True, text=True, timeout=300, env=env)
    assert quiet.returncode == 0 and quiet.stdout == ""
    (line,) = quiet.stderr.splitlines()
    assert line.startswith(f"mmcurate: warning: no sample of {garbage} could be read: read_error: {garbage}: not a readable tar file (")
    args[args.index("--out") + 1] = str(tmp_path / "loud")  # a fresh run: the annotator runs again
    loud = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, env=env)
    assert "requires_grad=True" in loud.stderr and "no sample of" in loud.stderr  # the same run without --quiet does warn


def test_inspect_sample_abbreviates_vectors():
    from mmcurate.cli import _short

    assert _short([0.123456] * 512) == "[0.1235, 0.1235, 0.1235, 0.1235, ... (512 values)]"  # an embedding
    assert _short([1, 2, 3]) == "[1, 2, 3]" and _short(0.5) == "0.5"
