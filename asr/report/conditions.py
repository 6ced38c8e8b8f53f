"""Error rates per speaker condition, the test of whether a system's relative gain depends on
the condition, and what explains the difference between the dev and test error rates.

* ``condition_rows``: for every factor level of ``asr.report.speakers`` the utterances of its
  speakers are scored as a subset of each system's result (the same alignment counts as the
  overall PER, so the levels of a factor add up to the whole set), with the utterance-level
  bootstrap interval of Bisani & Ney (2004) used for the overall figures.
* ``gain_contrasts``: is B's relative error reduction over A larger on degraded / unseen-voice
  speakers than on clean / seen ones? Speakers are the independent units (all utterances of a
  speaker share voice and channel), so both the interval and the p-value work on speakers:
  the relative error reduction of a group is ``1 - sum(e_B) / sum(e_A)`` over its speakers;
  the 95 % interval of the difference between the groups is a percentile bootstrap that
  resamples the speakers of each group with replacement; the p-value is a two-sided
  permutation test that reassigns the group labels among the speakers (Good, *Permutation
  Tests*, 2000), with Holm's step-down adjustment over the contrasts tested.
* ``dev_test_gap``: direct standardisation. For a factor, the test PER is recomputed with
  every level weighted by its share of dev's reference phones; the part of the dev-test gap
  that disappears is the part the factor's different mix in the two sets accounts for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from asr.report.speakers import CONTRASTS, SpeakerTable

_CONTRAST_LABEL = {name: side_a for name, side_a, _ in CONTRASTS}
from asr.score import ScoreResult, bootstrap_ci

ALL = ("all", "all speakers")


def subset(result: ScoreResult, utts: list[str]) -> ScoreResult:
    """The counts of ``utts`` (a subset of ``result.utts``, kept in result order)."""
    keep = set(utts)
    idx = [k for k, u in enumerate(result.utts) if u in keep]
    return ScoreResult(utts=[result.utts[k] for k in idx], counts=result.counts[idx], method=result.method)


def concat(a: ScoreResult, b: ScoreResult) -> ScoreResult:
    """One result holding the utterances of ``a`` then ``b`` (e.g. dev and test pooled)."""
    clash = set(a.utts) & set(b.utts)
    if clash:
        raise ValueError(f"utterance {sorted(clash)[0]} is in both results")
    return ScoreResult(utts=a.utts + b.utts, counts=torch.cat([a.counts, b.counts]), method=a.method)


def _speaker_of(utts: list[str], utt2spk: dict[str, str], table: SpeakerTable) -> dict[str, str]:
    out = {}
    for u in utts:
        spk = utt2spk.get(u)
        if spk is None:
            raise ValueError(f"utterance {u} is not in utt2spk")
        if spk not in table.speakers:
            raise ValueError(f"speaker {spk} (utterance {u}) is not described by {table.source}")
        out[u] = spk
    return out


@dataclass
class ConditionRow:
    """One factor level of one set: its speakers, utterances, reference tokens, and per system
    the subset's score and its 95 % utterance-bootstrap interval."""

    factor: str
    level: str
    speakers: int
    utts: list[str]
    nref: int
    results: dict[str, ScoreResult]
    ci: dict[str, tuple[float, float]]


def condition_rows(results: dict[str, ScoreResult], utt2spk: dict[str, str], table: SpeakerTable,
                   n_boot: int = 1000, seed: int = 0) -> list[ConditionRow]:
    """Rows (``ALL`` first, then every level of every factor of ``table``) for the systems
    ``results`` (name -> result on one set; all on the same utterances)."""
    if not results:
        return []
    first = next(iter(results.values()))
    for name, r in results.items():
        if r.utts != first.utts:
            raise ValueError(f"system {name} was scored on other utterances than the others")
    spk_of = _speaker_of(first.utts, utt2spk, table)
    groups: list[tuple[str, str, list[str]]] = [(*ALL, list(first.utts))]
    for f in table.factors:
        levels: dict[str, list[str]] = {}
        for u in first.utts:
            levels.setdefault(table.speakers[spk_of[u]].factors[f], []).append(u)
        groups += [(f, lv, levels[lv]) for lv in sorted(levels)]
    rows = []
    for factor, level, utts in groups:
        subs = {n: subset(r, utts) for n, r in results.items()}
        ci = {n: bootstrap_ci(s, n=n_boot, seed=seed) for n, s in subs.items()}
        nref = int(next(iter(subs.values())).nref)
        rows.append(ConditionRow(factor, level, len({spk_of[u] for u in utts}), utts, nref, subs, ci))
    return rows


def relative_error_reduction(base_per: float, new_per: float) -> float:
    """``100 * (base - new) / base`` in percent (nan when the baseline makes no error)."""
    return 100.0 * (base_per - new_per) / base_per if base_per > 0 else math.nan


@dataclass
class GainContrast:
    """Relative error reduction (%) of system B over A in the degraded / unseen group (a) and
    the clean / seen group (b), their difference, its 95 % speaker-bootstrap interval and the
    two-sided permutation p-value (raw and Holm-adjusted)."""

    contrast: str
    group_a: str
    group_b: str
    spk_a: int
    spk_b: int
    rer_a: float
    rer_b: float
    diff: float
    ci: tuple[float, float]
    p: float
    p_holm: float = math.nan


def _rer_of(err_a: np.ndarray, err_b: np.ndarray) -> np.ndarray:
    """Row-wise ``100 * (1 - sum(err_b) / sum(err_a))`` of (..., S) speaker error arrays."""
    a = err_a.sum(-1)
    return 100.0 * (1.0 - err_b.sum(-1) / np.where(a > 0, a, np.nan))


def gain_contrasts(res_a: ScoreResult, res_b: ScoreResult, utt2spk: dict[str, str], table: SpeakerTable,
                   n_boot: int = 10000, n_perm: int = 10000, seed: int = 0) -> list[GainContrast]:
    """The speaker-level test of every contrast of ``table`` with at least two speakers on each
    side (module docstring); results are in ``CONTRASTS`` order."""
    if res_a.utts != res_b.utts:
        raise ValueError("gain_contrasts needs both systems scored on the same utterances")
    _speaker_of(res_a.utts, utt2spk, table)
    ca, cb = res_a.per_speaker(utt2spk), res_b.per_speaker(utt2spk)
    spks = sorted(ca)
    ea = np.array([ca[s].errors for s in spks], dtype=np.float64)
    eb = np.array([cb[s].errors for s in spks], dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = []
    for name, label_a, label_b in CONTRASTS:
        side = [table.speakers[s].contrasts.get(name) for s in spks]
        ia = np.array([k for k, v in enumerate(side) if v is True], dtype=np.int64)
        ib = np.array([k for k, v in enumerate(side) if v is False], dtype=np.int64)
        if len(ia) < 2 or len(ib) < 2:
            continue
        rer_a, rer_b = float(_rer_of(ea[ia], eb[ia])), float(_rer_of(ea[ib], eb[ib]))
        diff = rer_a - rer_b
        ba = ia[rng.integers(len(ia), size=(n_boot, len(ia)))]
        bb = ib[rng.integers(len(ib), size=(n_boot, len(ib)))]
        boot = _rer_of(ea[ba], eb[ba]) - _rer_of(ea[bb], eb[bb])
        boot = boot[np.isfinite(boot)]
        lo, hi = (np.percentile(boot, [2.5, 97.5]) if boot.size else (math.nan, math.nan))
        pool = np.concatenate([ia, ib])
        perm = pool[np.argsort(rng.random((n_perm, len(pool))), axis=1)]
        pa, pb = perm[:, :len(ia)], perm[:, len(ia):]
        d_perm = _rer_of(ea[pa], eb[pa]) - _rer_of(ea[pb], eb[pb])
        extreme = np.count_nonzero(np.abs(d_perm) >= abs(diff) - 1e-9)
        p = (1 + extreme) / (1 + n_perm)
        out.append(GainContrast(name, label_a, label_b, len(ia), len(ib), rer_a, rer_b, diff,
                                (float(lo), float(hi)), p))
    _holm(out)
    return out


def _holm(tests: list[GainContrast]) -> None:
    """Holm's step-down adjustment of the p-values of ``tests`` (in place)."""
    m = len(tests)
    running = 0.0
    for rank, t in enumerate(sorted(tests, key=lambda t: t.p)):
        running = max(running, min(1.0, (m - rank) * t.p))
        t.p_holm = running


@dataclass
class SetGap:
    """PER of one system on dev and on test, the difference (test - dev, points), its 95 %
    speaker-bootstrap interval and the two-sided permutation p of the set labels over speakers:
    how likely a gap this large is when dev and test speakers come from one population."""

    dev: float
    test: float
    diff: float
    ci: tuple[float, float]
    p: float


def set_gap(dev: ScoreResult, test: ScoreResult, u2s_dev: dict[str, str], u2s_test: dict[str, str],
            n_boot: int = 10000, n_perm: int = 10000, seed: int = 0) -> SetGap:
    """Speaker-level test of the dev -> test difference of one system (``SetGap``)."""
    cd, ct = dev.per_speaker(u2s_dev), test.per_speaker(u2s_test)
    both = set(cd) & set(ct)
    if both:
        raise ValueError(f"speaker {sorted(both)[0]} is in both dev and test")
    e = np.array([c.errors for c in (*cd.values(), *ct.values())], dtype=np.float64)
    n = np.array([c.nref for c in (*cd.values(), *ct.values())], dtype=np.float64)
    nd = len(cd)
    idx_d, idx_t = np.arange(nd), np.arange(nd, len(e))

    def per(ix: np.ndarray) -> np.ndarray:
        return 100.0 * e[ix].sum(-1) / np.maximum(n[ix].sum(-1), 1.0)

    diff = float(per(idx_t) - per(idx_d))
    rng = np.random.default_rng(seed)
    boot = per(idx_t[rng.integers(len(idx_t), size=(n_boot, len(idx_t)))]) - \
        per(idx_d[rng.integers(nd, size=(n_boot, nd))])
    perm = np.argsort(rng.random((n_perm, len(e))), axis=1)
    d_perm = per(perm[:, nd:]) - per(perm[:, :nd])
    p = (1 + np.count_nonzero(np.abs(d_perm) >= abs(diff) - 1e-9)) / (1 + n_perm)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return SetGap(float(per(idx_d)), float(per(idx_t)), diff, (float(lo), float(hi)), float(p))


@dataclass
class GapFactor:
    """How much of the dev -> test difference of one system a factor's mix accounts for:
    ``test_std`` is the test PER with the levels weighted by dev's shares of reference tokens
    (``dev_share``, over the levels test also has); ``explained`` the fraction of
    ``test - dev`` that the reweighting removes (negative: the mix makes test *easier*)."""

    factor: str
    dev_share: dict[str, float]
    test_share: dict[str, float]
    test_per: dict[str, float]
    dev_per: dict[str, float]
    test_std: float
    explained: float
    dev_levels_missing_in_test: list[str]


def dev_test_gap(dev_rows: list[ConditionRow], test_rows: list[ConditionRow], system: str) -> list[GapFactor]:
    """Direct standardisation of ``system``'s test PER to dev's mix, factor by factor, from the
    rows of ``condition_rows`` of both sets."""
    def by_factor(rows: list[ConditionRow]) -> dict[str, dict[str, ConditionRow]]:
        out: dict[str, dict[str, ConditionRow]] = {}
        for r in rows:
            out.setdefault(r.factor, {})[r.level] = r
        return out

    dv, ts = by_factor(dev_rows), by_factor(test_rows)
    if ALL[0] not in dv or ALL[0] not in ts:
        return []
    d_all, t_all = dv[ALL[0]][ALL[1]].results[system].wer, ts[ALL[0]][ALL[1]].results[system].wer
    gap = t_all - d_all
    out = []
    for f in dv:
        if f == ALL[0] or f not in ts:
            continue
        dn = sum(r.nref for r in dv[f].values())
        tn = sum(r.nref for r in ts[f].values())
        shared = [lv for lv in dv[f] if lv in ts[f]]
        w = {lv: dv[f][lv].nref for lv in shared}
        tot = sum(w.values())
        if tot == 0:
            continue
        std = sum(w[lv] / tot * ts[f][lv].results[system].wer for lv in shared)
        explained = (t_all - std) / gap if gap != 0 else math.nan
        out.append(GapFactor(f, {lv: r.nref / dn for lv, r in dv[f].items()},
                             {lv: r.nref / tn for lv, r in ts[f].items()},
                             {lv: r.results[system].wer for lv, r in ts[f].items()},
                             {lv: r.results[system].wer for lv, r in dv[f].items()},
                             std, explained, [lv for lv in dv[f] if lv not in ts[f]]))
    return out



@dataclass
class AdjustedGap:
    """The dev -> test difference of one system before and after adjusting for the speakers'
    conditions: ``raw`` and ``adjusted`` in PER points, the 95 % speaker-bootstrap interval of
    the adjusted one, the covariates used, and per covariate its coefficient (PER points)."""

    raw: float
    adjusted: float
    ci: tuple[float, float]
    covariates: list[str]
    effects: dict[str, float]


def _design(spks: list[str], table: SpeakerTable, base: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """0/1 covariates per speaker: every contrast of the table (True = 1; a speaker in neither
    group of a contrast = 0) and one indicator per non-majority level of the other factors
    that are not derived from the contrasts (TTS engine, gender, dialect region). A column in
    the span of ``base`` (intercept, set indicator) and the columns kept before it is left out
    (e.g. "noise" when every noisy speaker also has low SNR, or a level only test has)."""
    cols: dict[str, list[float]] = {}
    names = sorted({c for s in spks for c in table.speakers[s].contrasts} - {"channel"})
    for c in names:
        cols[_CONTRAST_LABEL.get(c, c)] = [1.0 if table.speakers[s].contrasts.get(c) else 0.0 for s in spks]
    for f in ("TTS engine", "gender", "dialect region"):
        if f not in table.factors:
            continue
        levels = [table.speakers[s].factors[f] for s in spks]
        major = max(set(levels), key=levels.count)
        for lv in sorted(set(levels) - {major}):
            cols[f"{f}: {lv}"] = [1.0 if x == lv else 0.0 for x in levels]
    X = base
    keep = []
    for k, v in cols.items():
        trial = np.column_stack([X, v])
        if np.linalg.matrix_rank(trial) > X.shape[1]:
            X, keep = trial, keep + [k]
    return X[:, base.shape[1]:], keep


def _wls(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    sw = np.sqrt(w)[:, None]
    return np.linalg.lstsq(X * sw, y * sw[:, 0], rcond=None)[0]


def adjusted_gap(dev: ScoreResult, test: ScoreResult, u2s_dev: dict[str, str], u2s_test: dict[str, str],
                 table: SpeakerTable, n_boot: int = 2000, seed: int = 0) -> AdjustedGap | None:
    """Weighted least squares over the speakers of dev and test (weights: reference tokens):
    ``PER_s = b0 + b_test [s in test] + sum_k b_k x_sk``, the covariates ``x`` from ``_design``.
    ``b_test`` is the test - dev difference between speakers of the same conditions; the raw
    difference is the fit without covariates (the pooled PER difference). The interval
    resamples the speakers of each set with replacement. None without speakers in both sets."""
    cd, ct = dev.per_speaker(u2s_dev), test.per_speaker(u2s_test)
    spks = list(cd) + list(ct)
    for s in spks:
        if s not in table.speakers:
            raise ValueError(f"speaker {s} is not described by {table.source}")
    counts = [*cd.values(), *ct.values()]
    n = np.array([c.nref for c in counts], dtype=np.float64)
    y = 100.0 * np.array([c.errors for c in counts], dtype=np.float64) / np.maximum(n, 1.0)
    is_test = np.r_[np.zeros(len(cd)), np.ones(len(ct))]
    base = np.column_stack([np.ones(len(spks)), is_test])
    if np.linalg.matrix_rank(base) < 2:
        return None
    cov, names = _design(spks, table, base)
    X = np.column_stack([base, cov])
    raw = float(_wls(X[:, :2], y, n)[1])
    beta = _wls(X, y, n)
    rng = np.random.default_rng(seed)
    idx_d, idx_t = np.arange(len(cd)), np.arange(len(cd), len(spks))
    boot = []
    others = [0] + list(range(2, X.shape[1]))
    for _ in range(n_boot):
        # a resample may miss every speaker of a rare level: that column is then 0 and gets the
        # minimum-norm coefficient 0; only a set indicator no longer separable is skipped
        ix = np.r_[rng.choice(idx_d, len(idx_d)), rng.choice(idx_t, len(idx_t))]
        if np.linalg.matrix_rank(X[ix]) > np.linalg.matrix_rank(X[ix][:, others]):
            boot.append(_wls(X[ix], y[ix], n[ix])[1])
    lo, hi = np.percentile(boot, [2.5, 97.5]) if boot else (math.nan, math.nan)
    return AdjustedGap(raw, float(beta[1]), (float(lo), float(hi)), names,
                       {k: float(b) for k, b in zip(names, beta[2:])})
