"""Decoding benchmark: HCLG build time / size and decoding real-time factor (RTF).

A realistic TIMIT-sized phone-recognition graph: the 48 phones, a Witten-Bell phone bigram from
transcripts (``--text``, default: random phone strings), 3-state HMMs and a tree-like tied
triphone table with ``--pdfs`` (about) pdfs (or monophones with ``--mono``). Synthetic
GMM-like log-likelihoods: per frame ``-60 + std * N(0, 1)`` for every pdf (``--std``, default 8
nats) with ``--margin`` nats (default 20) added to the true pdf; the true pdf sequence follows
random phones of 3 frames per state. Confusable acoustics (small margin) cost much more,
above all for lattices: kaldi-decoder's LatticeSimpleDecoder has no max-active limit.
RTF = decoding CPU seconds / audio seconds (10 ms frames), one thread; each figure is also given
in units of a float32 512^3 matmul measured in the same run (``bench/reference.py``): the cost of
one audio second in such products, which a busy machine changes far less than the RTF. The
scoring of a dev grid of 20 LM weights is timed both ways: one batched dynamic programme
(``asr.decode.lattice.lattice_best_paths``) and OpenFst's shortest path per weight.

    python bench/decode.py [--utts 20] [--frames 300] [--pdfs 1500] [--text data/train/text]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr.decode import DecodeConfig, Graph, decode_utts, lattice_best_words, lattice_one, make_lattices  # noqa: E402
from asr.decode.lattice import lattice_best_paths  # noqa: E402
from asr.hmm import ContextDependency, Topology, TransitionModel  # noqa: E402
from asr.lang.graph import make_hclg  # noqa: E402
from asr.lang.langdir import make_phone_lang  # noqa: E402
from asr.lang.phones import load_phone_set  # noqa: E402


def tied_table(P: int, target_pdfs: int, g: torch.Generator) -> ContextDependency:
    """Leaves per (centre, state) split by a random left-context class and a right-context bit."""
    S = 3
    per = max(1, target_pdfs // (P * S))
    table = torch.full((P + 1, P + 1, P + 1, S), -1, dtype=torch.long)
    nxt = 0
    for c in range(1, P + 1):
        for s in range(S):
            lcls = torch.randint(0, max(1, per // 2), (P + 1,), generator=g)
            rcls = torch.randint(0, 2 if per > 1 else 1, (P + 1,), generator=g)
            ids = lcls.view(-1, 1) * (2 if per > 1 else 1) + rcls.view(1, -1)
            u, inv = torch.unique(ids, return_inverse=True)
            table[:, c, :, s] = inv + nxt
            nxt += u.numel()
    return ContextDependency(table, 3, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utts", type=int, default=20)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--pdfs", type=int, default=1500)
    ap.add_argument("--mono", action="store_true")
    ap.add_argument("--margin", type=float, default=20.0)
    ap.add_argument("--std", type=float, default=8.0)
    ap.add_argument("--text", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from reference import Reference

    ref = Reference("cpu")
    g = torch.Generator().manual_seed(args.seed)
    phones = load_phone_set()
    P = len(phones)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        text = Path(args.text) if args.text else tmp / "text"
        if not args.text:
            lines = []
            for u in range(1000):
                n = int(torch.randint(10, 40, (1,), generator=g))
                seq = torch.randint(0, P, (n,), generator=g).tolist()
                lines.append(f"u{u:04d} sil " + " ".join(phones[i] for i in seq) + " sil")
            text.write_text("\n".join(lines) + "\n")
        lang = make_phone_lang(text, tmp / "lang")
        topo = Topology(P, 3)
        ctx = ContextDependency.monophone(topo) if args.mono else tied_table(P, args.pdfs, g)
        trans = TransitionModel(ctx.num_pdfs)
        t0 = time.perf_counter()
        make_hclg(lang, ctx, topo, trans, tmp / "graph")
        build = time.perf_counter() - t0
        import json

        meta = json.loads((tmp / "graph" / "graph.json").read_text())
        print(f"graph: {'mono' if args.mono else 'tri'} {ctx.num_pdfs} pdfs, {meta['num_states']} states, "
              f"{meta['num_arcs']} arcs, build {build:.2f} s")
        lls, truth = {}, {}
        for u in range(args.utts):
            n_ph = max(1, args.frames // 9)
            ph = torch.randint(1, P + 1, (n_ph,), generator=g)
            pdfs = ctx.pdf_sequence(ph, topo)
            dur = torch.full((pdfs.numel(),), args.frames // pdfs.numel())
            dur[: args.frames - int(dur.sum())] += 1
            frames = torch.repeat_interleave(pdfs, dur)
            ll = -60.0 + args.std * torch.randn(frames.numel(), ctx.num_pdfs, generator=g)
            ll[torch.arange(frames.numel()), frames] += args.margin
            lls[f"u{u}"] = ll
            truth[f"u{u}"] = [phones[int(i) - 1] for i in ph]
        audio = sum(x.shape[0] for x in lls.values()) * 0.01
        cfg = DecodeConfig()
        t0 = time.process_time()
        hyp = decode_utts(tmp / "graph", lls, cfg)
        t1 = time.process_time() - t0
        t0 = time.process_time()
        lats = make_lattices(tmp / "graph", lls, cfg)
        t2 = time.process_time() - t0
        arcs = sum(la.src.numel() for la in lats.values()) / max(1, len(lats))
        graph = Graph(tmp / "graph")
        raw = [lattice_one(graph, u, ll, cfg) for u, ll in lls.items()]
        grid = [float(x) for x in range(1, 21)]
        t0 = time.process_time()
        batched = lattice_best_paths(raw, grid)
        t3 = time.process_time() - t0
        t0 = time.process_time()
        per_weight = [[lattice_best_words(lat, w) for w in grid] for lat in raw]
        t4 = time.process_time() - t0
        ref.finish()
        from asr.score import score

        per = score(truth, hyp).wer_line("(48 phones, vs the synthetic truth)")
        print(ref.line())
        u = ref.units
        print(f"decode 1-best (FasterDecoder, beam {cfg.beam}): RTF {t1 / audio:.4f} = {u(t1) / audio:.0f} units "
              f"per audio second ({audio:.1f} s audio); {per}")
        print(f"lattices (LatticeSimpleDecoder, lattice beam {cfg.lattice_beam}) + tensor arrays: "
              f"RTF {t2 / audio:.4f} = {u(t2) / audio:.0f} units per audio second, {arcs:.0f} arcs/utt")
        print(f"best paths of {len(grid)} LM weights: batched {u(t3) / audio:.1f} units per audio second, "
              f"OpenFst per weight {u(t4) / audio:.1f} (ratio {t4 / max(t3, 1e-9):.2f}); "
              f"same paths: {batched == per_weight}")


if __name__ == "__main__":
    main()
