"""docs/api.md: every ``python`` block runs as written, in order, from a copy of the repository layout."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO


def test_api_examples_run_as_written(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "api.md").read_text(), flags=re.S)
    assert len(blocks) >= 8
    (tmp_path / "shards").symlink_to(REPO / "shards")
    (tmp_path / "runs").mkdir()
    # run with -c, like an interactive session (test_engine runs a script file without a main guard)
    proc = subprocess.run([sys.executable, "-c", "\n".join(blocks)], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "200 samples in" in proc.stdout and "rows computed;" in proc.stdout
    assert (tmp_path / "runs" / "api-demo" / "report.html").exists() and (tmp_path / "runs" / "api-demo-small.html").exists()
