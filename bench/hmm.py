"""Throughput of the HMM layer on synthetic data: tree building and batched forced alignment.

Usage: python bench/hmm.py [--device cpu|cuda] [--utts 200] [--leaves 2000] [--seed 0]
Prints one line per measurement (frames/s for alignment, seconds for tree stages), each also in
units of the reference matmul measured in the same run (``bench/reference.py``). Alignment runs
on the CPU and, where CUDA is present, on the GPU (``--device`` for one of them).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import Reference, devices  # noqa: E402

from asr.hmm import Topology, TransitionModel, chain_phones, chain_states
from asr.hmm.align import equal_align, viterbi_align
from asr.hmm.tree import accumulate_tree_stats, grow_tree, make_questions


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="default: cpu, and cuda where present")
    ap.add_argument("--utts", type=int, default=200)
    ap.add_argument("--phones-per-utt", type=int, default=30)
    ap.add_argument("--leaves", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    ref = Reference("cpu")
    g = torch.Generator().manual_seed(a.seed)
    topo = Topology(48, 3, {37: 5})
    phone_seqs = [torch.randint(1, 49, (a.phones_per_utt,), generator=g) for _ in range(a.utts)]

    feats, pa, sa = [], [], []
    for ph in phone_seqs:
        cp, cs = chain_phones(ph, topo), chain_states(ph, topo)
        pos = equal_align(cp.numel() * 5, cp.numel())
        pa.append(cp[pos])
        sa.append(cs[pos])
        feats.append(torch.randn(pos.numel(), 39, generator=g))
    nf = sum(f.shape[0] for f in feats)
    t0 = time.perf_counter()
    stats = accumulate_tree_stats(feats, pa, sa)
    t1 = time.perf_counter()
    qs = make_questions(stats, 48, [37])
    t2 = time.perf_counter()
    tree = grow_tree(stats, qs, topo, a.leaves, min_count=50, ci_phones=[37])
    t3 = time.perf_counter()
    cd = tree.to_context_dependency()
    t4 = time.perf_counter()
    u = ref.units
    print(f"tree: {nf} frames, {stats.keys.shape[0]} contexts; accumulate {t1 - t0:.3f}s ({u(t1 - t0):.1f} units), "
          f"{len(qs)} questions {t2 - t1:.3f}s ({u(t2 - t1):.1f}), grow to {tree.num_leaves} leaves "
          f"{t3 - t2:.3f}s ({u(t3 - t2):.1f}), compile table {t4 - t3:.3f}s ({u(t4 - t3):.1f})")
    print("  " + ref.finish().line())

    tm = TransitionModel(cd.num_pdfs)
    chains = [cd.pdf_sequence(ph, topo) for ph in phone_seqs]
    lls_cpu = [torch.randn(c.numel() * 4, cd.num_pdfs, generator=g) for c in chains]
    for name in devices(a.device):
        dev = torch.device(name)
        dref = Reference(dev)
        lls = [x.to(dev) for x in lls_cpu]
        nf = sum(x.shape[0] for x in lls)
        viterbi_align(lls[: a.batch_size], chains[: a.batch_size], tm, a.batch_size)  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = viterbi_align(lls, chains, tm, a.batch_size)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        dref.finish()
        print(f"align ({dev}, threads={torch.get_num_threads()}): {len(lls)} utts, {nf} frames, "
              f"{cd.num_pdfs} pdfs, {dt:.3f}s = {nf / dt:.0f} frames/s = {dref.units(dt) / nf * 1e3:.2f} reference "
              f"units per 1000 frames, unaligned {sum(r is None for r in res)}")
        print("  " + dref.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
