"""I/O faults are not data: transient errors are retried, failing shards are quarantined,
remote shards are streamed whole and re-read when they change.

Real faults only: a ``flaky://`` fsspec filesystem that resets the connection mid-read,
``http.server`` on 127.0.0.1 (no Range support) that cuts a response mid-body.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import mmcurate
from conftest import image_bytes, make_shard, simple_samples
from faultfs import RegisterFlaky, Server, faults_left, register, set_faults
from mmcurate.engine import cluster as engine
from mmcurate.cli import main


@pytest.fixture(scope="module")
def flaky(client):
    """``flaky://`` known here and in every worker."""
    register()
    client.register_plugin(RegisterFlaky(), name="register-flaky")
    return client


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(engine, "BACKOFF_S", 0.01)


def _shards(root: Path, names: tuple[str, ...], n: int = 20) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    return [make_shard(root / f"{name}.tar", simple_samples(f"{name}-", n, seed=i)) for i, name in enumerate(names)]


def _output(result: mmcurate.CurateResult) -> list[tuple[str, object]]:
    """Every member of the output shards, in order; annotation notes with the source shard
    reduced to its file name (it names the input URL, which differs between the runs compared)."""
    members: list[tuple[str, object]] = []
    for shard in result.shards:
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                data = tar.extractfile(m).read()
                if m.name.endswith(".mmcurate.json"):
                    note = json.loads(data)
                    note["source"]["shard"] = note["source"]["shard"].rsplit("/", 1)[-1]
                    data = note
                members.append((m.name, data))
    return members


def _decisions(result: mmcurate.CurateResult) -> list[tuple]:
    rows = pq.read_table(result.decisions_path).to_pylist()
    return [(r["shard"].rsplit("/", 1)[-1], r["key"], r["kept"], r["step"], r["reason"], r["output_shard"]) for r in rows]


def _run_info(result: mmcurate.CurateResult) -> dict:
    return json.loads((result.out / "run.json").read_text())


@pytest.mark.parametrize("fault", ["reset", "eof"], ids=["connection-reset", "short-read"])
def test_a_read_failing_once_mid_shard_is_retried_and_loses_nothing(tmp_path, flaky, fast_retries, fault):
    (shard,) = _shards(tmp_path / "in", ("a",))
    set_faults(shard, after=shard.stat().st_size // 3, times=1, fault=fault)
    local = mmcurate.curate([str(shard)], "default", tmp_path / "local", client=flaky, quiet=True)

    result = mmcurate.curate([f"flaky://{shard}"], "default", tmp_path / "run", client=flaky, quiet=True)

    assert faults_left(shard) == 0  # the read failed once, mid-shard
    assert result.samples_in == 20 and result.failed == {}
    assert _run_info(result)["status"] == "complete"
    assert not any(reason and reason.startswith("read_error") for *_, reason, _ in _decisions(result))
    assert _decisions(result) == _decisions(local)
    assert _output(result) == _output(local)


def test_a_shard_failing_past_its_retries_is_quarantined_and_a_rerun_retries_only_it(tmp_path, flaky, fast_retries, capsys):
    a, b, c = _shards(tmp_path / "in", ("a", "b", "c"))
    set_faults(b, after=b.stat().st_size // 2, times=99)
    inputs = [str(a), f"flaky://{b}", str(c)]
    out = tmp_path / "run"

    code = main(["filter", *inputs, "--recipe", "default", "--out", str(out), "--scheduler", flaky.scheduler.address])

    printed = capsys.readouterr().out
    assert code != 0
    assert "INCOMPLETE: 1 of 3 input shard(s) FAILED" in printed and f"flaky://{b}" in printed
    assert "ConnectionResetError" in printed and "re-run the same command" in printed
    assert "40 samples in" in printed  # the other shards finished
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "incomplete" and list(info["failed"]) == [f"flaky://{b}"]
    stored = [p.name for p in (out / "annotations").rglob("*.parquet")]
    assert stored and not any(name.startswith("b-") for name in stored)  # nothing from the failed reads
    assert {r["shard"] for r in pq.read_table(out / "decisions.parquet").to_pylist()} == {str(a), str(c)}
    assert main(["inspect", str(out)]) == 0
    assert "status incomplete" in (shown := capsys.readouterr().out) and f"flaky://{b}" in shown

    os.remove(f"{b}.faults")  # the network is fine again
    rerun = mmcurate.curate(inputs, "default", out, client=flaky, quiet=True)
    clean = mmcurate.curate([str(a), str(b), str(c)], "default", tmp_path / "clean", client=flaky, quiet=True)

    assert rerun.complete and _run_info(rerun)["status"] == "complete" and _run_info(rerun)["failed"] == {}
    assert rerun.computed == {"image_info": 20, "caption_info": 20, "sha256": 20}  # only shard b was read
    assert rerun.samples_in == 60
    assert _decisions(rerun) == _decisions(clean) and _output(rerun) == _output(clean)


def test_http_without_range_support_is_streamed_whole_and_a_cut_response_retried(tmp_path, client, fast_retries):
    root = tmp_path / "in"
    root.mkdir()
    padded = [(key, {**members, "bin": os.urandom(300_000)}) for key, members in simple_samples("big-", 24)]
    big = make_shard(root / "big.tar", padded)  # larger than fsspec's default HTTP block (5 MB)
    (small,) = _shards(root, ("small",))
    no_notes = ["output.annotations_member=false"]
    local = mmcurate.curate([str(big), str(small)], "default", tmp_path / "local", client=client, quiet=True, overrides=no_notes)

    with Server(root) as server:
        server.cuts["big.tar"] = 1  # the first GET stops half-way through the body
        result = mmcurate.curate(
            [server.url("big.tar"), server.url("small.tar")], "default", tmp_path / "run", client=client, quiet=True, overrides=no_notes
        )
        assert server.cuts["big.tar"] == 0

    assert result.samples_in == 44 and result.complete
    assert _decisions(result) == _decisions(local)
    assert [p.read_bytes() for p in result.shards] == [p.read_bytes() for p in local.shards]  # byte-identical


@pytest.mark.parametrize("last_modified", [True, False], ids=["with-last-modified", "without-last-modified"])
def test_a_shard_republished_at_the_same_size_gets_fresh_decisions(tmp_path, client, capfd, last_modified):
    root = tmp_path / "in"
    root.mkdir()
    shard = root / "s.tar"

    def publish(caption: bytes, mtime: int) -> None:
        make_shard(shard, [(f"k{i:03d}", {"jpg": image_bytes(seed=i), "txt": caption}) for i in range(8)])
        os.utime(shard, (mtime, mtime))

    publish(b"hello world!", 1_700_000_000)
    size = shard.stat().st_size
    with Server(root, last_modified=last_modified) as server:
        first = mmcurate.curate([server.url("s.tar")], "default", tmp_path / "run", client=client, quiet=True)
        publish(b" " * len(b"hello world!"), 1_700_000_000 + (60 if last_modified else 0))  # no words left
        assert shard.stat().st_size == size
        second = mmcurate.curate([server.url("s.tar")], "default", tmp_path / "run", client=client, quiet=True)

    assert first.kept == 8
    assert second.kept == 0 and {c.step: c.dropped for c in second.funnel}["caption"] == 8
    assert second.shards == []
    warned = capfd.readouterr().err.count("have no ETag, Last-Modified, version or mtime")
    assert warned == (0 if last_modified else 2)  # said once per run when there is nothing to go by


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate")
def test_https_inputs_run_through_the_whole_cli_like_local_shards(tmp_path, client):
    """``https://`` shards (a real TLS server on 127.0.0.1 with its own certificate, trusted
    through SSL_CERT_FILE) are read, annotated and written byte-for-byte like the same shards
    read from disk."""
    root = tmp_path / "in"
    root.mkdir()
    _shards(root, ("a", "b"))
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    no_notes = ["--set", "output.annotations_member=false"]
    local = mmcurate.curate([str(root / "a.tar"), str(root / "b.tar")], "default", tmp_path / "local", client=client, quiet=True, overrides=no_notes[1:])
    with Server(root, tls=tls) as server:
        urls = [server.url("a.tar"), server.url("b.tar")]
        assert urls[0].startswith("https://")
        done = subprocess.run(
            [sys.executable, "-m", "mmcurate.cli", "filter", *urls, "--recipe", "default", "--out", str(tmp_path / "run"),
             "--workers", "1", "--quiet", *no_notes],
            env={**os.environ, "SSL_CERT_FILE": str(cert)}, capture_output=True, text=True, timeout=600,
        )
    assert done.returncode == 0, done.stderr
    run = mmcurate.open_run(tmp_path / "run")
    assert run.info["status"] == "complete" and run.info["inputs"] == urls
    out = sorted((tmp_path / "run" / "shards").glob("*.tar"))
    assert [p.read_bytes() for p in out] == [p.read_bytes() for p in local.shards]


def _fails_on_three(n: int) -> int:
    if n == 3:
        raise ValueError("three is bad")
    return n * 10


def test_items_run_several_per_task_still_fail_alone(client, fast_retries):
    results = engine.map_tasks(client, _fails_on_three, list(range(7)), "quick", str, quiet=True, keep_going=True, per_task=3)
    assert results == [0, 10, 20, engine.Failed("ValueError: three is bad"), 40, 50, 60]
    with pytest.raises(engine.TaskFailed, match="quick failed on 3: ValueError: three is bad"):
        engine.map_tasks(client, _fails_on_three, list(range(7)), "quick", str, quiet=True, per_task=3)
