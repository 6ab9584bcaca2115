"""The docs notebooks run top to bottom on the demo shards (as a reader would run them), and are committed clean."""

from __future__ import annotations

import pytest

from conftest import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

DOCS = REPO / "docs"


def _execute(name: str, runs, monkeypatch) -> str:
    """Run docs/NAME with its runs written under ``runs``; return every text output."""
    monkeypatch.setenv("MMCURATE_RUNS", str(runs))
    notebook = nbformat.read(DOCS / name, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(DOCS)}}).execute()
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") + str(output.get("data", {}).get("text/plain", "")) + str(output.get("data", {}).get("text/html", "")))
    return "\n".join(texts)


@pytest.mark.parametrize("name", ["quickstart.ipynb", "browse.ipynb"])
def test_notebooks_are_committed_without_outputs(name):
    notebook = nbformat.read(DOCS / name, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_quickstart_goes_from_shards_to_a_curated_set(tmp_path, monkeypatch):
    text = _execute("quickstart.ipynb", tmp_path, monkeypatch)
    assert "200 samples in, " in text and "colorful " in text  # its own annotator and filter in the funnel
    assert "annotation rows computed: {'image_info': 0, 'colorfulness': 0, 'caption_info': 0, 'sha256': 0}" in text
    assert "samples streamed; the run kept" in text
    assert (tmp_path / "quickstart" / "report.html").exists()


def test_browse_shows_samples_sliders_and_clusters(tmp_path, monkeypatch):
    text = _execute("browse.ipynb", tmp_path, monkeypatch)
    assert "recipe 'default', 200 samples, 174 kept" in text
    assert text.count("data:image/jpeg;base64,") > 30  # thumbnails read from the tar shards
    assert "image_size: width >= 250 drops 82 (75 more, 0 fewer than the recipe's 64)" in text
    assert "dedup_exact: 5 clusters" in text and "duplicate_of:000000010" in text
