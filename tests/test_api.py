"""The Python API: recipes built and edited in code, curate -> open_run round trip, and user
annotators (registered in Python, or by an installed package's entry point) treated like built-ins."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mmcurate
from conftest import DEMO_SHARDS, REPO
from mmcurate import annotators
from mmcurate.annotators import Annotator
from mmcurate.steps import annotators as builtin_registry
from mmcurate.decode import DecodeError

INPUTS = [str(p) for p in DEMO_SHARDS]


class RedFraction(Annotator):
    """Share of pixels whose red channel dominates: a user's own annotator, defined in a test module."""

    name = "test_red_fraction"
    columns = {"red_fraction": pa.float32()}

    def annotate_one(self, sample):
        try:
            img, _ = sample.image()
        except DecodeError as exc:
            return {"error": str(exc)}
        rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
        return {"red_fraction": float(np.mean((rgb[..., 0] > rgb[..., 1]) & (rgb[..., 0] > rgb[..., 2])))}


class RedFractionV2(RedFraction):
    version = "2"


def _red_recipe(threshold: float) -> mmcurate.Recipe:
    return (
        mmcurate.Recipe.load("default")
        .with_step({"annotate": "test_red_fraction"}, after="image_info")
        .with_step({"id": "not_too_red", "filter": f"red_fraction <= {threshold}"}, after="image_size")
    )


def test_recipe_built_in_python_round_trips_through_a_run(tmp_path, client):
    recipe = mmcurate.Recipe.from_dict(
        {
            "name": "python-made",
            "steps": [
                {"annotate": "image_info"},
                {"annotate": "caption_info"},
                {"id": "big", "filter": "width >= 200 and height >= 200"},
                {"annotate": "sha256"},
                {"dedup": "exact"},
            ],
            "output": {"samples_per_shard": 50},
        }
    ).replace_step("big", {"filter": "width >= 256"}).with_step({"id": "words", "filter": "caption_words >= 3"}, before="sha256")
    assert [s.id for s in recipe.steps] == ["image_info", "caption_info", "big", "words", "sha256", "dedup_exact"]
    saved = tmp_path / "recipe.yaml"
    saved.write_text(recipe.to_yaml())
    assert mmcurate.Recipe.load(saved) == recipe  # what a user saves from Python, the CLI reads back

    result = mmcurate.curate(INPUTS, recipe, tmp_path / "run", client=client, quiet=True)
    run = mmcurate.open_run(result.out)
    assert run.recipe == recipe and run.complete
    decisions = run.decisions.to_pylist()
    assert len(decisions) == result.samples_in == result.kept + result.dropped == 200
    kept = [d["key"] for d in decisions if d["kept"]]
    written = [m.name.split(".")[0] for p in result.shards for m in tarfile.open(p) if m.name.endswith(".txt")]
    assert written == kept and len(result.shards) == -(-len(kept) // 50)
    annotations = {(r["shard"], r["key"]): r for r in run.annotations().to_pylist()}
    assert all(annotations[(d["shard"], d["key"])]["width"] >= 256 for d in decisions if d["kept"])
    assert {d["reason"] for d in decisions if d["step"] == "big"} == {"fails width >= 256"}
    assert [c.step for c in run.funnel()] == ["read", "image_info", "caption_info", "big", "words", "sha256", "dedup_exact"]


def test_recipe_edits_are_validated_and_name_the_step():
    recipe = mmcurate.Recipe.load("default")
    with pytest.raises(mmcurate.RecipeError, match="no step 'nope'; steps are image_info"):
        recipe.without_step("nope")
    with pytest.raises(mmcurate.RecipeError, match=r"\(edited\): step 2 \(image_size\): .*width"):
        recipe.without_step("image_info")
    with pytest.raises(mmcurate.RecipeError, match="unknown annotator 'nosuch'"):
        recipe.with_step({"annotate": "nosuch"})


def test_annotator_registered_in_python_is_cached_fingerprinted_and_accounted(tmp_path, client):
    annotators.register(RedFraction)
    try:
        out = tmp_path / "run"
        first = mmcurate.curate(INPUTS, _red_recipe(0.5), out, client=client, quiet=True)
        assert first.computed["test_red_fraction"] == 195  # every sample that decoded (5 did not)
        run = mmcurate.open_run(out)
        values = {r["key"]: r["red_fraction"] for r in run.annotations().to_pylist() if r.get("red_fraction") is not None}
        decisions = run.decisions.to_pylist()
        reached = [d["key"] for d in decisions if d["step"] not in ("read", "image_info", "image_size")]
        dropped = sorted(d["key"] for d in decisions if d["step"] == "not_too_red")
        assert dropped == sorted(k for k in reached if values[k] > 0.5) and dropped
        assert {d["reason"] for d in decisions if d["step"] == "not_too_red"} == {"fails red_fraction <= 0.5"}
        assert first.samples_in == first.kept + first.dropped
        note = json.loads(next(m for p in first.shards for m in _members(p) if m[0].endswith(".mmcurate.json"))[1])
        assert 0 <= note["annotations"]["red_fraction"] <= 0.5
        fingerprint = run.info["steps"]["test_red_fraction"]

        assert mmcurate.curate(INPUTS, _red_recipe(0.5), out, client=client, quiet=True).computed["test_red_fraction"] == 0
        looser = mmcurate.curate(INPUTS, _red_recipe(0.9), out, client=client, quiet=True, overwrite=True)
        assert looser.computed["test_red_fraction"] == 0 and looser.kept > first.kept

        annotators.register(RedFractionV2)  # a new version of the user's code: stored rows are stale
        bumped = mmcurate.curate(INPUTS, _red_recipe(0.5), out, client=client, quiet=True, overwrite=True)
        assert bumped.computed["test_red_fraction"] == 195 and bumped.kept == first.kept
        assert mmcurate.open_run(out).info["steps"]["test_red_fraction"] != fingerprint
    finally:
        builtin_registry._REGISTRY.pop("test_red_fraction", None)


def _members(path):
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


PLUGIN = '''"""A third-party annotator package: counts letters in the caption."""
from dataclasses import dataclass

import pyarrow as pa

from mmcurate.annotators import Annotator
from mmcurate.decode import DecodeError


@dataclass(frozen=True)
class Config:
    alphabet: str = "abcdefghijklmnopqrstuvwxyz"
    log: str = ""
    """Append each annotated key here (lets the test count computations across processes)."""


class CaptionLetters(Annotator):
    name = "caption_letters"
    Config = Config
    columns = {"caption_letters": pa.int32()}

    def annotate_one(self, sample):
        if self.config.log:
            with open(self.config.log, "a") as fh:
                fh.write(sample.key + "\\n")
        try:
            text = sample.require("text").decode("utf-8")
        except DecodeError as exc:
            return {"error": str(exc)}
        except UnicodeDecodeError:
            return {"error": "decode_error: caption is not UTF-8"}
        return {"caption_letters": sum(c in self.config.alphabet for c in text.lower())}
'''


def _wheel(folder: Path) -> Path:
    """Build ``mmcurate_letters-0.1.0-py3-none-any.whl`` by hand: a real wheel, no build backend needed."""
    info = "mmcurate_letters-0.1.0.dist-info"
    files = {
        "mmcurate_letters/__init__.py": PLUGIN.encode(),
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: mmcurate-letters\nVersion: 0.1.0\nRequires-Dist: mmcurate\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: mmcurate-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": b"[mmcurate.annotators]\ncaption_letters = mmcurate_letters:CaptionLetters\n",
    }
    record = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}" for name, data in files.items()]
    files[f"{info}/RECORD"] = ("\n".join(record + [f"{info}/RECORD,,"]) + "\n").encode()
    path = folder / "mmcurate_letters-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """The plugin pip-installed into a private target folder, on PYTHONPATH for the CLI and its Dask workers."""
    root = tmp_path_factory.mktemp("plugin")
    site = root / "site"
    wheel = _wheel(root)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    return root, env


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "mmcurate.cli", *args], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


def test_entry_point_annotator_from_an_installed_package_is_a_first_class_step(plugin_env):
    root, env = plugin_env
    log = root / "computed.log"
    listed = _cli(env, "annotators")
    assert listed.returncode == 0 and "caption_letters" in listed.stdout and "mmcurate-letters 0.1.0" in listed.stdout
    recipe = root / "letters.yaml"
    recipe.write_text(
        "name: letters\nsteps:\n"
        f"  - annotate: caption_letters\n    log: {log}\n"
        "  - id: wordy\n    filter: caption_letters >= 25\n"
    )
    out = root / "run"
    args = ("filter", *INPUTS, "--recipe", str(recipe), "--out", str(out), "--workers", "2", "--quiet")
    first = _cli(env, *args)
    assert first.returncode == 0, first.stderr
    assert len(log.read_text().split()) == 200  # computed once per sample, in the Dask workers

    # read back without the plugin in this process (open_run would need it to validate the recipe)
    decisions = pq.read_table(out / "decisions.parquet").to_pylist()
    fingerprint = json.loads((out / "run.json").read_text())["steps"]["caption_letters"]
    captions = {}
    for shard in DEMO_SHARDS:
        with tarfile.open(shard) as tar:
            captions.update({m.name[:-4]: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".txt")})
    errors = {d["key"] for d in decisions if d["step"] == "caption_letters"}
    assert errors == {k for k, c in captions.items() if _not_utf8(c)} and len(errors) == 3
    assert {d["reason"] for d in decisions if d["step"] == "caption_letters"} == {"decode_error: caption is not UTF-8"}
    short = {d["key"] for d in decisions if d["step"] == "wordy"}
    assert short == {k for k, c in captions.items() if k not in errors and sum(ch.isascii() and ch.isalpha() for ch in c.decode().lower()) < 25}
    assert len(decisions) == 200 == sum(d["kept"] for d in decisions) + len(errors) + len(short)

    again = _cli(env, *args)  # resume: every row comes from the store
    assert again.returncode == 0 and len(log.read_text().split()) == 200
    stricter = _cli(env, *args, "--set", "wordy.expr=caption_letters >= 30", "--overwrite")
    assert stricter.returncode == 0 and len(log.read_text().split()) == 200
    vowels = _cli(env, *args, "--set", "caption_letters.alphabet=aeiou", "--overwrite")  # new config, new fingerprint
    assert vowels.returncode == 0 and len(log.read_text().split()) == 400
    assert json.loads((out / "run.json").read_text())["steps"]["caption_letters"] != fingerprint


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
