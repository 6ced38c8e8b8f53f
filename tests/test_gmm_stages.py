"""End-to-end tests of the GMM training stages on tiny synthetic corpora."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asr.gmm.train import (
    JobRunner, TrainConfig, chain_ali_from_labels, mono_init, train_viterbi, utterance_chains,
)
from asr.hmm import Topology
from asr.hmm.align import frame_labels

PHONES = [1, 5, 9, 14, 20, 27, 33, 40]   # a subset of the 48 ids; 38 = sil in the 48-set order


def synth_corpus(seed: int = 0, num_spk: int = 6, utts_per_spk: int = 6, dim: int = 13,
                 spk_shift: float = 0.0):
    """Utterances of random phone strings; every (phone, state) emits N(mu_ps, 0.3^2 I) for 2-5
    frames; each speaker adds a fixed offset of scale ``spk_shift``. Returns raw feats, phones,
    utt2spk and the true per-frame (phone, state)."""
    from asr.gmm.system import phone_ids

    ids, sil = phone_ids()
    g = torch.Generator().manual_seed(seed)
    means = {(p, s): 2.0 * torch.randn(dim, generator=g) for p in PHONES + [sil] for s in range(3)}
    feats, phones, utt2spk, truth = {}, {}, {}, {}
    for k in range(num_spk):
        spk = f"s{k:02d}"
        off = spk_shift * torch.randn(dim, generator=g)
        for j in range(utts_per_spk):
            u = f"{spk}_u{j:02d}"
            n = int(torch.randint(4, 9, (1,), generator=g))
            seq = [sil] + [PHONES[int(i)] for i in torch.randint(0, len(PHONES), (n,), generator=g)] + [sil]
            frames, lab = [], []
            for p in seq:
                for s in range(3):
                    d = int(torch.randint(2, 6, (1,), generator=g))
                    frames.append(means[(p, s)] + off + 0.3 * torch.randn(d, dim, generator=g))
                    lab += [(p, s)] * d
            feats[u] = torch.cat(frames)
            phones[u] = torch.tensor(seq)
            utt2spk[u] = spk
            truth[u] = lab
    return feats, phones, utt2spk, truth


def test_mono_viterbi_training_learns_the_alignment():
    from asr.gmm.pipeline import FeaturePipeline

    raw, phones, utt2spk, truth = synth_corpus()
    pipe = FeaturePipeline("delta", 13)
    feats = {u: pipe.apply(x) for u, x in raw.items()}
    topo = Topology(48)
    state = mono_init(feats, topo)
    cfg = TrainConfig(num_iters=8, realign_iters=(1, 2, 3, 5), total_gauss=200, max_iter_inc=6, min_count=1.0)
    res = train_viterbi(feats, phones, state, cfg, JobRunner(utt2spk, 1), torch.Generator().manual_seed(0))
    lls = [h["loglike_per_frame"] for h in res.history]
    assert lls[-1] > lls[0] + 5.0
    assert not res.failed and len(res.alis) == len(feats)
    # Frame accuracy of the learned (phone, state) alignment against the truth.
    hit = tot = 0
    for u, a in res.alis.items():
        ph, st = frame_labels(a, phones[u], topo)
        ref = torch.tensor(truth[u])
        hit += int(((ph == ref[:, 0]) & (st == ref[:, 1])).sum())
        tot += ref.shape[0]
    assert hit / tot > 0.9
    assert res.state.gmm.num_gauss > 150


def test_parallel_jobs_give_the_same_statistics():
    from asr.gmm.pipeline import FeaturePipeline

    raw, phones, utt2spk, _ = synth_corpus(seed=1, num_spk=4, utts_per_spk=3)
    feats = {u: FeaturePipeline("delta", 13).apply(x) for u, x in raw.items()}
    state = mono_init(feats, Topology(48))
    chains = utterance_chains(phones, state.ctx, state.topo)
    from asr.gmm.train import equal_alignments

    alis, _ = equal_alignments(feats, chains)
    out = []
    for nj in (1, 2):
        r = JobRunner(utt2spk, nj)
        r.set_data(feats, chains)
        accs, ll, n = r.accumulate(state.gmm, alis)
        a2, failed, score, n2 = r.align(state.gmm, state.trans)
        r.close()
        out.append((accs, ll, n, a2, score))
    torch.testing.assert_close(out[0][0].x, out[1][0].x)
    assert out[0][2] == out[1][2] and abs(out[0][1] - out[1][1]) < 1e-3 * abs(out[0][1])
    assert all(torch.equal(out[0][3][u], out[1][3][u]) for u in out[0][3])


def test_unalignable_utterance_is_reported_and_skipped():
    from asr.gmm.pipeline import FeaturePipeline

    raw, phones, utt2spk, _ = synth_corpus(seed=2, num_spk=2, utts_per_spk=3)
    raw["s00_u00"] = raw["s00_u00"][:5]          # fewer frames than chain states
    feats = {u: FeaturePipeline("delta", 13).apply(x) for u, x in raw.items()}
    state = mono_init(feats, Topology(48))
    cfg = TrainConfig(num_iters=2, realign_iters=(1,), total_gauss=100, max_iter_inc=1, min_count=1.0)
    res = train_viterbi(feats, phones, state, cfg, JobRunner(utt2spk, 1), torch.Generator().manual_seed(0))
    assert res.failed == ["s00_u00"] and "s00_u00" not in res.alis


def test_alignment_labels_round_trip():
    topo = Topology(48)
    phones = torch.tensor([38, 5, 5, 9, 38])
    ali = torch.tensor([0, 0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 14])
    ph, st = frame_labels(ali, phones, topo)
    assert torch.equal(chain_ali_from_labels(phones, ph, st, topo), ali)
    with pytest.raises(ValueError, match="uttX"):
        chain_ali_from_labels(torch.tensor([38, 5, 9, 38]), ph, st, topo, utt="uttX")


def write_synth_data_dir(path: Path, raw, phones, utt2spk) -> None:
    """A data dir whose feats.scp / cmvn.scp hold the synthetic features (Kaldi formats)."""
    import kaldiio

    from asr.features import cmvn_stats
    from asr.lang.phones import load_phone_map, load_phone_set

    names = load_phone_set()
    fold = load_phone_map().fold48to39
    path.mkdir(parents=True)
    utts = sorted(raw)
    with kaldiio.WriteHelper(f"ark,scp:{path}/feats.ark,{path}/feats.scp") as w:
        for u in utts:
            w(u, raw[u].numpy())
    spk2utt: dict[str, list[str]] = {}
    for u in utts:
        spk2utt.setdefault(utt2spk[u], []).append(u)
    with kaldiio.WriteHelper(f"ark,scp:{path}/cmvn.ark,{path}/cmvn.scp") as w:
        for s, us in sorted(spk2utt.items()):
            w(s, cmvn_stats(torch.cat([raw[u] for u in us])).numpy())
    toks = {u: [names[int(i) - 1] for i in phones[u]] for u in utts}
    (path / "text").write_text("".join(f"{u} {' '.join(toks[u])}\n" for u in utts))
    (path / "text.39").write_text("".join(f"{u} {' '.join(fold[t] for t in toks[u])}\n" for u in utts))
    (path / "wav.scp").write_text("".join(f"{u} /dev/null\n" for u in utts))
    (path / "utt2spk").write_text("".join(f"{u} {utt2spk[u]}\n" for u in utts))
    (path / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items())))
    (path / "feats.json").write_text(json.dumps({"type": "mfcc", "dim": 13, "frame_shift_ms": 10}))


@pytest.mark.slow
def test_cli_mono_tri1_tri2_tri3_and_decode(tmp_path: Path, monkeypatch):
    import asr.decode.decoder as decoder
    from asr.cli.main import main
    from asr.lang.langdir import make_phone_lang

    raw, phones, utt2spk, _ = synth_corpus(seed=3, num_spk=8, utts_per_spk=12, spk_shift=0.5)
    train = {u for u in raw if utt2spk[u] < "s06"}
    sub = lambda keep: ({u: raw[u] for u in keep}, {u: phones[u] for u in keep}, {u: utt2spk[u] for u in keep})
    write_synth_data_dir(tmp_path / "train", *sub(train))
    write_synth_data_dir(tmp_path / "dev", *sub(set(raw) - train))
    make_phone_lang(tmp_path / "train" / "text", tmp_path / "lang")
    d, lang, exp = str(tmp_path / "train"), str(tmp_path / "lang"), tmp_path / "exp"
    common = ["--data", d, "--lang", lang, "--iters", "6", "--nj", "2"]
    assert main(["gmm", "tri1", *common, "--ali", str(exp / "mono"), "--out", str(exp / "tri1")]) == 1
    assert main(["gmm", "mono", *common, "--gauss", "150", "--out", str(exp / "mono")]) == 0
    for stage, prev in (("tri1", "mono"), ("tri2", "tri1"), ("tri3", "tri2")):
        assert main(["gmm", stage, *common, "--leaves", "170", "--gauss", "200",
                     "--ali", str(exp / prev), "--out", str(exp / stage)]
                    + (["--align-fmllr"] if stage == "tri3" else [])) == 0, stage
    for stage in ("mono", "tri1", "tri2", "tri3"):
        e = exp / stage
        assert (e / ".done").is_file() and (e / "final.pt").is_file() and (e / "ali_pdf.ark").is_file()
        recs = [json.loads(l) for l in (e / "log" / "train.log").read_text().splitlines()]
        iters = [r for r in recs if "loglike_per_frame" in r]
        assert len(iters) == 6 and iters[-1]["loglike_per_frame"] > iters[0]["loglike_per_frame"]
    from asr.gmm.system import load_system

    sat = load_system(exp / "tri3")
    assert sat.pipeline.kind == "lda" and sat.pipeline.dim == 40 and set(sat.fmllr) == {f"s0{k}" for k in range(6)}
    recs = [json.loads(l) for l in (exp / "tri3" / "log" / "train.log").read_text().splitlines()]
    assert recs[-1] == {"align_fmllr": True, "fmllr_speakers": 6, "fmllr_kept_previous": []}
    searches = []                       # (beam, lattice beam, acwt) of every lattice search
    real = decoder.decode_lattice
    monkeypatch.setattr(decoder, "decode_lattice", lambda g, u, x, cfg: searches.append(
        (cfg.beam, cfg.lattice_beam, round(cfg.acwt, 4))) or real(g, u, x, cfg))
    assert main(["gmm", "decode", "--model", str(exp / "tri3"), "--lang", lang, "--data", str(tmp_path / "dev"),
                 "--out", str(exp / "tri3" / "decode_dev")]) == 0
    line = (exp / "tri3" / "decode_dev" / "scoring").read_text()
    assert line.startswith("%WER") and float(line.split()[1]) < 20.0
    # decode_fmllr.sh's adaptation searches: the speaker-independent pass at first_beam 10 /
    # first_lattice_beam 4, the adapted pass at beam 13 / lattice beam 6, both at acwt 1/12
    n = len(set(raw) - train)
    assert sorted(set(searches)) == [(10.0, 4.0, 0.0833), (13.0, 6.0, 0.0833)]
    assert searches.count((10.0, 4.0, 0.0833)) == n
    # no third search: the adapted pass's lattices are rescored with the final transforms (Kaldi
    # gmm-rescore-lattice); --final-search decodes the adapted features again, with the same
    # transforms and nearly the same errors
    assert len(searches) == 2 * n
    assert main(["gmm", "decode", "--model", str(exp / "tri3"), "--lang", lang, "--data", str(tmp_path / "dev"),
                 "--out", str(exp / "tri3" / "decode_dev_search"), "--final-search"]) == 0
    assert len(searches) == 4 * n
    t1, t2 = (torch.load(exp / "tri3" / k / "trans.pt", weights_only=False) for k in ("decode_dev", "decode_dev_search"))
    assert sorted(t1) == sorted(t2) and all(torch.equal(t1[s], t2[s]) for s in t1)
    from asr.decode.pipeline import read_scoring_errors

    (e1, ref), (e2, _) = (read_scoring_errors(exp / "tri3" / k) for k in ("decode_dev", "decode_dev_search"))
    assert abs(e1 - e2) <= 0.02 * ref, (e1, e2, ref)
    assert main(["gmm", "align", "--model", str(exp / "tri3"), "--data", str(tmp_path / "dev"),
                 "--out", str(exp / "tri3_ali_dev")]) == 0
    assert (exp / "tri3_ali_dev" / "ali_phone.ark").is_file()
    # a speaker-independent system searches at --acwt (default 0.1); SAT keeps 1/12 in every pass
    import asr.decode.pipeline as pipeline

    monkeypatch.setattr(pipeline, "decode_lattice", decoder.decode_lattice)   # the counting one
    searches.clear()
    for opt in ([], ["--acwt", "0.125"]):
        assert main(["gmm", "decode", "--model", str(exp / "tri1"), "--lang", lang, "--data", str(tmp_path / "dev"),
                     "--out", str(exp / "tri1" / f"decode_dev{len(opt)}"), *opt]) == 0
    assert searches.count((13.0, 6.0, 0.1)) == n and searches.count((13.0, 6.0, 0.125)) == n
    searches.clear()
    assert main(["gmm", "decode", "--model", str(exp / "tri3"), "--lang", lang, "--data", str(tmp_path / "dev"),
                 "--out", str(exp / "tri3" / "decode_dev_acwt"), "--acwt", "0.125"]) == 0
    assert {s[2] for s in searches} == {0.0833}
    # SAT features for the DNN: dev with the first-pass transforms, train with the training ones.
    from asr.features import load_feats

    out = tmp_path / "fmllr_dev"
    trans = exp / "tri3" / "decode_dev" / "trans.pt"
    assert main(["gmm", "fmllr-feats", "--model", str(exp / "tri3"), "--data", str(tmp_path / "dev"),
                 "--out", str(out), "--trans", str(trans)]) == 0
    got = load_feats(out)  # identity CMVN stats: what was written is what is read
    want = sat.features(tmp_path / "dev", fmllr=torch.load(trans, weights_only=False))
    assert sorted(got) == sorted(want) and all(got[u].shape[1] == 40 for u in got)
    assert all(torch.allclose(got[u], want[u].float(), atol=1e-5) for u in got)
    assert (out / "text").read_text() == (tmp_path / "dev" / "text").read_text()
    assert main(["gmm", "fmllr-feats", "--model", str(exp / "tri3"), "--data", d, "--out", str(tmp_path / "fm_tr")]) == 0
    # dev speakers have no training transform: a clear error naming them
    assert main(["gmm", "fmllr-feats", "--model", str(exp / "tri3"), "--data", str(tmp_path / "dev"),
                 "--out", str(tmp_path / "bad")]) == 1
    assert not (tmp_path / "bad").exists()


def test_stage_without_its_input_names_the_stage_to_run(tmp_path: Path):
    from asr.gmm.stages import run_tri1
    from asr.gmm.system import load_train_data

    raw, phones, utt2spk, _ = synth_corpus(seed=4, num_spk=2, utts_per_spk=2)
    write_synth_data_dir(tmp_path / "train", raw, phones, utt2spk)
    (tmp_path / "mono").mkdir()
    with pytest.raises(FileNotFoundError, match="asr gmm mono"):
        run_tri1(tmp_path / "train", tmp_path / "lang", tmp_path / "mono", tmp_path / "tri1")
    with pytest.raises(ValueError, match="feature dimension"):
        load_train_data(tmp_path / "train", raw_dim=40)
    data = load_train_data(tmp_path / "train", raw_dim=13)
    assert sorted(data.phones) == sorted(raw) and not data.skipped


def test_speaker_fmllr_undoes_a_speaker_distortion():
    from asr.gmm.model import DiagGmmSet
    from asr.gmm.adapt import estimate_speaker_fmllr
    from asr.transforms import apply_fmllr

    g = torch.Generator().manual_seed(5)
    D, P = 4, 6
    gmm = DiagGmmSet(3 * torch.randn(P, D, generator=g), 0.2 + torch.rand(P, D, generator=g),
                     torch.zeros(P), torch.arange(P), P)
    pdfs = {f"a_u{i}": torch.randint(0, P, (400,), generator=g) for i in range(3)}
    clean = {u: gmm.means[p] + gmm.vars[p].sqrt() * torch.randn(p.numel(), D, generator=g) for u, p in pdfs.items()}
    A = torch.eye(D) + 0.2 * torch.randn(D, D, generator=g)
    b = torch.randn(D, generator=g)
    dist = {u: x @ A.T + b for u, x in clean.items()}
    fm = estimate_speaker_fmllr(gmm, dist, pdfs, {u: "a" for u in pdfs}, iters=20)
    x = torch.cat([dist[u] for u in sorted(pdfs)])
    p = torch.cat([pdfs[u] for u in sorted(pdfs)])
    before = gmm.gauss_posteriors(x, p)[2].mean()
    adapted = apply_fmllr(x, fm["a"])
    logdet = torch.linalg.slogdet(fm["a"][:, :D].double())[1]
    after = gmm.gauss_posteriors(adapted, p)[2].mean() + logdet
    assert after > before + 1.0
    ref = torch.cat([clean[u] for u in sorted(pdfs)])
    assert (adapted - ref).pow(2).mean().sqrt() < 0.15 * ref.std()


def test_mllt_step_raises_the_likelihood_of_correlated_data():
    from asr.gmm.model import DiagGmmSet, GmmAccs
    from asr.gmm.adapt import mllt_step
    from asr.gmm.train import TrainState
    from asr.hmm import ContextDependency, TransitionModel

    g = torch.Generator().manual_seed(6)
    D, P, T = 5, 3, 3000
    R = torch.linalg.qr(torch.randn(D, D, generator=g))[0]          # data diagonal in a rotated space
    pdfs = torch.randint(0, P, (T,), generator=g)
    mu = 3 * torch.randn(P, D, generator=g)
    scale = torch.linspace(0.2, 2.0, D)
    x = (mu[pdfs] + scale * torch.randn(T, D, generator=g)) @ R.T
    gmm = DiagGmmSet.single(x.mean(0), x.var(0), P)
    accs = GmmAccs.zeros(P, D)
    gmm.accumulate(accs, x, pdfs)
    gmm = gmm.update(accs, min_count=1.0)
    before = gmm.gauss_posteriors(x, pdfs)[2].mean()
    topo = Topology(48)
    state = TrainState(topo, ContextDependency.monophone(topo), TransitionModel(P), gmm)
    feats, chains, alis = {"u": x}, {"u": torch.arange(P)}, {"u": pdfs}
    A = mllt_step(state, feats, chains, alis, {"u": torch.ones(T, dtype=torch.float64)})
    y = x @ A.T
    torch.testing.assert_close(state.gmm.means, (gmm.means.double() @ A.double().T).float())
    assert torch.equal(state.gmm.vars, gmm.vars)        # Kaldi: the EM update that follows sets them
    accs = GmmAccs.zeros(P, D)
    state.gmm.accumulate(accs, y, pdfs)
    after_em = state.gmm.update(accs, min_count=1.0)
    after = after_em.gauss_posteriors(y, pdfs)[2].mean() + torch.linalg.slogdet(A.double())[1]
    assert after > before + 0.3


def test_gauss_posterior_pairs_are_the_dense_posteriors_entries():
    """The pair list MLLT gathers (no (T, max components) matrices) holds the nonzero entries of
    gauss_posteriors, bit for bit and in its row-major order."""
    from asr.gmm.model import DiagGmmSet, GmmAccs

    g = torch.Generator().manual_seed(8)
    D, P, T = 6, 4, 700
    pdfs = torch.randint(0, P, (T,), generator=g)
    x = 2 * torch.randn(P, D, generator=g)[pdfs] + torch.randn(T, D, generator=g) @ torch.randn(D, D, generator=g)
    gmm = DiagGmmSet.single(x.mean(0), x.var(0), P)
    for target in (2 * P, 5 * P):                 # unequal component counts, as after mixing up
        accs = GmmAccs.zeros(gmm.num_gauss, D)
        gmm.accumulate(accs, x, pdfs)
        occ = accs.occ.new_zeros(P).index_add_(0, gmm.gauss2pdf, accs.occ)
        gmm = gmm.update(accs, min_count=1.0).split(target, occ * torch.arange(1, P + 1), g)
    assert gmm.max_comp > int(gmm.num_comp.min())
    gauss, post, _ = gmm.gauss_posteriors(x, pdfs)
    keep = gauss >= 0
    rows, ids, p = gmm.gauss_posterior_pairs(x, pdfs)
    assert torch.equal(rows, torch.arange(T).unsqueeze(1).expand_as(gauss)[keep])
    assert torch.equal(ids, gauss[keep]) and torch.equal(p, post[keep])


def _distorted_speaker(seed: int = 5, D: int = 4, P: int = 6, utts: int = 3):
    from asr.gmm.model import DiagGmmSet

    g = torch.Generator().manual_seed(seed)
    gmm = DiagGmmSet(3 * torch.randn(P, D, generator=g), 0.2 + torch.rand(P, D, generator=g),
                     torch.zeros(P), torch.arange(P), P)
    pdfs = {f"a_u{i}": torch.randint(0, P, (400,), generator=g) for i in range(utts)}
    clean = {u: gmm.means[p] + gmm.vars[p].sqrt() * torch.randn(p.numel(), D, generator=g) for u, p in pdfs.items()}
    A = torch.eye(D) + 0.2 * torch.randn(D, D, generator=g)
    b = torch.randn(D, generator=g)
    return gmm, pdfs, {u: x @ A.T + b for u, x in clean.items()}


def test_fmllr_two_pass_equals_one_pass_when_the_first_pass_is_exact():
    """decode_fmllr's estimate from soft posteriors, with posteriors that are exactly the true
    alignment, equals the one-pass (training-style) estimate from that alignment; a second pass on
    the adapted features then finds (almost) the identity, so the composed transform is unchanged.
    Silence frames are weighted in both the same way."""
    from asr.gmm.fmllr_decode import compose_fmllr, speaker_fmllr_from_posteriors
    from asr.gmm.adapt import estimate_speaker_fmllr
    from asr.transforms import apply_fmllr, identity_fmllr

    gmm, pdfs, dist = _distorted_speaker()
    sil_pdf = torch.zeros(gmm.num_pdfs, dtype=torch.bool)
    sil_pdf[0] = True
    utts = sorted(pdfs)
    weights = {u: torch.where(pdfs[u] == 0, 0.01, 1.0).double() for u in utts}
    one = estimate_speaker_fmllr(gmm, dist, pdfs, {u: "a" for u in utts}, iters=30, min_count=0.0,
                                 frame_weights=weights)["a"]
    posts = [(torch.arange(pdfs[u].numel()), pdfs[u], torch.ones(pdfs[u].numel(), dtype=torch.float64)) for u in utts]
    w1 = speaker_fmllr_from_posteriors(gmm, gmm, [dist[u] for u in utts], posts, sil_pdf, 0.01, 30, 0.0)
    torch.testing.assert_close(w1, one, rtol=1e-4, atol=1e-4)
    adapted = [apply_fmllr(dist[u], w1) for u in utts]
    w2 = speaker_fmllr_from_posteriors(gmm, gmm, adapted, posts, sil_pdf, 0.01, 30, 0.0)
    torch.testing.assert_close(w2, identity_fmllr(gmm.dim).float(), rtol=0, atol=2e-3)
    torch.testing.assert_close(compose_fmllr(w2, w1), one, rtol=0, atol=5e-3)
    # composition is function composition
    x = dist[utts[0]]
    torch.testing.assert_close(apply_fmllr(x, compose_fmllr(w2, w1)), apply_fmllr(apply_fmllr(x, w1), w2),
                               rtol=1e-4, atol=1e-4)
    # too little data: no estimate (the caller keeps the identity and names the speaker)
    assert speaker_fmllr_from_posteriors(gmm, gmm, [dist[u] for u in utts], posts, sil_pdf, 0.01, 5, 1e9) is None


def test_speaker_fmllr_silence_weight_and_skipped_speakers():
    """Frames weighted 0 do not count (a speaker with only such frames keeps its transform and
    is reported), and silence-weighted estimation differs from the unweighted one."""
    from asr.gmm.adapt import estimate_speaker_fmllr

    gmm, pdfs, dist = _distorted_speaker(seed=6)
    utts = sorted(pdfs)
    spk = {u: ("a" if u != utts[-1] else "b") for u in utts}
    zero_b = {u: (torch.zeros(400) if spk[u] == "b" else torch.ones(400)).double() for u in utts}
    skipped: list[str] = []
    fm = estimate_speaker_fmllr(gmm, dist, pdfs, spk, iters=5, min_count=50.0, frame_weights=zero_b,
                                skipped=skipped)
    assert skipped == ["b"] and torch.equal(fm["b"][:, :-1], torch.eye(gmm.dim))
    sil = {u: torch.where(pdfs[u] < 3, 0.0, 1.0).double() for u in utts}
    a = estimate_speaker_fmllr(gmm, dist, pdfs, spk, iters=5, min_count=0.0, frame_weights=sil)["a"]
    b = estimate_speaker_fmllr(gmm, dist, pdfs, spk, iters=5, min_count=0.0)["a"]
    assert not torch.allclose(a, b, atol=1e-3)


def test_speaker_fmllr_from_alignment_model_posteriors():
    """Kaldi ``align_fmllr.sh``: Gaussian posteriors from the alignment model on the unadapted
    features. When the alignment model is the SAT model seen through the speaker's distortion,
    those posteriors are the SAT model's on the clean features, so the estimate (from the identity)
    equals the one whose posteriors come from the true transform, and undoes the distortion. A
    speaker with no usable frames keeps its previous transform and is listed; an alignment model
    with other Gaussians is refused."""
    from asr.gmm.adapt import estimate_speaker_fmllr
    from asr.gmm.model import DiagGmmSet
    from asr.transforms import apply_fmllr

    g = torch.Generator().manual_seed(11)
    D, P, M = 3, 4, 2                                  # 4 pdfs of 2 Gaussians each
    means = 2.5 * torch.randn(P * M, D, generator=g)
    vars_ = 0.3 + torch.rand(P * M, D, generator=g)
    gauss2pdf = torch.arange(P).repeat_interleave(M)
    logw = torch.log(torch.tensor([0.3, 0.7])).repeat(P)
    sat = DiagGmmSet(means, vars_, logw, gauss2pdf, P)
    scale = torch.tensor([1.4, 0.7, 1.1])
    shift = torch.tensor([0.5, -1.0, 0.3])
    ali = DiagGmmSet(means * scale + shift, vars_ * scale ** 2, logw, gauss2pdf, P)
    pdfs = {f"a_u{i}": torch.randint(0, P, (600,), generator=g) for i in range(3)}
    pdfs["b_u0"] = torch.randint(0, P, (30,), generator=g)
    spk = {u: u[0] for u in pdfs}
    dist = {}
    for u, p in pdfs.items():
        comp = 2 * p + (torch.rand(p.numel(), generator=g) < 0.7).long()
        dist[u] = (means[comp] + vars_[comp].sqrt() * torch.randn(p.numel(), D, generator=g)) * scale + shift
    true = torch.cat([torch.diag(1 / scale), (-shift / scale)[:, None]], 1)
    prev = {"a": true, "b": torch.cat([torch.eye(D), torch.ones(D, 1)], 1)}
    kept: list[str] = []
    got = estimate_speaker_fmllr(sat, dist, pdfs, spk, iters=40, prev=prev, min_count=50.0, skipped=kept,
                                 post_gmm=ali)
    ref = estimate_speaker_fmllr(sat, dist, pdfs, spk, iters=40, prev=prev, min_count=50.0)
    torch.testing.assert_close(got["a"], ref["a"], rtol=0, atol=1e-4)
    x = torch.cat([dist[u] for u in pdfs if spk[u] == "a"])
    assert (apply_fmllr(x, got["a"]) - apply_fmllr(x, true)).abs().max() < 0.25
    assert kept == ["b"] and torch.equal(got["b"], prev["b"])
    other = DiagGmmSet(means[:-1], vars_[:-1], logw[:-1], gauss2pdf[:-1], P)
    with pytest.raises(ValueError, match="alignment model"):
        estimate_speaker_fmllr(sat, dist, pdfs, spk, post_gmm=other)


def test_gmm_training_on_a_real_dask_cluster_matches_local(tmp_path, monkeypatch):
    """GMM training jobs read their split's features from files under the stage dir on the Dask
    backend, so workers in other processes (a real scheduler, two worker processes) train the
    same model as the local fork executor; the job files are gone afterwards."""
    distributed = pytest.importorskip("distributed")
    from asr.gmm.pipeline import FeaturePipeline

    raw, phones, utt2spk, _ = synth_corpus(num_spk=4, utts_per_spk=4)
    pipe = FeaturePipeline("delta", 13)
    feats = {u: pipe.apply(x) for u, x in raw.items()}
    cfg = TrainConfig(num_iters=4, realign_iters=(1, 2), total_gauss=120, max_iter_inc=3, min_count=1.0)

    def train(**kw):
        state = mono_init(feats, Topology(48))
        return train_viterbi(feats, phones, state, cfg, JobRunner(utt2spk, 2, **kw), torch.Generator().manual_seed(0))

    local = train()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        monkeypatch.setenv("ASR_BACKEND", "dask")
        monkeypatch.setenv("ASR_DASK_SCHEDULER", cluster.scheduler_address)
        with pytest.raises(ValueError, match="work_dir"):
            JobRunner(utt2spk, 2)
        remote = train(work_dir=tmp_path, log_dir=tmp_path / "log")
    assert set(remote.alis) == set(local.alis)
    assert all(torch.equal(remote.alis[u], local.alis[u]) for u in local.alis)
    assert torch.allclose(remote.state.gmm.means, local.state.gmm.means, atol=1e-5)
    assert [h["loglike_per_frame"] for h in remote.history] == pytest.approx(
        [h["loglike_per_frame"] for h in local.history], rel=1e-6)
    assert not list((tmp_path / ".jobdata").glob("*.pt"))
    assert (tmp_path / "log" / "acc.1.2.log").is_file()


def _two_speaker_setup(seed: int = 21):
    """A 4-pdf model of 3 Gaussians each, 5 speakers with their own affine distortion, and a
    'previous' transform per speaker (SAT re-estimation starts from it)."""
    from asr.gmm.model import DiagGmmSet

    g = torch.Generator().manual_seed(seed)
    D, P, M = 3, 4, 3
    gmm = DiagGmmSet(2.0 * torch.randn(P * M, D, generator=g), 0.3 + torch.rand(P * M, D, generator=g),
                     torch.log(torch.tensor([0.2, 0.3, 0.5])).repeat(P), torch.arange(P).repeat_interleave(M), P)
    feats, pdfs, spk, weights, prev = {}, {}, {}, {}, {}
    for k in range(5):
        s = f"s{k}"
        A = torch.eye(D) + 0.2 * torch.randn(D, D, generator=g)
        b = 0.5 * torch.randn(D, generator=g)
        prev[s] = torch.cat([torch.eye(D) + 0.05 * torch.randn(D, D, generator=g), 0.1 * torch.randn(D, 1, generator=g)], 1)
        for j in range(2):
            u = f"{s}_u{j}"
            n = 150 + 40 * k + 10 * j
            p = torch.randint(0, P, (n,), generator=g)
            comp = M * p + torch.randint(0, M, (n,), generator=g)
            x = gmm.means[comp] + gmm.vars[comp].sqrt() * torch.randn(n, D, generator=g)
            feats[u], pdfs[u], spk[u] = x @ A.T + b, p, s
            weights[u] = torch.where(p == 0, 0.0, 1.0).double()        # pdf 0 plays silence
    return gmm, feats, pdfs, spk, weights, prev


def test_speaker_fmllr_in_jobs_equals_the_direct_statistics():
    """The per-job estimate (posteriors pdf by pdf for all the job's frames, statistics from
    per-frame terms, speakers spread over jobs) gives each speaker the transform computed directly
    from its own sparse Gaussian posteriors (``FmllrStats.accumulate``), with 1 or 2 jobs, from the
    identity or from a previous transform, with frame weights."""
    from asr.gmm.adapt import estimate_speaker_fmllr
    from asr.transforms import FmllrStats, apply_fmllr, estimate_fmllr

    def gaussian_posteriors_sparse(gmm, x, pdfs):   # the per-speaker posteriors the jobs replaced
        rows, g, p = gmm.gauss_posterior_pairs(x, pdfs)
        return torch.sparse_coo_tensor(torch.stack([rows.cpu(), g.cpu()]), p.double().cpu(),
                                       (x.shape[0], gmm.num_gauss), check_invariants=True).coalesce()

    gmm, feats, pdfs, spk, weights, prev = _two_speaker_setup()
    means, vars_ = gmm.means.double(), gmm.vars.double()
    for start in (None, prev):
        ref = {}
        for s in sorted(set(spk.values())):
            us = sorted(u for u in pdfs if spk[u] == s)
            x, p = torch.cat([feats[u] for u in us]), torch.cat([pdfs[u] for u in us])
            w0 = None if start is None else start[s]
            post = gaussian_posteriors_sparse(gmm, x if w0 is None else apply_fmllr(x, w0), p)
            fw = torch.cat([weights[u] for u in us])
            post = torch.sparse_coo_tensor(post.indices(), post.values() * fw[post.indices()[0]], post.shape,
                                           check_invariants=False)
            st = FmllrStats(gmm.dim)
            st.accumulate(x.double(), post, means, vars_)
            ref[s] = estimate_fmllr(st, iters=8, w0=w0).float()
        for nj in (1, 2):
            got = estimate_speaker_fmllr(gmm, feats, pdfs, spk, iters=8, prev=start, min_count=0.0,
                                         frame_weights=weights, nj=nj)
            assert list(got) == sorted(ref)
            for s in ref:
                torch.testing.assert_close(got[s], ref[s], rtol=0, atol=2e-5)


def test_fmllr_statistics_from_frame_terms_equal_those_from_posteriors():
    from asr.transforms import FmllrStats

    g = torch.Generator().manual_seed(3)
    T, D, J = 50, 4, 7
    x = torch.randn(T, D, generator=g, dtype=torch.float64)
    post = torch.rand(T, J, generator=g, dtype=torch.float64)
    means = torch.randn(J, D, generator=g, dtype=torch.float64)
    vars_ = 0.5 + torch.rand(J, D, generator=g, dtype=torch.float64)
    a, b = FmllrStats(D), FmllrStats(D)
    a.accumulate(x, post, means, vars_)
    b.accumulate_terms(x, post @ (1 / vars_), post @ (means / vars_), float(post.sum()))
    assert a.beta == pytest.approx(b.beta)
    torch.testing.assert_close(a.k, b.k)
    torch.testing.assert_close(a.g, b.g)
    with pytest.raises(ValueError, match="q and r"):
        b.accumulate_terms(x, post[:, :D], post[:-1, :D], 1.0)


def test_alignment_model_statistics_pool_all_frames_as_per_utterance_accumulation():
    """``estimate_alignment_model`` (posteriors on the adapted features, statistics of the
    speaker-independent ones, all frames pdf by pdf) equals accumulating utterance by utterance
    with ``gauss_posteriors`` + ``GmmAccs.accumulate`` (Kaldi ``gmm-acc-stats-twofeats``)."""
    from asr.gmm.adapt import estimate_alignment_model
    from asr.gmm.model import GmmAccs

    gmm, feats, pdfs, _, _, prev = _two_speaker_setup(seed=4)
    from asr.transforms import apply_fmllr

    adapted = {u: apply_fmllr(x, prev[u.split("_")[0]]) for u, x in feats.items()}
    accs = GmmAccs.zeros(gmm.num_gauss, gmm.dim)
    for u in sorted(pdfs):
        g, p, _ = gmm.gauss_posteriors(adapted[u], pdfs[u])
        accs.accumulate(feats[u], g, p)
    ref = gmm.update(accs, min_var=1e-3, min_count=0.0, remove_low_count=False)
    got = estimate_alignment_model(gmm, adapted, feats, pdfs, 1e-3)
    torch.testing.assert_close(got.means, ref.means, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.vars, ref.vars, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.log_weights, ref.log_weights, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="same frames"):
        gmm.accumulate_twofeats(GmmAccs.zeros(gmm.num_gauss, gmm.dim), feats["s0_u0"], feats["s0_u1"], pdfs["s0_u0"])
