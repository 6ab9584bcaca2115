"""Fault injection: interrupted or failing runs must resume to exactly the clean result.

Writes 8 small image-text shards (50 samples each, with exact and near duplicates, corrupt
images, empty captions and one shard cut short) and curates them with the ``default`` and
``near-dup`` recipes, once cleanly for reference. Then, ``--runs`` times, one run of
``mmcurate filter`` (the CLI, a separate process with its own LocalCluster of 2 workers)
meets one fault, in turn:

* ``kill_driver``: SIGKILL of the driver at a random moment (then of its orphaned workers);
* ``kill_workers``: SIGKILL of 1-3 Dask worker processes at random moments;
* ``flaky_reads``: every shard read goes through ``flaky://`` (``chaos_fs.py``), whose reads
  raise ``ConnectionResetError`` at random;
* ``file_size_limit``: RLIMIT_FSIZE, so some write fails with EFBIG midway.

A faulty run may fail (non-zero exit). After it, the same command without the fault must
exit 0, and every file in ``OUT/shards`` must be byte-identical to the clean run's, and
``decisions.parquet`` hold the same table. Every run uses ``flaky://`` inputs (with no
failures outside ``flaky_reads``), so all commands and outputs are comparable.

    PYTHONPATH=$PWD python scripts/chaos.py --runs 20

Prints one line per run and ends with ``K of N identical``; exits non-zero unless K == N.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import psutil
import pyarrow.parquet as pq
from PIL import Image

import chaos_fs
from synthetic import jpeg_bytes, photo_like, random_caption, write_tar

FAULTS = ("kill_driver", "kill_workers", "flaky_reads", "file_size_limit")
RECIPES = ("default", "near-dup")
SHARDS, PER_SHARD = 8, 50
READ_FAIL_P = 0.001
"""Per ``read()`` call; a shard takes a few hundred reads, so about a third of reads fail."""
FAULTY_TIMEOUT_S, RESUME_TIMEOUT_S = 180, 300


# --------------------------------------------------------------------------- data


def make_data(folder: Path, seed: int) -> list[str]:
    """The input shards as ``flaky://`` URLs."""
    rng = np.random.default_rng(seed)
    images: list[bytes] = []
    paths = []
    for s in range(SHARDS):
        samples = []
        for i in range(PER_SHARD):
            key, n = f"{s:02d}{i:04d}", s * PER_SHARD + i
            if images and n % 9 == 4:
                image = images[int(rng.integers(len(images)))]  # an exact duplicate
            elif images and n % 11 == 5:  # a near duplicate: rescaled, re-encoded
                img = Image.open(io.BytesIO(images[int(rng.integers(len(images)))]))
                image = jpeg_bytes(img.resize((img.width * 21 // 20, img.height * 21 // 20)), 60)
            else:
                image = jpeg_bytes(photo_like(rng, int(rng.integers(48, 256)), int(rng.integers(48, 200))), 80)
                images.append(image)
            if n % 23 == 7:
                image = image[: len(image) // 3]  # corrupt: truncated JPEG
            elif n % 29 == 8:
                image = rng.bytes(2000)  # corrupt: not an image
            caption = b"" if n % 17 == 3 else random_caption(rng, 1, 8).encode()
            meta = json.dumps({"key": key, "n": n}).encode()
            samples.append((key, {"jpg": image, "txt": caption, "json": meta}))
        path = folder / f"{s:06d}.tar"
        write_tar(path, samples)
        paths.append(path)
    last = paths[-1]
    last.write_bytes(last.read_bytes()[: -2000])  # cut short inside its last sample
    return [f"{chaos_fs.PROTOCOL}://{p}" for p in paths]


# --------------------------------------------------------------------------- runs


def command(inputs: list[str], recipe: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "mmcurate.cli", "filter", *inputs, "--recipe", recipe, "--out", str(out), "--workers", "2", "--quiet"]


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _kill_session(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever the driver left running
    except ProcessLookupError:
        pass


def _workers(pid: int) -> list[psutil.Process]:
    """The driver's Dask worker processes (spawned by multiprocessing)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def run(
    cmd: list[str], env: dict[str, str], log: Path, timeout: float,
    kills: Sequence[tuple[float, str]] = (), preexec: Callable[[], None] | None = None,
) -> tuple[int | None, list[str]]:
    """Run ``cmd`` in its own session, sending ``kills`` ((seconds after start, "driver" or
    "worker")); returns (exit status or None when it ran past ``timeout``, what was killed)."""
    done: list[str] = []
    with open(log, "ab") as out:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec)
        pending = sorted(kills)
        try:
            while proc.poll() is None and time.monotonic() - start < timeout:
                if pending and time.monotonic() - start >= pending[0][0]:
                    if pending[0][1] == "driver":
                        pending.pop(0)
                        proc.kill()
                        proc.wait()
                        done.append("driver")
                    elif workers := _workers(proc.pid):  # (a worker kill waits for workers to exist)
                        pending.pop(0)
                        victim = random.choice(workers)
                        try:
                            victim.kill()
                            done.append(f"worker {victim.pid}")
                        except psutil.NoSuchProcess:
                            pass
                time.sleep(0.01)
            code = proc.poll()
        finally:
            _kill_session(proc)
            proc.wait()
    return code, done


def differences(out: Path, reference: Path) -> list[str]:
    """What differs between two runs' results: the files in shards/ and the decisions."""
    ours = {p.name: p for p in (out / "shards").glob("*")} if (out / "shards").exists() else {}
    theirs = {p.name: p for p in (reference / "shards").glob("*")}
    found = [f"shards/{n}: {'missing' if n not in ours else 'unexpected'}" for n in sorted(set(ours) ^ set(theirs))]
    found += [f"shards/{n}: bytes differ" for n in sorted(set(ours) & set(theirs)) if ours[n].read_bytes() != theirs[n].read_bytes()]
    if not (out / "decisions.parquet").exists():
        found.append("decisions.parquet: missing")
    elif not pq.read_table(out / "decisions.parquet").equals(pq.read_table(reference / "decisions.parquet")):
        found.append("decisions.parquet: content differs")
    return found


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="faulty runs (default: %(default)s)")
    parser.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS), help="faults to cycle through (default: all)")
    parser.add_argument("--seed", type=int, default=None, help="seed for fault timings and size limits (default: random; printed)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data, runs and logs here (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    random.seed(seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mmcurate-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _chaos(args.runs, args.faults, seed, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _fault(fault: str, env: dict[str, str], reference: Path, clean_s: float):
    """(environment, kills, preexec_fn, description) of one faulty run; ``clean_s`` is how
    long the clean run took."""
    if fault == "kill_driver":
        at = random.uniform(0.1, 1.0) * clean_s
        return env, [(at, "driver")], None, f"at {at:.1f} s"
    if fault == "kill_workers":
        kills = sorted((random.uniform(0.2, 0.9) * clean_s, "worker") for _ in range(random.randint(1, 3)))
        return env, kills, None, "at " + ", ".join(f"{t:.1f}" for t, _ in kills) + " s"
    if fault == "flaky_reads":
        return {**env, chaos_fs.RATE_VAR: str(READ_FAIL_P)}, [], None, f"p={READ_FAIL_P} per read"
    largest = max(p.stat().st_size for p in reference.rglob("*") if p.is_file())
    limit = int(np.exp(random.uniform(np.log(4096), np.log(largest))))
    return env, [], _file_size_limit(limit), f"limit {limit:,} bytes"


def _chaos(runs: int, faults: list[str], seed: int, work: Path) -> int:
    (work / "data").mkdir(exist_ok=True)
    inputs = make_data(work / "data", seed=0)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(chaos_fs.install(work / "site") + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop(chaos_fs.RATE_VAR, None)
    print(f"chaos: seed {seed}, {len(inputs)} shards in {work}", flush=True)

    references: dict[str, tuple[Path, float]] = {}
    for recipe in RECIPES:
        out = work / f"reference-{recipe}"
        start = time.monotonic()
        code, _ = run(command(inputs, recipe, out), env, work / f"reference-{recipe}.log", RESUME_TIMEOUT_S)
        if code != 0:
            print(f"chaos: the clean {recipe} run failed ({code}): {_last_line(work / f'reference-{recipe}.log')}")
            return 2
        references[recipe] = (out, time.monotonic() - start)
        print(f"reference {recipe}: {time.monotonic() - start:.1f} s", flush=True)

    identical = 0
    for i in range(runs):
        fault, recipe = faults[i % len(faults)], RECIPES[(i // len(faults)) % len(RECIPES)]
        reference, clean_s = references[recipe]
        out, log = work / f"run-{i:03d}", work / f"run-{i:03d}.log"
        cmd = command(inputs, recipe, out)
        faulty_env, kills, preexec, detail = _fault(fault, env, reference, clean_s)
        code, killed = run(cmd, faulty_env, log, FAULTY_TIMEOUT_S, kills, preexec)
        faulty = "hung (killed)" if code is None else f"exit {code}"
        if killed:
            faulty += f", killed {', '.join(killed)}"
        if code is not None and code > 0:
            faulty += f" [{_last_line(log)}]"
        resumed, _ = run(cmd, env, log, RESUME_TIMEOUT_S)
        found = [f"resume exit {resumed}: {_last_line(log)}"] if resumed != 0 else differences(out, reference)
        identical += not found
        verdict = "identical" if not found else "DIFFERENT: " + "; ".join(found[:5])
        print(f"run {i + 1}/{runs} {fault} ({detail}) {recipe}: faulty {faulty}; resume -> {verdict}", flush=True)
        if not found:
            shutil.rmtree(out, ignore_errors=True)
    print(f"{identical} of {runs} identical")
    return 0 if identical == runs else 1


if __name__ == "__main__":
    raise SystemExit(main())
