"""How long a cold ``mmcurate filter`` takes to refuse a CLIP recipe whose weights are missing.

The promise: with the weights neither cached nor reachable, the CLI fails in a few seconds
(one quick probe of the hub, no download retries) and before it creates ``--out``. This runs
the CLI in a fresh Python process, as a user would, with an empty Hugging Face cache:

1. ``HF_HUB_OFFLINE=1`` (no network attempt at all);
2. the hub endpoint on a closed local port (one refused connection).

It prints the seconds each took and the first line of the message. Run from the repository root::

    python scripts/bench_cold_start.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    from conftest import make_shard, simple_samples

    with tempfile.TemporaryDirectory() as tmp:
        shard = make_shard(Path(tmp) / "000000.tar", simple_samples("k", 2))
        base = {**os.environ, "HF_HOME": f"{tmp}/hf", "XDG_CACHE_HOME": f"{tmp}/cache", "PYTHONPATH": str(REPO_ROOT)}
        cases = {
            "HF_HUB_OFFLINE=1": {"HF_HUB_OFFLINE": "1"},
            "hub unreachable": {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"},
        }
        for name, env in cases.items():
            start = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "mmcurate.cli", "filter", str(shard), "--recipe", "laion2b", "--out", f"{tmp}/run"],
                env={**base, **env}, capture_output=True, text=True, timeout=300,
            )
            elapsed = time.monotonic() - start
            print(f"{name:>18}: exit {proc.returncode} after {elapsed:.1f} s; --out created: {Path(tmp, 'run').exists()}")
            print(f"{'':>18}  {proc.stderr.strip().splitlines()[-1][:160] if proc.stderr.strip() else '(no message)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
