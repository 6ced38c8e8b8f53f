"""The report's analyses against independent expectations: alignment pairs vs asr.score's counts,
the speaker-level gain test on planted effects, direct standardisation on hand-computed numbers,
condition parsing, and the training-curve flags."""
import json
import math
import random

import numpy as np
import pytest
import torch

from asr.report import conditions as C
from asr.report.alignment import align_pairs, confusion_counts
from asr.report.curves import load_curve, phones_per_frame, seq_scale
from asr.report.speakers import Speaker, SpeakerTable, parse_condition
from asr.score import ScoreResult, align_counts_batch


@pytest.mark.parametrize("method", ["sclite", "levenshtein"])
def test_align_pairs_gives_the_scoring_counts(method):
    rng = random.Random(1)
    refs, hyps = [], []
    for _ in range(1500):
        voc = "abcde"[:rng.randint(1, 5)]
        refs.append([rng.choice(voc) for _ in range(rng.randint(0, 9))])
        hyps.append([rng.choice(voc) for _ in range(rng.randint(0, 9))])
    counts = align_counts_batch(refs, hyps, method).tolist()
    for ref, hyp, c in zip(refs, hyps, counts):
        pairs = align_pairs(ref, hyp, method)
        assert [a for a, _ in pairs if a is not None] == ref
        assert [b for _, b in pairs if b is not None] == hyp
        got = [sum(a is not None and b is not None and a == b for a, b in pairs),
               sum(a is not None and b is not None and a != b for a, b in pairs),
               sum(a is None for a, _ in pairs), sum(b is None for _, b in pairs)]
        assert got == c, (ref, hyp)


def test_confusion_counts_rows_are_reference_occurrences():
    phones = ["aa", "iy", "s"]
    ref = {"u1": ["aa", "iy", "s"], "u2": ["s", "s"], "u3": ["aa"], "u4": ["iy"]}
    hyp = {"u1": ["aa", "aa", "s"], "u2": ["s"], "u4": ["iy", "s"]}  # u3 missing: all deletions
    conf, ins = confusion_counts(ref, hyp, phones)
    assert conf.sum(axis=1).tolist() == [2, 2, 3]  # occurrences of aa, iy, s
    assert conf.tolist() == [[1, 0, 0, 1], [1, 1, 0, 0], [0, 0, 2, 1]]
    assert ins.tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="u9"):
        confusion_counts({"u9": ["zz"]}, {}, phones)


def test_parse_condition():
    assert parse_condition("clean") == (None, math.inf, None, False)
    assert parse_condition("pink@12dB+reverb0.41s+telephone") == ("pink", 12.0, 0.41, True)
    assert parse_condition("clean+telephone") == (None, math.inf, None, True)
    with pytest.raises(ValueError):
        parse_condition("pink@loud")


def _speaker_result(errs_a, errs_b, n=10, utts_per_spk=4, prefix="s", start=0):
    """Two results over speakers <prefix><start>..: speaker k's utterances hold errs_*[k] errors
    in total (n reference tokens per utterance)."""
    utts, ca, cb, u2s = [], [], [], {}
    for k, (ea, eb) in enumerate(zip(errs_a, errs_b), start):
        for j in range(utts_per_spk):
            u = f"{prefix}{k}_u{j}"
            utts.append(u)
            u2s[u] = f"{prefix}{k}"
            # spread the errors over the utterances; all substitutions, nref n per utterance
            pa = ea // utts_per_spk + (1 if j < ea % utts_per_spk else 0)
            pb = eb // utts_per_spk + (1 if j < eb % utts_per_spk else 0)
            ca.append([n - pa, pa, 0, 0, n])
            cb.append([n - pb, pb, 0, 0, n])
    ra = ScoreResult(utts, torch.tensor(ca, dtype=torch.long))
    rb = ScoreResult(utts, torch.tensor(cb, dtype=torch.long))
    return ra, rb, u2s


def _table(flags):
    spk = {}
    for k, f in enumerate(flags):
        s = Speaker(f"s{k}", {"channel": "degraded" if f else "clean"},
                    {"channel": f, "voice": None})
        spk[s.spk] = s
    return SpeakerTable(spk, ["channel"], "test", generated=True)


def test_gain_contrast_detects_a_planted_difference():
    rng = np.random.default_rng(0)
    flags = [k % 2 == 0 for k in range(20)]
    ea = rng.integers(15, 25, size=20)
    # degraded speakers: B halves the errors; clean speakers: B is no better
    eb = np.where(flags, ea // 2, ea)
    ra, rb, u2s = _speaker_result(ea.tolist(), eb.tolist())
    (t,) = C.gain_contrasts(ra, rb, u2s, _table(flags), n_boot=2000, n_perm=2000)
    assert t.contrast == "channel" and t.spk_a == 10 and t.spk_b == 10
    assert t.rer_a == pytest.approx(100 * (1 - eb[0::2].sum() / ea[0::2].sum()))
    assert t.rer_b == pytest.approx(0.0)
    assert t.diff > 40 and t.ci[0] > 30
    assert t.p < 0.002 and t.p_holm == t.p


def test_gain_contrast_without_a_difference_is_not_significant():
    rng = np.random.default_rng(3)
    flags = [k % 2 == 0 for k in range(20)]
    ea = rng.integers(15, 25, size=20)
    eb = (ea * 0.8).round().astype(int)  # the same 20 % gain everywhere
    ra, rb, u2s = _speaker_result(ea.tolist(), eb.tolist())
    (t,) = C.gain_contrasts(ra, rb, u2s, _table(flags), n_boot=2000, n_perm=2000)
    assert abs(t.diff) < 3 and t.ci[0] < 0 < t.ci[1]
    assert t.p > 0.2


def test_holm_adjustment():
    ts = [C.GainContrast(str(k), "a", "b", 2, 2, 0, 0, 0, (0, 0), p) for k, p in enumerate([0.01, 0.04, 0.03])]
    C._holm(ts)
    assert [t.p_holm for t in ts] == pytest.approx([0.03, 0.06, 0.06])


def test_dev_test_gap_by_hand():
    """Dev: all speakers clean (PER 10). Test: half the phones clean (PER 10), half noisy (PER 30):
    test 20, at dev's mix 10, so the noise mix explains the whole gap of 10 points."""
    def rows(levels):
        out = [C.ConditionRow(*C.ALL, 0, [], sum(n for _, n, _ in levels),
                              {"x": _res(sum(e for _, _, e in levels), sum(n for _, n, _ in levels))}, {})]
        for lv, n, e in levels:
            out.append(C.ConditionRow("noise", lv, 1, [], n, {"x": _res(e, n)}, {}))
        return out

    dev = rows([("clean", 100, 10)])
    test = rows([("clean", 100, 10), ("noisy", 100, 30)])
    (g,) = C.dev_test_gap(dev, test, "x")
    assert g.test_std == pytest.approx(10.0)
    assert g.explained == pytest.approx(1.0)
    assert g.test_share == {"clean": 0.5, "noisy": 0.5}


def _res(errors, nref):
    return ScoreResult(["u"], torch.tensor([[nref - errors, errors, 0, 0, nref]], dtype=torch.long))


def _write_curve(d, recs, config=None):
    (d / "log").mkdir(parents=True)
    (d / "log" / "train_curve.json").write_text(json.dumps(recs))
    if config is not None:
        (d / "config.json").write_text(json.dumps(config))


def _ce(epoch, acc, accepted=True, **kw):
    return {"epoch": epoch, "lr": 0.008, "train_loss": None if epoch == 0 else 2.0 - acc, "cv_frame_acc": acc,
            "cv_loss": 2.1 - acc, "accepted": accepted, **kw}


def test_curve_flags(tmp_path):
    capped = tmp_path / "dnn"
    _write_curve(capped, [_ce(0, 0.1), _ce(1, 0.4), _ce(2, 0.35, False), _ce(3, 0.45)],
                 {"config": {"ce": {"max_epochs": 3}}})
    c = load_curve(capped)
    assert c.kind == "ce" and c.rejected == [2] and c.max_epochs == 3 and c.stopped_at_cap
    converged = tmp_path / "dnn_rand"  # stopped by newbob before the cap
    _write_curve(converged, [_ce(0, 0.1), _ce(1, 0.4), _ce(2, 0.41)], {"config": {"ce": {"max_epochs": 8}}})
    assert not load_curve(converged).stopped_at_cap
    explicit = tmp_path / "dnn2"  # the trainer's own flag wins over the inference
    _write_curve(explicit, [_ce(0, 0.1), _ce(1, 0.4, max_epochs=1, stopped_at_cap=False)])
    assert not load_curve(explicit).stopped_at_cap
    seq = tmp_path / "dnn_mpe"
    _write_curve(seq, [{"epoch": 0, "objective": None, "cv_frame_acc": 0.5, "criterion": "mpe"},
                       {"epoch": 1, "criterion": "mpe", "objective": 0.06, "cv_frame_acc": 0.51, "cv_loss": 1.5}])
    s = load_curve(seq)
    assert s.kind == "seq" and s.criterion == "mpe"


def test_seq_objective_units(tmp_path):
    d = tmp_path / "train"
    d.mkdir()
    (d / "text").write_text("u1 sil aa b sil\nu2 sil iy sil\n")  # 7 phones
    (d / "utt2dur").write_text("u1 1.015\nu2 0.415\n")  # 100 + 40 frames (25 ms window, 10 ms shift)
    ppf = phones_per_frame(d)
    assert ppf == pytest.approx(7 / 140)
    f, label = seq_scale("mpe", ppf)
    assert 0.05 * f == pytest.approx(100.0)  # 0.05 phones/frame = every reference phone right
    assert "% of reference phones" in label
    assert seq_scale("smbr", None)[0] == 100.0 and "nats" in seq_scale("mmi", None)[1]


def test_set_gap_separates_planted_gap_from_speaker_sampling():
    rng = np.random.default_rng(5)
    same = rng.integers(10, 30, size=30)
    dev_r, _, dev_u2s = _speaker_result(same[:15].tolist(), same[:15].tolist(), n=20)
    test_r, _, test_u2s = _speaker_result(same[15:].tolist(), same[15:].tolist(), n=20, prefix="t")
    g = C.set_gap(dev_r, test_r, dev_u2s, test_u2s, n_boot=2000, n_perm=2000)
    assert g.p > 0.05 and g.ci[0] < g.diff < g.ci[1]
    assert g.diff == pytest.approx(g.test - g.dev)
    worse, _, _ = _speaker_result((same[15:] + 20).tolist(), same[15:].tolist(), n=20, prefix="t")
    g = C.set_gap(dev_r, worse, dev_u2s, test_u2s, n_boot=2000, n_perm=2000)
    assert g.p < 0.001 and g.ci[0] > 10
    with pytest.raises(ValueError, match="both dev and test"):
        C.set_gap(dev_r, dev_r, dev_u2s, dev_u2s)


def test_adjusted_gap_removes_a_gap_made_by_the_condition_mix():
    """PER = 10 + 20 * reverberant (+ 10 on test in the second case); dev has 2 of 10 speakers
    reverberant, test 8 of 10: a raw gap of 12 points that the regression attributes to
    reverberation, and a planted test effect it recovers."""
    rev = [k < 2 for k in range(10)] + [k < 8 for k in range(10)]
    spk = {}
    for k, r in enumerate(rev):
        sid = f"s{k}" if k < 10 else f"t{k}"
        spk[sid] = Speaker(sid, {"reverberation": "reverberant" if r else "dry"},
                           {"reverberation": r, "voice": False})
    table = SpeakerTable(spk, ["reverberation"], "test", generated=True)

    def results(extra_test):
        per = [10 + 20 * r + (extra_test if k >= 10 else 0) for k, r in enumerate(rev)]
        errs = [int(round(p * 0.8)) for p in per]  # 4 utterances x 20 tokens per speaker
        dev_r, _, dev_u2s = _speaker_result(errs[:10], errs[:10], n=20)
        test_r, _, test_u2s = _speaker_result(errs[10:], errs[10:], n=20, prefix="t", start=10)
        return dev_r, test_r, dev_u2s, test_u2s

    g = C.adjusted_gap(*results(0), table, n_boot=300)
    assert g.raw == pytest.approx(12.0, abs=0.3)
    assert g.adjusted == pytest.approx(0.0, abs=0.3)
    assert g.effects["reverberant"] == pytest.approx(20.0, abs=0.3)
    assert g.ci[0] <= 0.0 <= g.ci[1] + 1e-9
    g = C.adjusted_gap(*results(10), table, n_boot=300)
    assert g.adjusted == pytest.approx(10.0, abs=0.3) and g.raw == pytest.approx(22.0, abs=0.3)
