"""Benchmark of sequence training and of denominator lattices, on data made in the run.

A synthetic phone task with the shape of the real one: a tied-triphone tree of about ``--pdfs``
pdfs over the 48 TIMIT phones (``bench/decode.py``'s table), a phone-bigram HCLG, utterances of
random phone strings whose frames carry per-pdf Gaussian features. A DNN is trained one CE epoch
on them, then

- the lattice-free criteria (``--criteria``, pdf-bigram denominator) train one epoch each;
- denominator lattices are made as ``asr seq lattices`` makes them (the CE model's scores over
  the loop-marked HCLG, kaldi-decoder, arrays, segment expansion with MPE accuracies): their
  cost per audio second and its parts, and their size (arcs per frame, raw and expanded);
- arc-level MPE trains one epoch over those lattices;
- the boosted-MMI statistics of a GMM (8 Gaussians per pdf around the task's pdf means) over the
  same lattices without segment expansion (``--no-segments``, as stage 14 makes them), as
  ``asr seq gmm-train`` accumulates them (only the (frame, pdf) pairs of the
  lattices and the reference scored) and as a dense ``(T, P)`` likelihood matrix with the dense
  forward-backward would: each in reference units per audio second, and their ratio.

Throughputs are given as ratios to CE training in the same run, and times in units of a float32
matmul measured in the same run (``bench/reference.py``); CE training also as a fraction of the
matmul FLOP rate. Training runs on the CPU and, where CUDA is present, on the GPU too (lattices
are made on the CPU: the decoder is C++ on the host).

    .venv/bin/python bench/seqtrain.py [--utts 48 --pdfs 1500 --units 512 --layers 3 --threads 2]
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from decode import tied_table  # noqa: E402
from reference import Reference, devices  # noqa: E402

from asr.decode import DecodeConfig, Graph, lattice_one, lattice_to_arrays  # noqa: E402
from asr.hmm import Topology, TransitionModel  # noqa: E402
from asr.lang.graph import make_hclg  # noqa: E402
from asr.lang.langdir import make_phone_lang  # noqa: E402
from asr.lang.phones import load_phone_set  # noqa: E402
from asr.nnet import CETrainConfig, HybridDNN, NetConfig, build_frame_data, train_ce  # noqa: E402
from asr.seqtrain import PdfHmmDen, SeqTrainConfig, train_sequence  # noqa: E402
from asr.seqtrain.lattice import expand_lattice, loop_marked_graph  # noqa: E402


def phone_task(tmp: Path, n_utts: int, target_pdfs: int, dim: int, seed: int):
    """Graph dir, loop-marked graph, context dependency and utterances (feats, pdf alignments)
    of random phone strings (10-30 phones, 2-6 frames per HMM state)."""
    g = torch.Generator().manual_seed(seed)
    phones = load_phone_set()
    n_ph = len(phones)
    lines = []
    for u in range(1000):
        seq = torch.randint(0, n_ph, (int(torch.randint(10, 40, (1,), generator=g)),), generator=g).tolist()
        lines.append(f"u{u:04d} sil " + " ".join(phones[i] for i in seq) + " sil")
    (tmp / "text").write_text("\n".join(lines) + "\n")
    lang = make_phone_lang(tmp / "text", tmp / "lang")
    topo = Topology(n_ph, 3)
    ctx = tied_table(n_ph, target_pdfs, g)
    make_hclg(lang, ctx, topo, TransitionModel(ctx.num_pdfs), tmp / "graph")
    loops = loop_marked_graph(tmp / "graph" / "HCLG.fst", tmp / "loops.fst", ctx.num_pdfs)
    means = torch.randn(ctx.num_pdfs, dim, generator=g) * 1.5
    feats, alis = {}, {}
    for i in range(n_utts):
        ph = torch.randint(1, n_ph + 1, (int(torch.randint(10, 31, (1,), generator=g)),), generator=g)
        pdfs = ctx.pdf_sequence(ph, topo)
        y = torch.repeat_interleave(pdfs, torch.randint(2, 7, (pdfs.numel(),), generator=g))
        u = f"spk{i % 5}_u{i:03d}"
        feats[u], alis[u] = means[y] + torch.randn(len(y), dim, generator=g), y
    return tmp / "graph", loops, ctx, feats, alis


def make_lattices(model: HybridDNN, graph: Graph, ctx, feats, alis, utts, beam: float) -> tuple[dict, dict, dict]:
    """Denominator lattices of ``utts`` as ``asr seq lattices`` makes them; (segment-expanded
    lattices, the same without segments as ``--no-segments`` makes them for bMMI, facts)."""
    cfg = DecodeConfig(lattice_beam=beam)
    model.eval()
    t_score = t_dec = t_exp = 0.0
    lats, flat, raw_arcs, arcs, frames = {}, {}, 0, 0, 0
    for u in utts:
        t0 = time.process_time()
        with torch.no_grad():
            ll = model.loglikes(feats[u])
        t1 = time.process_time()
        lat = lattice_one(graph, u, torch.cat([ll, ll], 1), cfg)
        t2 = time.process_time()
        la = lattice_to_arrays(lat)
        lats[u] = expand_lattice(la, ctx.num_pdfs, ctx.pdf2phone, ctx.pdf2state, alis[u])
        t3 = time.process_time()
        t_score, t_dec, t_exp = t_score + t1 - t0, t_dec + t2 - t1, t_exp + t3 - t2
        flat[u] = expand_lattice(la, ctx.num_pdfs, ctx.pdf2phone, ctx.pdf2state, alis[u], segments=False)
        raw_arcs, arcs, frames = raw_arcs + la.src.numel(), arcs + lats[u].num_arcs, frames + ll.shape[0]
    return lats, flat, {"frames": frames, "score_s": t_score, "decode_s": t_dec, "arrays_expand_s": t_exp,
                  "raw_arcs_per_frame": raw_arcs / frames, "arcs_per_frame": arcs / frames}


def ebw_timing(lats: dict, feats: dict, alis: dict, utts: list[str], num_pdfs: int, ref: Reference,
               batch: int = 16, seed: int = 0) -> dict:
    """CPU seconds of one pass of bMMI statistics over ``lats``, sparse (the recipe's) and dense."""
    from asr.gmm.model import DiagGmmSet, GmmAccs
    from asr.seqtrain.ebw import accumulate_batch, accumulate_den
    from asr.seqtrain.lattice import lattice_forward_backward

    g = torch.Generator().manual_seed(seed)
    dim = next(iter(feats.values())).shape[1]
    sums = torch.zeros(num_pdfs, dim)
    counts = torch.zeros(num_pdfs)
    for u in utts:
        sums.index_add_(0, alis[u], feats[u])
        counts.index_add_(0, alis[u], torch.ones(len(alis[u])))
    mu = sums / counts.clamp_min(1).unsqueeze(1)
    m = 8
    gmm = DiagGmmSet((mu.repeat_interleave(m, 0) + 0.3 * torch.randn(num_pdfs * m, dim, generator=g)),
                     torch.ones(num_pdfs * m, dim), torch.full((num_pdfs * m,), -float(torch.log(torch.tensor(m)))),
                     torch.arange(num_pdfs).repeat_interleave(m), num_pdfs)
    out = {}
    for kind in ("sparse", "dense"):
        num, den = GmmAccs.zeros(gmm.num_gauss, dim), GmmAccs.zeros(gmm.num_gauss, dim)
        t0 = time.process_time()
        for i in range(0, len(utts), batch):
            bu = utts[i:i + batch]
            bl = [lats[u] for u in bu]
            if kind == "sparse":
                accumulate_batch(gmm, num, den, [feats[u] for u in bu], [alis[u] for u in bu], bl, 0.1)
                continue
            lls = [gmm.loglikes(feats[u]).double() for u in bu]
            pad = torch.zeros(len(bu), max(x.shape[0] for x in lls), num_pdfs, dtype=torch.float64)
            for k, x in enumerate(lls):
                pad[k, :x.shape[0]] = x
            fb = lattice_forward_backward(bl, 0.1 * pad)
            for k, u in enumerate(bu):
                gmm.accumulate(num, feats[u], alis[u])
                accumulate_den(gmm, den, feats[u], fb.occ[k, :lls[k].shape[0]])
        out[kind] = time.process_time() - t0
    audio = sum(feats[u].shape[0] for u in utts) * 0.01
    return {"sparse_units_per_audio_s": round(ref.units(out["sparse"]) / audio, 2),
            "dense_units_per_audio_s": round(ref.units(out["dense"]) / audio, 2),
            "dense_over_sparse": round(out["dense"] / out["sparse"], 2), "gaussians": gmm.num_gauss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--utts", type=int, default=48)
    ap.add_argument("--pdfs", type=int, default=1500, help="about this many tied pdfs")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--units", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--criteria", default="mpfe,smbr,mmi", help="lattice-free criteria")
    ap.add_argument("--lattice-beam", type=float, default=6.0)
    ap.add_argument("--device", default=None, help="default: cpu, and cuda where present")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: dict = {"threads": args.threads}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        gdir, loops, ctx, feats, alis = phone_task(tmp, args.utts + 8, args.pdfs, 40, args.seed)
        out["graph_build_s"] = round(time.perf_counter() - t0, 1)
        utts = sorted(feats)
        p = ctx.num_pdfs
        train = build_frame_data(feats, alis, 5, 5, p, utts=utts[:args.utts])
        cv = build_frame_data(feats, alis, 5, 5, p, utts=utts[args.utts:])
        den = PdfHmmDen.from_alignments([alis[u] for u in train.utts], p)
        out.update({"utts": len(train.utts), "frames": train.num_frames, "pdfs": p, "den_transitions": den.num_arcs})
        for dev in devices(args.device):
            ref = Reference(dev)
            r: dict = {}
            torch.manual_seed(args.seed)
            model = HybridDNN(NetConfig(40, p, (args.units,) * args.layers, 5, 5))
            model.set_normalisation(*train.spliced_moments())
            # min_epochs=1: the epoch is kept whatever its CV loss (this is a timing, not a model)
            res = train_ce(model, train, cv, CETrainConfig(max_epochs=1, min_epochs=1), f"{d}/ce_{dev}", dev,
                           log=lambda s: None)
            ce_s = res.history[-1]["seconds"]                  # the training loop only, as below
            ce = len(train.utts) / ce_s
            weights = sum(x.numel() for n, x in model.named_parameters() if n.endswith("weight"))
            r["ce_utts_per_s"] = round(ce, 2)
            r["ce_fraction_of_matmul_rate"] = round(ref.fraction(6.0 * weights * train.num_frames / ce_s), 3)
            for crit in args.criteria.split(","):
                h = train_sequence(model, train, cv, den, SeqTrainConfig(criterion=crit, epochs=1),
                                   f"{d}/{crit}_{dev}", pdf2phone=ctx.pdf2phone, device=dev, log=lambda s: None)
                r[f"{crit}_ratio_to_ce"] = round(h[-1]["utts_per_s"] / ce, 3)
            if dev == "cpu":                                   # lattices: made once, on the host
                model.cpu()
                lats, flat, facts = make_lattices(model, Graph(gdir, fst=loops, num_pdfs=2 * p), ctx, feats, alis,
                                            train.utts, args.lattice_beam)
                audio = facts["frames"] * 0.01
                out["lattices"] = {
                    "units_per_audio_s": round(ref.units(facts["score_s"] + facts["decode_s"]
                                                         + facts["arrays_expand_s"]) / audio, 2),
                    "decoder_share": round(facts["decode_s"] / (facts["score_s"] + facts["decode_s"]
                                                                + facts["arrays_expand_s"]), 3),
                    "arrays_and_expansion_share": round(facts["arrays_expand_s"] / (
                        facts["score_s"] + facts["decode_s"] + facts["arrays_expand_s"]), 3),
                    "raw_arcs_per_frame": round(facts["raw_arcs_per_frame"], 1),
                    "arcs_per_frame": round(facts["arcs_per_frame"], 1), "lattice_beam": args.lattice_beam}
                out["gmm_bmmi_statistics"] = ebw_timing(flat, feats, alis, train.utts, p, ref)
            h = train_sequence(model, train, cv, lats, SeqTrainConfig(criterion="mpe", epochs=1), f"{d}/lat_{dev}",
                               pdf2phone=ctx.pdf2phone, device=dev, log=lambda s: None)
            r["lattice_mpe_ratio_to_ce"] = round(h[-1]["utts_per_s"] / ce, 3)
            r["reference"] = ref.finish().as_dict()
            out[dev] = r
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
