"""DNN realignment (``asr dnn align``) on a monophone system built in the test: the chain
(transcript) is kept, lengths match, and a DNN trained on the alignment reproduces it."""
from __future__ import annotations

import numpy as np
import torch

from asr.cli.main import main
from asr.features.compute import cmvn_stats
from asr.gmm.model import DiagGmmSet
from asr.gmm.pipeline import FeaturePipeline
from asr.gmm.system import GmmSystem
from asr.hmm import ContextDependency, Topology, TransitionModel
from asr.nnet.io import _kaldi_io, read_alignments, write_alignments

torch.set_num_threads(1)


def test_realign_keeps_chain_and_agrees_with_reference(tmp_path):
    kio = _kaldi_io()
    n_ph = 4
    topo = Topology(n_ph)
    ctx = ContextDependency.monophone(topo)
    trans = TransitionModel(ctx.num_pdfs)
    p = ctx.num_pdfs
    gmm = DiagGmmSet.single(torch.zeros(6), torch.ones(6), p)
    sys_ = GmmSystem(topo, ctx, trans, gmm, FeaturePipeline(kind="delta", raw_dim=2), "mono", [1])
    gdir = tmp_path / "mono"
    gdir.mkdir()
    torch.save(sys_.to_dict(), gdir / "final.pt")
    g = torch.Generator().manual_seed(0)
    means = torch.randn(p, 6, generator=g) * 2
    data = tmp_path / "data"
    (data / "m").mkdir(parents=True)
    pdf_alis, st_alis, scp, u2s, cm = {}, {}, [], [], []
    for i in range(24):
        u = f"s{i % 6}_u{i:02d}"
        phones = torch.randint(1, n_ph + 1, (5,), generator=g)
        chain = ctx.pdf_sequence(phones, topo)
        states = torch.arange(3).repeat(5)
        durs = torch.randint(2, 6, (len(chain),), generator=g)
        pdf_alis[u] = torch.repeat_interleave(chain, durs)
        st_alis[u] = torch.repeat_interleave(states, durs)
        x = means[pdf_alis[u]] + torch.randn(len(pdf_alis[u]), 6, generator=g)
        f = data / "m" / f"{u}.mat"
        with open(f, "wb") as fh:
            kio.write_mat(fh, x.numpy().astype(np.float32))
        q = data / "m" / f"c{u}.mat"
        with open(q, "wb") as fh:
            kio.write_mat(fh, cmvn_stats(x).numpy())
        scp.append(f"{u} {f}\n")
        u2s.append(f"{u} {u}\n")
        cm.append(f"{u} {q}\n")
    (data / "feats.scp").write_text("".join(scp))
    (data / "utt2spk").write_text("".join(u2s))
    (data / "cmvn.scp").write_text("".join(cm))
    write_alignments(pdf_alis, gdir / "ali_pdf.ark")
    write_alignments(st_alis, gdir / "ali_state.ark")
    assert main(["dnn", "train", "--data", str(data), "--ali", str(gdir), "--out", str(tmp_path / "dnn"),
                 "--random-init", "--layers", "1", "--units", "32", "--context", "2", "--epochs", "6",
                 "--batch-size", "32", "--device", "cpu", "--cv-fraction", "0.2"]) == 0
    assert main(["dnn", "align", "--model", str(tmp_path / "dnn"), "--data", str(data), "--ali", str(gdir),
                 "--out", str(tmp_path / "ali")]) == 0
    new = read_alignments(tmp_path / "ali" / "ali_pdf.ark")
    assert sorted(new) == sorted(pdf_alis)
    agree = 0
    for u, ref in pdf_alis.items():
        a = new[u]
        assert a.shape == ref.shape
        runs = a[torch.cat([torch.tensor([True]), a[1:] != a[:-1]])]
        ref_runs = ref[torch.cat([torch.tensor([True]), ref[1:] != ref[:-1]])]
        assert torch.equal(runs, ref_runs), u           # same state chain, re-segmented
        agree += int((a == ref).sum())
    assert agree / sum(len(r) for r in pdf_alis.values()) > 0.8
    # the realigned dir is usable as targets (pdf count from the GMM system it points to)
    from asr.nnet.stages import load_targets

    assert load_targets(tmp_path / "ali").num_pdfs == p
    t = load_targets(tmp_path / "ali")
    assert torch.equal(t.pdf2phone, ctx.pdf2phone) and t.silence == [1]
    # denominator lattices and sequence training take it as --ali (the tree through gmm_system)
    from asr.nnet.stages import gmm_system_dir

    assert gmm_system_dir(tmp_path / "ali") == gdir.resolve() and gmm_system_dir(gdir) == gdir
