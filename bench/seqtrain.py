"""Benchmark of sequence training: utterances/s per criterion and the ratio to CE training
throughput on the same synthetic data and network. Lattice-free criteria (mpfe, smbr, mmi) use a
pdf-bigram denominator; lattice MPE (``lattice_mpe``) uses random frame-synchronous lattices of
the size measured on the default corpus (``--lattice-arcs`` arcs per frame after segment
expansion; 189 there, ``stats.json`` of ``asr seq lattices``).

    .venv/bin/python bench/seqtrain.py [--utts 48 --pdfs 1500 --units 512 --layers 3 --threads 2]
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import tempfile

import torch

from asr.nnet import CETrainConfig, HybridDNN, NetConfig, build_frame_data, train_ce
from asr.nnet.synthetic import synth_corpus
from asr.seqtrain import PdfHmmDen, SeqTrainConfig, train_sequence
from asr.seqtrain.lattice import DenLattice


def random_den_lattice(num_frames: int, num_pdfs: int, arcs_per_frame: int, gen: torch.Generator,
                       fanout: int = 3) -> DenLattice:
    """A frame-synchronous lattice with ``arcs_per_frame / fanout`` nodes per frame, random
    pdfs, graph scores and segment accuracies (only its size matters for throughput)."""
    width = max(1, arcs_per_frame // fanout)
    nodes_at = [torch.tensor([0])] + [1 + t * width + torch.arange(width) for t in range(num_frames)]
    src, dst, frame = [], [], []
    for t in range(num_frames):
        s = nodes_at[t].repeat_interleave(fanout if t else arcs_per_frame)
        src.append(s)
        dst.append(nodes_at[t + 1][torch.randint(0, width, (s.numel(),), generator=gen)])
        frame.append(torch.full((s.numel(),), t))
    src, dst, frame = torch.cat(src), torch.cat(dst), torch.cat(frame)
    n = 1 + num_frames * width
    a = src.numel()
    final = torch.full((n,), float("-inf"), dtype=torch.float64)
    final[nodes_at[-1]] = 0.0
    return DenLattice(num_nodes=n, num_frames=num_frames, frame=frame.int(), src=src.int(), dst=dst.int(),
                      pdf=torch.randint(0, num_pdfs, (a,), generator=gen).int(), weight=-torch.rand(a, generator=gen),
                      seg_acc=(torch.rand(a, generator=gen) < 0.1).float() * (2 * torch.rand(a, generator=gen) - 1),
                      final=final, final_acc=torch.zeros(n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--utts", type=int, default=48)
    ap.add_argument("--pdfs", type=int, default=1500)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--units", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--den-utts", type=int, default=1000, help="synthetic alignments for the denominator")
    ap.add_argument("--criteria", default="mpfe,smbr,mmi", help="lattice-free criteria")
    ap.add_argument("--lattice-arcs", type=int, default=189, help="arcs per frame of the MPE lattices")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    feats, alis = synth_corpus(args.utts + 8, args.pdfs, 40, seed=0, seg_frames=(5, 15), segs=(20, 40))
    utts = sorted(feats)
    train = build_frame_data(feats, alis, 5, 5, args.pdfs, utts=utts[:args.utts])
    cv = build_frame_data(feats, alis, 5, 5, args.pdfs, utts=utts[args.utts:])
    model = HybridDNN(NetConfig(40, args.pdfs, (args.units,) * args.layers, 5, 5))
    model.set_normalisation(*train.spliced_moments())
    p2p = torch.arange(args.pdfs) // 3 % 48 + 1
    # the denominator from many more alignments, so its transition count is that of a real tree
    # (a few tens of thousands of pdf bigrams) rather than of the few benchmark utterances
    _, many = synth_corpus(args.den_utts, args.pdfs, 1, seed=1, seg_frames=(5, 15), segs=(20, 40))
    den = PdfHmmDen.from_alignments([*many.values(), *(alis[u] for u in train.utts)], args.pdfs)
    out = {"utts": len(train.utts), "frames": train.num_frames, "pdfs": args.pdfs, "den_transitions": den.num_arcs,
           "threads": args.threads}
    with tempfile.TemporaryDirectory() as d:
        res = train_ce(model, train, cv, CETrainConfig(max_epochs=1), d + "/ce", log=lambda s: None)
        ce = len(train.utts) / res.history[-1]["seconds"]   # training loop only, as for sequence training
        out["ce_utts_per_s"] = round(ce, 2)
        for crit in args.criteria.split(","):
            h = train_sequence(model, train, cv, den, SeqTrainConfig(criterion=crit, epochs=1), f"{d}/{crit}",
                               pdf2phone=p2p, log=lambda s: None)
            out[f"{crit}_utts_per_s"] = round(h[-1]["utts_per_s"], 2)
            out[f"{crit}_ratio_to_ce"] = round(h[-1]["utts_per_s"] / ce, 3)
        g = torch.Generator().manual_seed(0)
        lats = {u: random_den_lattice(int(n), args.pdfs, args.lattice_arcs, g)
                for u, n in zip(train.utts, train.lengths.tolist())}
        h = train_sequence(model, train, cv, lats, SeqTrainConfig(criterion="mpe", epochs=1), f"{d}/lat",
                           pdf2phone=p2p, log=lambda s: None)
        out["lattice_arcs_per_frame"] = args.lattice_arcs
        out["lattice_mpe_utts_per_s"] = round(h[-1]["utts_per_s"], 2)
        out["lattice_mpe_ratio_to_ce"] = round(h[-1]["utts_per_s"] / ce, 3)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
