"""report.html: written by every run, self-contained, and rendered with its images by headless Chromium."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from functools import lru_cache

import numpy as np
import pytest
from PIL import Image

import mmcurate
from conftest import REPO
from mmcurate.views.report import ReportOptions, write_report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-probe', imgs.filter(i => i.complete && i.naturalWidth > 0).length + '/' + imgs.length);
});</script>"""


@pytest.fixture(scope="module")
def demo(demo_default):
    return demo_default


@lru_cache(maxsize=1)
def _find_chromium() -> tuple[str | None, str]:
    """(path, "") of a Chromium that starts, else (None, why not)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path is None:
            continue
        try:
            proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{path} does not start ({type(exc).__name__})"
        if proc.returncode == 0 and "Chrom" in proc.stdout:
            return path, ""
        return None, f"{path} --version failed: {(proc.stderr or proc.stdout).strip()[-200:]}"
    return None, "no Chromium on PATH (chromium, chromium-browser or google-chrome); apt-get install chromium (.ci/run does)"


@pytest.fixture
def chromium() -> str:
    """A working Chromium; skips the test without one, but fails it where
    MMCURATE_REQUIRE_CHROMIUM=1 (set by .ci/run, so CI always renders the report)."""
    path, why = _find_chromium()
    if path is None:
        if os.environ.get("MMCURATE_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"MMCURATE_REQUIRE_CHROMIUM=1 but {why}")
        pytest.skip(f"browser test skipped: {why}")
    return path


def _chromium(*args: str) -> str:
    path, _ = _find_chromium()
    proc = subprocess.run([path, *CHROMIUM_FLAGS, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_every_run_writes_a_self_contained_report(demo):
    assert demo.report == demo.out / "report.html" and f"report: {demo.report}" in demo.summary()
    html = demo.report.read_text()
    assert "<script" not in html and "<link" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) > 20 and all(src.startswith("data:image/jpeg;base64,") for src in images)
    # the funnel with counts and reasons, as `mmcurate filter` prints it
    assert "<td>image_size</td><td>195</td><td>188</td><td>7</td><td>fails width &gt;= 64 4, fails aspect_ratio &lt;= 4 3</td>" in html
    # a histogram per numeric annotation column, thresholds drawn from the recipe's filters
    for column in ("width", "height", "aspect_ratio", "image_bytes", "caption_chars", "caption_words"):
        assert f"{column} (" in html
    for threshold in (">= 64 (image_size)", "&lt;= 4 (image_size)", ">= 1 (caption)"):
        assert threshold.replace(">", "&gt;") in html
    # the largest duplicate cluster side by side, and the errors table
    cluster = html[html.index('id="clusters"') :]
    assert cluster.index("000000010") < cluster.index("000001002") < cluster.index("000003045")
    errors = html[html.index('id="errors"') :]
    assert "Errors (5)" in errors and "missing_image" in errors and "decode_error: not a recognised image format" in errors


def test_report_cost_is_bounded_by_its_options(demo, tmp_path):
    small = write_report(demo.out, tmp_path / "small.html", ReportOptions(thumbs_per_step=1, clusters=1, cluster_members=2, max_thumb_shards=1))
    html = small.read_text()
    examples = html[html.index('id="examples"') : html.index('id="clusters"')]
    assert examples.count('<figure class="thumb">') <= 2 * 4  # one passed, one dropped, for each step that dropped any
    assert "demo-000001" not in examples and html.count('<figure class="thumb">') < demo.report.read_text().count('<figure class="thumb">')


def _chart(html: str, title: str) -> tuple[str, int]:
    """The SVG of the histogram titled ``title`` and the values its bars count."""
    svg = html[html.index(f">{title}<") :]
    svg = svg[: svg.index("</div></div>")]
    bars = re.findall(r"<title>[^<]* to [^<]*: (\d+) kept, (\d+) dropped</title>", svg)
    return svg, sum(int(k) + int(d) for k, d in bars[::2])  # each bin's title is on its kept and its dropped bar


def test_histograms_of_a_large_run_count_every_value_from_a_bounded_sample(demo, tmp_path, monkeypatch):
    from mmcurate.views import report
    from mmcurate.views.charts import ValueSample

    full, total = _chart(demo.report.read_text(), "width (image_info)")
    monkeypatch.setattr(report, "SAMPLE_VALUES", 20)  # as if the run held millions of values
    sampled, counted = _chart(write_report(demo.out, tmp_path / "sampled.html").read_text(), "width (image_info)")
    stats = re.search(r"(\d+) values; min (\S+), median (.*), max (\S+)", sampled).groups()
    assert re.search(r"(\d+) values; min (\S+), median \d+, max (\S+)", full).groups() == (stats[0], stats[1], stats[3])  # exact
    assert re.fullmatch(r"≈ \d+(\.\d+)? \(of a sample of (1\d|20)\)", stats[2])  # said to be approximate
    assert counted == total == int(stats[0])  # every value is in a bar
    sample = ValueSample(100)
    for chunk in np.split(np.arange(10_000.0), 10):
        sample.add(chunk, chunk % 2 == 0)
    assert sample.values.size <= 100 and sample.extent == (0.0, 9999.0) and sample.count == 10_000
    assert (sample.kept == (sample.values % 2 == 0)).all()  # each value keeps its own flag


@pytest.fixture(scope="module")
def video(tmp_path_factory, client):
    return mmcurate.curate(str(REPO / "shards" / "video-000000.tar"), "video-default", tmp_path_factory.mktemp("video") / "run", client=client, quiet=True)


def test_video_and_audio_samples_show_frame_strips_and_waveforms(video, tmp_path, client):
    html = video.report.read_text()
    strips = re.findall(r'<div class="strip">(.*?)</div>', html)
    assert len(strips) > 10 and all(s.count('<img src="data:image/jpeg;base64,') == 4 for s in strips)
    assert "decode_error: empty video member" in html and "video_near_duplicate_of" in html
    audio = mmcurate.curate(str(REPO / "shards" / "audio-000000.tar"), "audio-default", tmp_path / "audio", client=client, quiet=True)
    html = audio.report.read_text()
    examples = html[html.index('id="examples"') : html.index('id="clusters"')]
    assert examples.count("<polygon") >= 10 and examples.count('<audio controls preload="none"') == examples.count("<polygon")
    assert "decode_error: empty audio member" in examples


def _decoded_images(path, tmp_path) -> tuple[int, int]:
    """(images decoded, images) once Chromium has loaded the page at ``path``."""
    probed = tmp_path / f"probed-{path.name}"
    probed.write_text(path.read_text().replace("</body>", PROBE + "</body>"))
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    decoded, total = re.search(r'data-probe="(\d+)/(\d+)"', dom).groups()
    return int(decoded), int(total)


def test_report_renders_in_headless_chromium_with_its_images(chromium, demo, video, tmp_path):
    decoded, total = _decoded_images(demo.report, tmp_path)
    assert total > 20 and decoded == total
    decoded, total = _decoded_images(video.report, tmp_path)  # frame strips too
    assert total > 40 and decoded == total
    # the probe notices an image that does not decode
    broken = tmp_path / "broken.html"
    broken.write_text(demo.report.read_text().replace("<h1>", '<img src="data:image/jpeg;base64,AAAA"><h1>', 1))
    decoded, total = _decoded_images(broken, tmp_path)
    assert decoded == total - 1
    # and the page is drawn: a screenshot with the funnel's green and red, not a blank page
    shot = tmp_path / "shot.png"
    _chromium("--window-size=1200,1400", f"--screenshot={shot}", demo.report.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    green = np.all(np.abs(pixels - (0x3A, 0x7D, 0x44)) < 8, axis=1).sum()
    red = np.all(np.abs(pixels - (0xC8, 0x55, 0x3D)) < 8, axis=1).sum()
    assert green > 5000 and red > 200 and len(np.unique(pixels, axis=0)) > 1000


def _png16(width: int, height: int) -> bytes:
    """A 16-bit greyscale PNG (Pillow mode ``I;16``), like a scanner's or a depth camera's."""
    ramp = (np.arange(width * height, dtype=np.uint32).reshape(height, width) * 65535 // (width * height)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def real_world(tmp_path_factory, client):
    """Data as found: a large 16-bit PNG (its caption empty, so a step drops it and the report
    shows it), a 12000 px wide banner among 96 px photos, and a smaller re-encoding of a photo."""
    from conftest import image_bytes, make_shard, simple_samples

    samples = simple_samples("k", 8)
    photo = Image.open(io.BytesIO(samples[1][1]["jpg"]))
    smaller = io.BytesIO()
    photo.resize((90, 75)).save(smaller, format="JPEG", quality=90)
    samples += [
        ("deep16", {"png": _png16(640, 480), "txt": b""}),
        ("banner", {"jpg": image_bytes(12000, 16, seed=9), "txt": b"a very wide banner"}),
        ("resized", {"jpg": smaller.getvalue(), "txt": b"the same photo, smaller"}),
    ]
    shard = make_shard(tmp_path_factory.mktemp("real") / "000000.tar", samples)
    return mmcurate.curate(str(shard), "near-dup", tmp_path_factory.mktemp("real-run") / "run", client=client, quiet=True)


def test_a_16_bit_png_gets_its_thumbnail_in_the_report(real_world):
    html = real_world.report.read_text()
    assert re.search(r'<img src="data:image/jpeg;base64,[^"]+" width="112" height="84" alt="deep16">', html) and "wrong mode" not in html


def test_a_thumbnail_that_fails_fails_alone(real_world, tmp_path):
    from mmcurate.views import thumbs

    original = thumbs._THUMBNAILERS["image"]

    def fussy(view, size):
        if view.key == "deep16":
            raise ValueError("image has wrong mode")  # what Pillow said about 16-bit PNGs
        return original(view, size)

    thumbs.register("image")(fussy)
    try:
        html = write_report(real_world.out, tmp_path / "report.html").read_text()
    finally:
        thumbs.register("image")(original)
    assert '<div class="ph" style="width:112px;height:84px">no thumbnail: ValueError: image has wrong mode</div><figcaption><b>deep16</b>' in html
    assert html.count('<img src="data:image/jpeg;base64,') > 5  # every other sample still shows


def test_histograms_clip_an_outlier_and_say_so(real_world):
    html = real_world.report.read_text()
    width = html[html.index(">width (image_info)<") :]
    width = width[: width.index("</svg>")]
    assert "axis clipped past outliers (far beyond the 1st/99th percentile): 1 above, in the end bars" in width
    assert ">640</text>" in width and ">12000<" not in width  # the axis ends at the largest usual width, not at the banner


@pytest.mark.parametrize(
    "values,expected",
    [
        (np.random.default_rng(0).normal(500, 50, 600), ""),
        (np.append(np.random.default_rng(0).normal(500, 50, 599), 12000), "axis clipped past outliers (far beyond the 1st/99th percentile): 1 above, in the end bars"),
        (np.exp(np.random.default_rng(0).normal(10, 2, 600)), "log axis"),  # file sizes
    ],
    ids=["normal", "one outlier", "orders of magnitude"],
)
def test_the_axis_is_chosen_per_column(values, expected):
    from mmcurate.views.charts import value_axis

    axis = value_axis(values, [64])
    assert axis.note == expected and axis.low <= 64  # a threshold always stays in view


def test_duplicates_show_their_distance_to_the_kept_sample(real_world):
    html = real_world.report.read_text()
    clusters = html[html.index('id="clusters"') :]
    found = re.search(r'<span class="dropped">duplicate</span> · (\d+) bits (\(mirrored\) )?from the kept', clusters)
    assert found and int(found.group(1)) <= 4 and clusters.index("k00001") < clusters.index("resized")


def _long_name_shard(path, samples) -> None:
    """A GNU tar (long-name headers before members) with webdataset meta members between samples."""
    import tarfile

    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for key, members in samples:
            for name, data in [("__meta__", b"{}"), *((f"{'deep/' * 25}{key}.{ext}", data) for ext, data in members.items())]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_thumbnails_read_each_sample_at_its_offset_and_a_changed_shard_says_so(client, tmp_path):
    from conftest import simple_samples
    from mmcurate.store.runview import ShardChanged
    from mmcurate.views.browse import Gallery

    samples = simple_samples("k", 6)
    shard = tmp_path / "000000.tar"
    _long_name_shard(shard, samples)
    run = mmcurate.open_run(mmcurate.curate(str(shard), "default", tmp_path / "run", client=client, quiet=True).out)
    pairs = [(str(shard), pos) for pos in range(6)]
    assert {p: s.get("jpg") for p, s in run.read_samples(pairs).items()} == {p: samples[p[1]][1]["jpg"] for p in pairs}

    data = bytearray(shard.read_bytes())
    data[:512] = bytes(512)  # the first header destroyed: the shard can no longer be streamed from its start
    shard.write_bytes(bytes(data))
    later = run.read_samples(pairs[1:])
    assert {p: s.get("jpg") for p, s in later.items()} == {p: samples[p[1]][1]["jpg"] for p in pairs[1:]}

    _long_name_shard(shard, samples[::-1])  # same samples, another order: every offset now holds another sample
    with pytest.raises(ShardChanged, match=r"000000\.tar: changed since the run: sample 2 was 'deep/.*k00002'"):
        run.read_samples(pairs[2:3])
    html = Gallery(run, 64).figure({"shard": str(shard), "key": "k00002", "pos": 2})
    assert "not readable" in html and "changed since the run: sample 2" in html and "<img" not in html
