"""Concept matching rate: captions/s of MetaCLIP matching against 500,000 synthetic entries.

Builds the Aho-Corasick index of ``--entries`` synthetic entries (one- to three-word phrases
over a synthetic vocabulary, as MetaCLIP's 500k metadata mixes words and phrases), then
matches ``--captions`` synthetic captions (8-20 words drawn from the same vocabulary, Zipf
weighted, with punctuation) and prints the build time, captions/s and matches per caption.
Compare ``--entries 1000``: the rate does not depend on the number of entries.

Run from the repository root::

    python scripts/bench_concepts.py                     # 500k entries, 100k captions
    python scripts/bench_concepts.py --entries 1000
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmcurate.steps.concepts import ConceptMatcher, normalize_entries  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=500_000)
    parser.add_argument("--captions", type=int, default=100_000)
    parser.add_argument("--vocabulary", type=int, default=200_000)
    args = parser.parse_args()
    rng = random.Random(0)
    vocabulary = [f"w{i}" for i in range(args.vocabulary)]
    cum = list(itertools.accumulate(1 / (rank + 1) for rank in range(args.vocabulary)))  # Zipf
    phrases = {" ".join(rng.choices(vocabulary, cum_weights=cum, k=rng.choice((1, 1, 2, 3)))) for _ in range(args.entries * 2)}
    entries = normalize_entries(sorted(phrases)[: args.entries])
    captions = [
        " ".join(w + rng.choice(("", "", "", ",", ".", "!")) for w in rng.choices(vocabulary, cum_weights=cum, k=rng.randint(8, 20))).capitalize()
        for _ in range(args.captions)
    ]
    start = time.perf_counter()
    matcher = ConceptMatcher(entries)
    built = time.perf_counter() - start
    start = time.perf_counter()
    matches = sum(len(matcher.match(c)) for c in captions)
    took = time.perf_counter() - start
    print(f"{len(entries)} entries: index built in {built:.1f} s")
    print(f"{len(captions)} captions in {took:.2f} s: {len(captions) / took:,.0f} captions/s, {matches / len(captions):.2f} matches per caption")


if __name__ == "__main__":
    main()
