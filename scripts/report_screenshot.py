"""Screenshot a run's report.html with headless Chromium into a small PNG (docs/report.png).

    python scripts/report_screenshot.py runs/demo docs/report.png [--height 1500]

Needs Debian's ``chromium`` (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run directory holding report.html")
    parser.add_argument("png", type=Path, help="where to write the screenshot")
    parser.add_argument("--width", type=int, default=1200, help="browser window width (default: 1200)")
    parser.add_argument("--height", type=int, default=1500, help="browser window height (default: 1500)")
    parser.add_argument("--scale", type=float, default=0.75, help="shrink the PNG by this factor (default: 0.75)")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("needs chromium: apt-get install chromium")
    report = (args.run / "report.html").resolve()
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "shot.png"
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={args.width},{args.height}", f"--screenshot={shot}", report.as_uri()],
            check=True,
            capture_output=True,
        )
        image = Image.open(shot).convert("RGB")
    size = (round(image.width * args.scale), round(image.height * args.scale))
    image.resize(size, Image.LANCZOS).quantize(colors=128).save(args.png, optimize=True)
    print(f"{args.png}: {size[0]}x{size[1]}, {args.png.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
