"""CLIP benchmark: mmcurate end to end (shards -> stored clip_score) beside the model alone.

What it does, in order:

1. Generates (or reuses from a cache on disk) photo-like 640x480 JPEG (quality 85)
   image-text samples in WebDataset shards, with the generator ``bench_cpu.py`` uses
   (``scripts/synthetic.py``): ``--samples`` (default 20,000) in shards of ``--per-shard``.
2. Draws ViT-B-32 weights at random from a fixed seed and saves them as a checkpoint (the
   compute of the pretrained model without downloading it; scores are meaningless).
3. Starts the local cluster mmcurate itself would start (``--workers`` CPU workers, plus one
   GPU worker per CUDA device), loads the model in the workers that run CLIP (not timed:
   loading happens once per worker whatever the dataset size), then times
   ``mmcurate.curate(shards, recipe with clip_score, out)``: read, decode, preprocess, model,
   stored annotations, output shards.
4. Model only, as one task per CLIP worker at once: ``encode_image`` + ``encode_text`` on
   ready tensors already on the device, same batch size and precision; the rates of all CLIP
   workers are summed.
5. Prints the device, samples/s end to end, model-only samples/s and their ratio, and writes
   every figure to ``OUT/bench_clip.json``.

Run from the repository root::

    python scripts/bench_clip.py                                  # 20k samples (a GPU machine)
    python scripts/bench_clip.py --samples 600 --per-shard 150 --batch-size 32 --model-batches 4   # CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

# Benchmark this checkout (Dask's spawned workers inherit sys.path, so they import it too).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import ensure_shards  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


def random_checkpoint(model: str, path: Path, seed: int) -> Path:
    """Seeded random weights for ``model``, saved once (fp16, to halve the file)."""
    import open_clip
    import torch

    if not path.exists():
        torch.manual_seed(seed)
        state = {k: v.half() if v.is_floating_point() else v for k, v in open_clip.create_model(model).state_dict().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
    return path


def _load(config: Any) -> str:
    """Worker: load the encoder into the process-wide cache the annotator uses; its device."""
    from mmcurate.steps.clip.encoder import load_encoder

    encoder = load_encoder(config)
    name = str(encoder.device)
    if encoder.device.type == "cuda":
        import torch

        name += f" ({torch.cuda.get_device_name(encoder.device)})"
    return f"{name}, {str(encoder.dtype).replace('torch.', '')}"


def _model_only(config: Any, batches: int) -> float:
    """Worker: images (with their captions) per second through both encoders on ready tensors."""
    import torch

    from mmcurate.steps.clip.encoder import load_encoder

    encoder = load_encoder(config)
    size = encoder.model.visual.image_size
    size = size if isinstance(size, (tuple, list)) else (size, size)
    pixels = torch.randn(config.batch_size, 3, *size, device=encoder.device).to(encoder.dtype)
    tokens = encoder.tokenizer(["a photo of a red car parked near the river at sunset"] * config.batch_size).to(encoder.device)

    def step() -> None:
        (encoder.encode_images(pixels) * encoder.encode_texts(tokens)).sum(-1)

    def sync() -> None:
        if encoder.device.type == "cuda":
            torch.cuda.synchronize(encoder.device)

    for _ in range(2):  # warm-up (kernels, allocator)
        step()
    sync()
    start = time.perf_counter()
    for _ in range(batches):
        step()
    sync()
    return batches * config.batch_size / (time.perf_counter() - start)


def clip_workers(client: Any) -> list[str]:
    """Workers that run the CLIP step: the GPU workers when there are any, else all."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    gpu = [addr for addr, info in workers.items() if info.get("resources", {}).get("GPU")]
    return sorted(gpu or workers)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import mmcurate
    from mmcurate.engine import cluster as engine
    from mmcurate.steps.annotators.clip import ClipScoreConfig

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    shard_args = argparse.Namespace(seed=args.seed, width=640, height=480, quality=85, per_shard=args.per_shard, gen_procs=args.gen_procs)
    shards, generated, gen_s = ensure_shards(out / f"shards-{args.per_shard}", args.samples, shard_args)
    print(f"dataset: {args.samples:,} samples in {len(shards)} shard(s) ({'generated in %.0f s' % gen_s if generated else 'cached'})", flush=True)
    checkpoint = random_checkpoint(args.model, out / f"{args.model}-random-seed{args.seed}.pt", args.seed)
    step = {"annotate": "clip_score", "model": args.model, "checkpoint": str(checkpoint), "batch_size": args.batch_size}
    recipe = mmcurate.Recipe.from_dict({"name": "bench-clip", "steps": [step]})
    config = ClipScoreConfig(model=args.model, checkpoint=str(checkpoint), batch_size=args.batch_size)

    gpus = engine.cuda_device_count() if args.gpus is None else args.gpus
    with engine.connect(workers=args.workers, gpus=gpus, quiet=True) as client:
        targets = clip_workers(client)
        devices = client.run(_load, config, workers=targets)
        device_names = sorted(set(devices.values()))
        print(f"cluster: {args.workers} CPU worker(s) + {gpus} GPU worker(s); CLIP runs on {len(targets)} worker(s): {', '.join(device_names)}", flush=True)

        run_dir = out / "run"
        shutil.rmtree(run_dir, ignore_errors=True)
        start = time.perf_counter()
        result = mmcurate.curate([str(p) for p in shards], recipe, run_dir, client=client, quiet=not args.progress)
        e2e_s = time.perf_counter() - start
        assert result.computed["clip_score"] == result.samples_in == args.samples, (result.computed, result.samples_in)
        e2e = result.samples_in / e2e_s
        print(f"end to end: {result.samples_in:,} samples in {e2e_s:.1f} s = {e2e:,.1f} samples/s", flush=True)

        # As tasks (like the CLIP step itself), one per CLIP worker, all at once.
        futures = {w: client.submit(_model_only, config, args.model_batches, workers=[w], allow_other_workers=False, pure=False) for w in targets}
        rates = {w: f.result() for w, f in futures.items()}
        model_only = sum(rates.values())
        print(f"model only (image + text encoders, ready tensors, batch {args.batch_size}): {model_only:,.1f} samples/s "
              f"({', '.join(f'{r:,.1f}' for r in rates.values())} per worker)", flush=True)

    report = {
        "device": device_names,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "clip_workers": len(targets),
        "samples": result.samples_in,
        "end_to_end_seconds": round(e2e_s, 2),
        "end_to_end_samples_per_s": round(e2e, 2),
        "model_only_samples_per_s": round(model_only, 2),
        "model_only_per_worker": [round(r, 2) for r in rates.values()],
        "ratio": round(e2e / model_only, 3),
    }
    (out / "bench_clip.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"device: {', '.join(device_names)}")
    print(f"ratio end-to-end / model-only: {report['ratio']:.3f}  (figures in {out / 'bench_clip.json'})")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python scripts/bench_clip.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=20_000, help="samples to score (default: %(default)s)")
    p.add_argument("--per-shard", type=int, default=1000, help="samples per input shard (default: %(default)s)")
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture, random weights (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="CLIP batch size, end to end and model only (default: %(default)s)")
    p.add_argument("--model-batches", type=int, default=20, help="timed batches for the model-only rate (default: %(default)s)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="CPU workers of the local cluster (default: one per core)")
    p.add_argument("--gpus", type=int, help="GPU workers (default: one per CUDA device)")
    p.add_argument("--gen-procs", type=int, default=2, help="processes generating shards (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="data and weight seed (default: %(default)s)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench-out" / "clip", help="shard cache, checkpoint, run folder, JSON (default: %(default)s)")
    p.add_argument("--progress", action="store_true", help="show curate()'s progress bars")
    args = p.parse_args(argv)
    if min(args.samples, args.per_shard, args.batch_size, args.model_batches, args.workers, args.gen_procs) < 1:
        p.error("counts must be positive")
    return args


if __name__ == "__main__":
    raise SystemExit(main())
