"""Input resolution (paths, globs, brace ranges, file:// and http:// URLs) and curating over HTTP.

The HTTP tests serve ``tmp_path`` from a ``ThreadingHTTPServer`` bound to 127.0.0.1 in a
thread of the test process; nothing else on the network is touched.
"""

from __future__ import annotations

import functools
import http.server
import json
import tarfile
import threading
from pathlib import Path

import pytest

import mmcurate
from conftest import make_shard, simple_samples
from mmcurate.io.inputs import InputError, ShardRef, resolve_inputs

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    """Three small shards 000000..000002 (distinct images), plus a file that is not a shard."""
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(3):
        make_shard(folder / f"{i:06d}.tar", simple_samples(f"s{i}-", 3, seed=i + 1))
    (folder / "README.txt").write_text("not a shard")
    return folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - keep test output clean
        pass


@pytest.fixture
def http_root(shard_dir: Path):
    """``http://127.0.0.1:PORT`` serving ``shard_dir``; shut down after the test."""
    handler = functools.partial(_QuietHandler, directory=str(shard_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _urls(refs: list[ShardRef]) -> list[str]:
    return [r.url for r in refs]


# --------------------------------------------------------------------------- resolve_inputs


def test_local_paths_keep_the_order_given(shard_dir):
    a, b, c = (str(shard_dir / f"{i:06d}.tar") for i in range(3))
    refs = resolve_inputs([c, a, b])
    assert _urls(refs) == [c, a, b]
    assert all(isinstance(r, ShardRef) for r in refs)
    assert [r.name for r in refs] == ["000002", "000000", "000001"]
    assert resolve_inputs(a) == resolve_inputs([a])  # a single string is one input


def test_a_shard_named_twice_is_read_once(shard_dir):
    a, b = str(shard_dir / "000000.tar"), str(shard_dir / "000001.tar")
    assert _urls(resolve_inputs([a, b, a, f"{shard_dir}/00000{{0..1}}.tar"])) == [a, b]


def test_glob_is_sorted_and_matches_only_shards(shard_dir):
    refs = resolve_inputs(str(shard_dir / "*.tar"))
    assert _urls(refs) == [str(shard_dir / f"{i:06d}.tar") for i in range(3)]
    assert _urls(resolve_inputs(str(shard_dir / "00000[12].tar"))) == [str(shard_dir / f"{i:06d}.tar") for i in (1, 2)]


def test_brace_range(shard_dir):
    refs = resolve_inputs(f"{shard_dir}/{{000000..000002}}.tar")
    assert _urls(refs) == [str(shard_dir / f"{i:06d}.tar") for i in range(3)]
    assert _urls(resolve_inputs(f"{shard_dir}/{{000002..000001}}.tar")) == [str(shard_dir / f"{i:06d}.tar") for i in (2, 1)]


def test_file_urls(shard_dir):
    expected = [str(shard_dir / f"{i:06d}.tar") for i in range(3)]
    assert _urls(resolve_inputs(f"file://{shard_dir}/{{000000..000002}}.tar")) == expected
    assert _urls(resolve_inputs(f"file://{shard_dir}/*.tar")) == expected
    assert _urls(resolve_inputs((shard_dir / "000001.tar").as_uri())) == [expected[1]]


def test_identity_changes_when_the_shard_changes(shard_dir):
    path = shard_dir / "000000.tar"
    before = resolve_inputs(str(path))[0]
    make_shard(path, simple_samples("changed-", 4, seed=9))
    after = resolve_inputs(str(path))[0]
    assert before.url == after.url and before.identity != after.identity and before.digest != after.digest


def test_missing_shard_is_named(shard_dir):
    missing = str(shard_dir / "000007.tar")
    with pytest.raises(InputError, match="000007.tar"):
        resolve_inputs([str(shard_dir / "000000.tar"), missing])
    # In a brace range, the first missing member is the one named.
    with pytest.raises(InputError, match="000003.tar") as info:
        resolve_inputs(f"{shard_dir}/{{000000..000004}}.tar")
    assert "000004" not in str(info.value)


def test_glob_matching_nothing(shard_dir):
    with pytest.raises(InputError, match=r"\*\.tgz"):
        resolve_inputs(str(shard_dir / "*.tgz"))
    with pytest.raises(InputError):
        resolve_inputs(f"file://{shard_dir}/nothing-*.tar")


def test_directory_and_empty_inputs(shard_dir):
    with pytest.raises(InputError, match="directory"):
        resolve_inputs(str(shard_dir))
    with pytest.raises(InputError):
        resolve_inputs([])


def test_curate_refuses_missing_input_before_creating_the_run(tmp_path, shard_dir, client):
    out = tmp_path / "out"
    with pytest.raises(InputError, match="000009.tar"):
        mmcurate.curate(
            [str(shard_dir / "000000.tar"), str(shard_dir / "000009.tar")], "default", out, client=client, quiet=True
        )
    assert not out.exists()


def test_http_urls_resolve(http_root):
    refs = resolve_inputs(f"{http_root}/{{000000..000002}}.tar")
    assert _urls(refs) == [f"{http_root}/{i:06d}.tar" for i in range(3)]
    assert [r.name for r in refs] == ["000000", "000001", "000002"]
    assert all(r.identity.startswith(r.url + "|") for r in refs)


def test_missing_http_shard_is_named(http_root):
    with pytest.raises(InputError, match="000005.tar"):
        resolve_inputs([f"{http_root}/000000.tar", f"{http_root}/000005.tar"])


# --------------------------------------------------------------------------- end to end


def _curate(inputs, out: Path, client, overrides=()):
    result = mmcurate.curate(inputs, "default", out, overrides=list(overrides), client=client, quiet=True)
    return result, mmcurate.open_run(out).decisions.to_pylist()


def _kept_keys(rows) -> list[str]:
    return [r["key"] for r in rows if r["kept"]]


def _tar_members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def test_curate_local_inputs_in_every_spelling_agree(tmp_path, shard_dir, client):
    spellings = {
        "brace": f"{shard_dir}/{{000000..000002}}.tar",
        "glob": str(shard_dir / "*.tar"),
        "list": [str(shard_dir / f"{i:06d}.tar") for i in range(3)],
        "file_url": f"file://{shard_dir}/{{000000..000002}}.tar",
    }
    results = {name: _curate(inputs, tmp_path / name, client, ["output.annotations_member=false"]) for name, inputs in spellings.items()}
    first_result, first_rows = results["brace"]
    assert first_result.samples_in == 9 and first_result.kept == 9
    for name, (result, rows) in results.items():
        assert rows == first_rows, name
        assert [p.read_bytes() for p in result.shards] == [p.read_bytes() for p in first_result.shards], name


def test_curate_over_http_matches_local(tmp_path, shard_dir, http_root, client):
    local_inputs = f"{shard_dir}/{{000000..000001}}.tar"
    http_inputs = f"{http_root}/{{000000..000001}}.tar"

    # Output shards without the annotations member: byte-identical.
    plain = ["output.annotations_member=false"]
    local, local_rows = _curate(local_inputs, tmp_path / "local", client, plain)
    remote, remote_rows = _curate(http_inputs, tmp_path / "remote", client, plain)
    assert local.samples_in == remote.samples_in == 6
    assert _kept_keys(remote_rows) == _kept_keys(local_rows) == [f"s{i}-{j:05d}" for i in range(2) for j in range(3)]
    assert [r["shard"] for r in remote_rows] == [f"{http_root}/{i:06d}.tar" for i in range(2) for _ in range(3)]
    assert [p.name for p in remote.shards] == [p.name for p in local.shards]
    assert [p.read_bytes() for p in remote.shards] == [p.read_bytes() for p in local.shards]
    assert remote.funnel == local.funnel

    # With the default annotations member: the same members, the same annotations; only the
    # recorded source URL differs.
    local_a, _ = _curate(local_inputs, tmp_path / "local_a", client)
    remote_a, _ = _curate(http_inputs, tmp_path / "remote_a", client)
    for lp, rp in zip(local_a.shards, remote_a.shards, strict=True):
        lm, rm = _tar_members(lp), _tar_members(rp)
        assert [n for n, _ in lm] == [n for n, _ in rm]
        for (name, ldata), (_, rdata) in zip(lm, rm):
            if not name.endswith(".mmcurate.json"):
                assert ldata == rdata, name
                continue
            lnote, rnote = json.loads(ldata), json.loads(rdata)
            assert lnote["annotations"] == rnote["annotations"]
            assert lnote["source"]["key"] == rnote["source"]["key"]
            assert rnote["source"]["shard"].startswith(http_root + "/")
            assert lnote["source"]["shard"].startswith(str(shard_dir))
