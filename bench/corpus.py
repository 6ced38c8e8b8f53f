"""Corpus generation speed and the facts of a generated corpus.

    .venv/bin/python bench/corpus.py [--size small] [--seed 0] [--nj 2] [--out DIR]

Prints seconds of audio per CPU second (parent + workers + engine subprocesses) and per
wall second, the CPU cost of one audio second in units of a one-thread float32 matmul measured in
the same run (``bench/reference.py``), then hours, speakers, utterances, voices and conditions
per split.
"""
from __future__ import annotations

import argparse
import collections
import csv
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from asr.corpus.synth import SynthConfig, generate_corpus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import Reference  # noqa: E402


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nj", type=int, default=2)
    ap.add_argument("--out", default=None, help="keep the corpus here (default: temp dir)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ref = Reference("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "corpus")
        c0, t0 = _cpu(), time.perf_counter()
        facts = generate_corpus(out, SynthConfig(size=args.size, seed=args.seed), nj=args.nj)
        cpu, wall = _cpu() - c0, time.perf_counter() - t0
        sec = float(facts["seconds"])  # type: ignore[arg-type]
        print(f"size={args.size} seed={args.seed} nj={args.nj}")
        print(f"generation: {sec / 3600:.3f} h of audio in {wall:.1f} s wall, {cpu:.1f} CPU-s "
              f"-> {sec / cpu:.0f} s audio / CPU-s, {sec / wall:.0f} x real time (wall); "
              f"{ref.finish().units(cpu) / sec:.2f} reference units (CPU) per audio second")
        print(ref.line())
        rows = list(csv.DictReader(open(out / "DOC" / "SPEAKERS.TSV"), delimiter="\t"))
        for split in ("train", "dev", "test"):
            r = [x for x in rows if x["set"] == split]
            g = collections.Counter(x["gender"] for x in r)
            print(f"{split:5s}: {len(r)} speakers ({g['m']} m / {g['f']} f), "
                  f"{len({(x['engine'], x['voice']) for x in r})} voices")
        print(f"total: {facts['utterances']} utterances (incl. SA), "
              f"{sec / 3600:.2f} h, train {float(facts['seconds_train']) / 3600:.2f} h")  # type: ignore[arg-type]
        print("voices:", ", ".join(facts["voices"]))  # type: ignore[arg-type]
        print("test-only voices:", ", ".join(facts["test_only_voices"]))  # type: ignore[arg-type]
        cond = collections.Counter()
        for x in rows:
            for part in x["condition"].split("+"):
                cond[part.split("@")[0].rstrip("0123456789.s").replace("reverb", "reverb")] += 1
        print("conditions (speakers):", dict(sorted(cond.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
