"""How long ``curate()`` takes from a script that imports torch, beside a bare script.

A no-op rerun (everything stored) of the demo shards with the default recipe and 2 local
workers, from three script files run as a user would (``python script.py``): a bare one, one
that imports torch first (a training script), and the README's example pasted with no
``if __name__ == "__main__":`` guard. Each runs once to do the work, then 3 more times; it
prints the best seconds spent in ``curate()`` (cluster start, the run, cluster close) and for
the whole process (which includes the script's own imports). Run from the repository root::

    python scripts/bench_script_start.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BODY = """t = time.perf_counter()
result = mmcurate.curate("shards/demo-{000000..000003}.tar", "default", "runs/NAME", workers=2, quiet=True)
print(time.perf_counter() - t)
"""
IMPORTS = "import time\nimport mmcurate\n"
TORCH = "import torch  # noqa: F401  (what a training script imports)\n"
GUARDED = IMPORTS + 'if __name__ == "__main__":\n' + "".join(f"    {line}\n" for line in BODY.splitlines())
SCRIPTS = {
    "bare": GUARDED.replace("NAME", "bare"),
    "imports torch": TORCH + GUARDED.replace("NAME", "torch"),
    "imports torch, no main guard": TORCH + IMPORTS + BODY.replace("NAME", "noguard"),
}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "shards").symlink_to(REPO_ROOT / "shards")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)}
        for label, text in SCRIPTS.items():
            script = Path(tmp) / "script.py"
            script.write_text(text)
            subprocess.run([sys.executable, str(script)], cwd=tmp, env=env, check=True, capture_output=True)
            inner, outer = [], []
            for _ in range(3):
                start = time.perf_counter()
                proc = subprocess.run([sys.executable, str(script)], cwd=tmp, env=env, check=True, capture_output=True, text=True)
                outer.append(time.perf_counter() - start)
                inner.append(float(proc.stdout.split()[-1]))
            print(f"{label:<30} curate() {min(inner):5.1f} s   whole script {min(outer):5.1f} s")


if __name__ == "__main__":
    main()
