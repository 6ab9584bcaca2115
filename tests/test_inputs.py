"""Input resolution (paths, globs, brace ranges, file:// and http:// URLs) and curating over HTTP.

The HTTP tests serve ``tmp_path`` from a ``ThreadingHTTPServer`` bound to 127.0.0.1 in a
thread of the test process; nothing else on the network is touched.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import tarfile
import threading
from collections import Counter
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import mmcurate
from conftest import make_shard, simple_samples
from mmcurate.io.inputs import LOOKUPS_AT_ONCE, InputError, ShardRef, resolve_inputs

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


# --------------------------------------------------------------------------- at scale


class _Crowd:
    """Counts the requests an HTTP server gets and how many are in flight at once. Each one
    waits until ``crowd`` are in flight; if that never happens, the first to wait 5 s lets
    everything through, so a client asking one file at a time still finishes."""

    def __init__(self, crowd: int):
        self.crowd, self.lock, self.in_flight, self.peak = crowd, threading.Lock(), 0, 0
        self.requests: Counter[tuple[str, str]] = Counter()
        self.gathered = threading.Event()

    def handler(self, directory: Path) -> type:
        stats = self

        class Handler(_QuietHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(directory), **kwargs)

            def send_head(self):
                with stats.lock:
                    stats.requests[self.command, self.path] += 1
                    stats.in_flight += 1
                    stats.peak = max(stats.peak, stats.in_flight)
                    if stats.in_flight >= stats.crowd:
                        stats.gathered.set()
                try:
                    if not stats.gathered.wait(timeout=5):
                        stats.gathered.set()
                    return super().send_head()
                finally:
                    with stats.lock:
                        stats.in_flight -= 1

        return Handler


class _Backlogged(http.server.ThreadingHTTPServer):
    request_queue_size = 64  # room for every concurrent look-up's connection


def test_many_http_shards_are_looked_up_concurrently_and_once_each(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    data = make_shard(tmp_path / "one.tar", simple_samples("k", 1)).read_bytes()
    for i in range(500):
        (folder / f"{i:06d}.tar").write_bytes(data + bytes(i))  # sizes differ: so do identities
    stats = _Crowd(crowd=4)
    server = _Backlogged(("127.0.0.1", 0), stats.handler(folder))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        root = f"http://127.0.0.1:{server.server_address[1]}"
        refs = resolve_inputs(f"{root}/{{000000..000499}}.tar")
        asked = dict(stats.requests)
        one_by_one = [resolve_inputs(r.url)[0] for r in refs[:: 50]]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

    assert [r.url for r in refs] == [f"{root}/{i:06d}.tar" for i in range(500)]
    assert asked == {("HEAD", f"/{i:06d}.tar"): 1 for i in range(500)}  # one question per shard
    assert 4 <= stats.peak <= LOOKUPS_AT_ONCE  # concurrent, and bounded
    assert one_by_one == refs[:: 50]  # the same identities as a shard looked up alone
    assert len({r.identity for r in refs}) == 500


class _ObjectStore(MemoryFileSystem):
    """``store://``: an in-memory filesystem shaped like an object store (listings and ``info``
    both carry an ETag of the content) that counts the questions it is asked."""

    protocol = ("store",)
    store: dict = {}
    pseudo_dirs = [""]
    asked: Counter[str] = Counter()

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).removeprefix("store://"))

    def _etag(self, entry: dict) -> dict:
        if entry["type"] == "file":
            entry["ETag"] = hashlib.md5(self.store[entry["name"]].getvalue()).hexdigest()
        return entry

    def info(self, path, **kwargs):
        self.asked["info"] += 1
        return self._etag(super().info(path, **kwargs))

    def ls(self, path, detail=True, **kwargs):
        self.asked["ls"] += 1
        entries = super().ls(path, detail=detail, **kwargs)
        return [self._etag(e) for e in entries] if detail else entries

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        self.asked["find"] += 1
        found = super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        return {name: self._etag(e) for name, e in found.items()} if detail else found


@pytest.fixture
def object_store():
    """``store://data/000000.tar`` .. ``001999.tar`` (distinct contents)."""
    fsspec.register_implementation("store", _ObjectStore, clobber=True)
    fs = fsspec.filesystem("store")
    _ObjectStore.store.clear()
    fs.pipe({f"/data/{i:06d}.tar": b"shard %d" % i for i in range(2000)})
    _ObjectStore.asked.clear()
    yield fs
    _ObjectStore.store.clear()


def test_a_folder_of_many_shards_on_an_object_store_is_listed_once(object_store):
    refs = resolve_inputs("store://data/{000000..001999}.tar")

    assert sum(_ObjectStore.asked.values()) <= 4  # a few questions, not one per shard
    assert [r.url for r in refs] == [f"store://data/{i:06d}.tar" for i in range(2000)]
    assert not any(r.unstamped for r in refs)  # the listing's ETags are in the identities
    _ObjectStore.asked.clear()
    assert [resolve_inputs(r.url)[0] for r in refs[::100]] == refs[::100]  # as when asked alone
    assert _ObjectStore.asked["info"] == 20

    object_store.pipe("/data/000007.tar", b"shard 7, republished")
    assert resolve_inputs("store://data/{000000..001999}.tar")[7].identity != refs[7].identity

    _ObjectStore.asked.clear()
    globbed = resolve_inputs("store://data/*.tar")
    assert sum(_ObjectStore.asked.values()) <= 4
    assert len(globbed) == 2000 and globbed[0].identity == resolve_inputs(globbed[0].url)[0].identity


def test_a_shard_missing_from_a_listed_folder_is_named(object_store):
    with pytest.raises(InputError, match="002000.tar") as info:  # the first of 000 missing
        resolve_inputs("store://data/{001980..002009}.tar")
    assert "002001" not in str(info.value)


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
