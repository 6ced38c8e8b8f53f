"""Scoring: counts equal NIST sclite's (run for real), plain counts equal kaldialign and a
brute-force DP, %WER line, per-speaker totals, bootstrap interval, matched pairs, CLI."""
from __future__ import annotations

import itertools
import random
import re
import shutil
import subprocess
from pathlib import Path

import kaldialign
import pytest
import torch

from asr.lang.phones import load_phone_map
from asr.score import (
    Counts, align_counts, align_counts_batch, bootstrap_ci, fold39, matched_pairs, read_text,
    score,
)
from asr.score.result import ScoreResult

SCLITE = shutil.which("sctk")


def _sclite_counts(tmp: Path, pairs: list[tuple[list[str], list[str]]]) -> list[tuple[int, int, int, int]]:
    """Run ``sctk sclite`` on (ref, hyp) pairs; per-utterance (corr, sub, dels, ins) from pralign."""
    ids = [f"spk{k % 7}_u{k:05d}" for k in range(len(pairs))]
    (tmp / "ref.trn").write_text("".join(f"{' '.join(r)} ({u})\n" for u, (r, _) in zip(ids, pairs)))
    (tmp / "hyp.trn").write_text("".join(f"{' '.join(h)} ({u})\n" for u, (_, h) in zip(ids, pairs)))
    out = subprocess.run([SCLITE, "sclite", "-r", str(tmp / "ref.trn"), "trn", "-h", str(tmp / "hyp.trn"),
                          "trn", "-i", "rm", "-o", "pralign", "sum", "stdout"],
                         capture_output=True, text=True, check=True).stdout
    got = {m.group(1): tuple(int(v) for v in m.groups()[1:]) for m in
           re.finditer(r"id: \((\S+)\)\nScores: \(#C #S #D #I\) (\d+) (\d+) (\d+) (\d+)", out)}
    assert len(got) == len(pairs)
    return [got[u] for u in ids]


def _random_pairs(seed: int, n: int, max_len: int) -> list[tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        vocab = "abcdefgh"[: rng.choice([2, 3, 4, 8])]
        pairs.append(([rng.choice(vocab) for _ in range(rng.randint(0, max_len))],
                      [rng.choice(vocab) for _ in range(rng.randint(0, max_len))]))
    return pairs


TIE_CASES = [
    (["a", "b", "c", "d"], ["b", "c", "d", "e"]),          # shift: 2 x ins/del vs 4 subs
    (["x", "y", "z"], ["y", "z", "x"]),
    (["a", "b"], ["b", "a"]),
    (["a", "a", "b"], ["b", "a", "a"]),
    (["a", "b", "a", "b"], ["b", "a", "b", "a"]),
    (["c", "c", "b", "b", "b"], ["a", "b", "a", "c", "c"]),
    ([], ["a", "b"]),
    (["a", "b"], []),
    ([], []),
    (["sil", "dh", "ah", "sil"], ["sil", "ah", "dh", "sil", "sil"]),
    (["The", "cat", "SAT"], ["the", "Cat", "sat", "down"]),  # sclite ignores case by default
]


def test_sclite_counts_equal_real_sclite(tmp_path):
    assert SCLITE is not None, "NIST sclite (Debian package sctk) is required for this test"
    pairs = TIE_CASES + _random_pairs(0, 1200, 12) + _random_pairs(1, 300, 30)
    ref_counts = _sclite_counts(tmp_path, pairs)
    got = align_counts_batch([r for r, _ in pairs], [h for _, h in pairs], "sclite")
    mism = [(pairs[k], ref_counts[k], got[k].tolist()) for k in range(len(pairs))
            if (got[k, 0], got[k, 1], got[k, 3], got[k, 2]) != ref_counts[k]]
    assert not mism, mism[:3]
    # The plain Levenshtein count does differ from sclite on some of these (the reason for both).
    plain = align_counts_batch([r for r, _ in pairs], [h for _, h in pairs], "levenshtein")
    assert (plain != got).any(dim=1).sum() > 10
    # Corpus totals through score() equal the sum over sclite's utterances.
    ref = {f"u{k:05d}": r for k, (r, _) in enumerate(pairs)}
    hyp = {f"u{k:05d}": h for k, (_, h) in enumerate(pairs)}
    res = score(ref, hyp)
    c, s, d, i = (sum(x[j] for x in ref_counts) for j in range(4))
    assert (res.corr, res.sub, res.dels, res.ins) == (c, s, d, i)
    assert res.nref == sum(len(r) for r, _ in pairs) == c + s + d


def _brute_edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Minimum edit distance by exhaustive recursion (memoised), independent of the batched DP."""
    from functools import lru_cache

    @lru_cache(maxsize=None)
    def go(i: int, j: int) -> int:
        if i == len(ref):
            return len(hyp) - j
        if j == len(hyp):
            return len(ref) - i
        return min(go(i + 1, j + 1) + (ref[i] != hyp[j]), go(i + 1, j) + 1, go(i, j + 1) + 1)

    return go(0, 0)


def _brute_sclite_cost(ref: list[str], hyp: list[str]) -> int:
    """Minimum 0/4/3/3 cost over all alignments, enumerated as sets of matched index pairs."""
    best = 3 * (len(ref) + len(hyp))
    for k in range(1, min(len(ref), len(hyp)) + 1):
        for ri in itertools.combinations(range(len(ref)), k):
            for hj in itertools.combinations(range(len(hyp)), k):
                subs = sum(ref[a] != hyp[b] for a, b in zip(ri, hj))
                best = min(best, 4 * subs + 3 * (len(ref) - k) + 3 * (len(hyp) - k))
    return best


def test_levenshtein_equals_kaldialign_and_brute_force():
    pairs = _random_pairs(5, 400, 9) + TIE_CASES
    got = align_counts_batch([r for r, _ in pairs], [h for _, h in pairs], "levenshtein")
    for k, (r, h) in enumerate(pairs):
        e = kaldialign.edit_distance(r, h)
        assert (got[k, 1], got[k, 2], got[k, 3]) == (e["sub"], e["ins"], e["del"]), (r, h)
        assert int(got[k, 1:].sum()) == _brute_edit_distance(r, h)
        assert int(got[k, 0] + got[k, 1] + got[k, 3]) == len(r)
        assert int(got[k, 0] + got[k, 1] + got[k, 2]) == len(h)


def test_sclite_cost_is_minimal_by_enumeration():
    for r, h in _random_pairs(9, 150, 5) + TIE_CASES[:8]:
        c = align_counts(r, h, "sclite")
        assert 4 * c.sub + 3 * (c.ins + c.dels) == _brute_sclite_cost(r, h), (r, h)
        assert c.corr + c.sub + c.dels == c.nref == len(r)


def test_align_counts_examples():
    assert align_counts(["a", "b", "c", "d"], ["b", "c", "d", "e"]) == Counts(3, 0, 1, 1, 4)
    assert align_counts(["a", "b", "c", "d"], ["b", "c", "d", "e"], "levenshtein") == Counts(3, 0, 1, 1, 4)
    # sclite: 2 ins + 2 del (cost 12) beats 2 sub + 1 ins + 1 del (14); with unit costs both
    # have 4 edits and Kaldi's tie-breaking keeps the substitutions.
    r, h = list("aabb"), list("cbaa")
    assert align_counts(r, h) == Counts(corr=2, sub=0, ins=2, dels=2, nref=4)
    assert align_counts(r, h, "levenshtein") == Counts(corr=1, sub=2, ins=1, dels=1, nref=4)
    assert align_counts([], ["a"]) == Counts(0, 0, 1, 0, 0)
    with pytest.raises(ValueError, match="unknown alignment method"):
        align_counts(["a"], ["a"], method="nist")


def test_score_result_line_speakers_and_missing():
    ref = {"s1_a": "a b c".split(), "s1_b": "d e".split(), "s2_a": "f g h i".split()}
    hyp = {"s1_a": "a x c y".split(), "s2_a": "f h i".split()}
    with pytest.warns(UserWarning, match=r"1 of 3 .*: s1_b$"):
        res = score(ref, hyp)
    assert res.utts == ["s1_a", "s1_b", "s2_a"] and res.missing == 1 and res.missing_utts == ["s1_b"]
    assert res.utt_counts("s1_b") == Counts(0, 0, 0, 2, 2)
    assert (res.errors, res.nref, res.ins, res.dels, res.sub) == (5, 9, 1, 3, 1)
    assert res.wer_line("exp/x") == "%WER 55.56 [ 5 / 9, 1 ins, 3 del, 1 sub ] exp/x"
    spk = res.per_speaker({"s1_a": "s1", "s1_b": "s1", "s2_a": "s2"})
    assert list(spk) == ["s1", "s2"]
    assert spk["s1"] == Counts(corr=2, sub=1, ins=1, dels=2, nref=5)
    assert spk["s1"] + spk["s2"] == res.total()
    with pytest.raises(ValueError, match="'s9_z'"):
        score(ref, {"s9_z": ["a"]})


def test_bootstrap_ci_contains_estimate_and_narrows():
    g = torch.Generator().manual_seed(3)

    def synthetic(n_utt: int) -> ScoreResult:
        nref = torch.randint(10, 40, (n_utt,), generator=g)
        err = torch.binomial(nref.double(), torch.full((n_utt,), 0.2, dtype=torch.float64), generator=g).long()
        counts = torch.stack([nref - err, err, torch.zeros_like(err), torch.zeros_like(err), nref], 1)
        return ScoreResult(utts=[f"u{k}" for k in range(n_utt)], counts=counts)

    small, big = synthetic(40), synthetic(1600)
    lo_s, hi_s = bootstrap_ci(small, n=500, seed=1)
    lo_b, hi_b = bootstrap_ci(big, n=500, seed=1)
    assert lo_s < small.wer < hi_s and lo_b < big.wer < hi_b
    assert hi_b - lo_b < 0.5 * (hi_s - lo_s)
    assert 15.0 < lo_b < 20.0 < hi_b < 25.0
    assert bootstrap_ci(small, n=500, seed=1) == (lo_s, hi_s)
    assert bootstrap_ci(small, n=500, seed=2) != (lo_s, hi_s)
    lo9, hi9 = bootstrap_ci(small, n=500, seed=1, level=0.5)
    assert lo_s <= lo9 <= hi9 <= hi_s


def test_matched_pairs():
    rng = random.Random(4)
    ref = {f"s{k % 5}_u{k}": [rng.choice("abcdef") for _ in range(20)] for k in range(120)}

    def corrupt(p: float) -> dict[str, list[str]]:
        return {u: [t if rng.random() > p else "z" for t in r] for u, r in ref.items()}

    bad, good = score(ref, corrupt(0.3)), score(ref, corrupt(0.1))
    mp = matched_pairs(bad, good)
    assert mp.p_value < 1e-6 and mp.mean_diff > 0 and mp.z > 5 and mp.n == 120
    assert mp.prob_improvement > 0.99
    same = matched_pairs(bad, bad)
    assert same.p_value == 1.0 and same.mean_diff == 0.0
    close = matched_pairs(score(ref, corrupt(0.2)), score(ref, corrupt(0.2)))
    assert close.p_value > 0.001
    with pytest.warns(UserWarning, match="no hypothesis"):
        partial = score(dict(list(ref.items())[:5]), {})
    with pytest.raises(ValueError, match="same utterances"):
        matched_pairs(bad, partial)


def test_fold39_and_read_text(tmp_path):
    pm = load_phone_map()
    assert fold39(["ao", "aa", "sil", "cl", "vcl", "epi", "zh", "sh", "ix"], pm) == \
        ["aa", "aa", "sil", "sil", "sil", "sil", "sh", "sh", "ih"]
    with pytest.raises(ValueError, match="'xyz'"):
        fold39(["xyz"], pm)
    p = tmp_path / "text"
    p.write_text("u2 a b\nu1\n\nu3 c\n")
    assert read_text(p) == {"u2": ["a", "b"], "u1": [], "u3": ["c"]}
    p.write_text("u1 a\nu1 b\n")
    with pytest.raises(ValueError, match=r"text:2.*u1"):
        read_text(p)


def test_cli_score(tmp_path, capsys):
    from asr.cli.main import main

    (tmp_path / "ref").write_text("s1_a sil ao b sil\ns1_b d\ns2_a sil zh\n")
    (tmp_path / "hyp").write_text("s1_a sil aa sil\ns1_b d\ns2_a sil sh\n")
    (tmp_path / "hyp2").write_text("s1_a sil ao b sil\ns1_b d\ns2_a sil zh\n")
    (tmp_path / "utt2spk").write_text("s1_a s1\ns1_b s1\ns2_a s2\n")
    rc = main(["score", str(tmp_path / "ref"), str(tmp_path / "hyp"), "--utt2spk", str(tmp_path / "utt2spk"),
               "--compare", str(tmp_path / "hyp2"), "--bootstrap", "50"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"%WER 42.86 [ 3 / 7, 0 ins, 1 del, 2 sub ] {tmp_path / 'hyp'}" in out
    assert f"%WER 0.00 [ 0 / 7, 0 ins, 0 del, 0 sub ] {tmp_path / 'hyp2'}" in out
    assert "95% bootstrap interval" in out and "matched pairs" in out
    assert re.search(r"^s2\s+2\s+1\s+1\s+0\s+0\s+50\.00$", out, re.M)
    assert main(["score", str(tmp_path / "ref"), str(tmp_path / "hyp"), "--map39", "--bootstrap", "0"]) == 0
    assert "%WER 14.29 [ 1 / 7, 0 ins, 1 del, 0 sub ]" in capsys.readouterr().out
    (tmp_path / "hyp3").write_text("zz_top a\n")
    assert main(["score", str(tmp_path / "ref"), str(tmp_path / "hyp3")]) == 1
    assert "zz_top" in capsys.readouterr().err


def test_cli_score_names_missing_hypotheses_and_foreign_tokens(tmp_path, capsys):
    """A missing hypothesis is named; a 48-phone hypothesis scored against a 39-phone reference
    without --map39 is warned about (it silently gave another number)."""
    from asr.cli.main import main

    ref48 = {f"s{k}_u": ["sil", "ao", "cl", "b", "ix", "sil"] for k in range(12)}
    pm = load_phone_map()
    (tmp_path / "ref39").write_text("".join(f"{u} {' '.join(fold39(t, pm))}\n" for u, t in ref48.items()))
    (tmp_path / "hyp48").write_text("".join(f"{u} {' '.join(t)}\n" for u, t in list(ref48.items())[:-1]))
    assert main(["score", str(tmp_path / "ref39"), str(tmp_path / "hyp48"), "--bootstrap", "0"]) == 0
    err = capsys.readouterr().err
    assert "1 of 12 reference utterances have no hypothesis" in err and "s11_u" in err
    assert "never occur in the reference" in err and "ao" in err and "add --map39" in err
    assert main(["score", str(tmp_path / "ref39"), str(tmp_path / "hyp48"), "--bootstrap", "0", "--map39"]) == 0
    err = capsys.readouterr().err
    assert "never occur" not in err and "s11_u" in err
