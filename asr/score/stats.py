"""Confidence intervals and significance tests for error rates.

* ``bootstrap_ci`` — the bootstrap of Bisani & Ney, "Bootstrap estimates for confidence
  intervals in ASR performance evaluation", ICASSP 2004: utterances are resampled with
  replacement, the error rate of each replicate is ``sum(errors) / sum(nref)``, and the
  interval is the percentile interval of the replicates.
* ``matched_pairs`` — the matched-pairs test of NIST's ``sc_stats`` (MAPSSWE, Gillick & Cox,
  ICASSP 1989) with utterances as the segments: the per-utterance error differences
  ``d_u = e_A(u) - e_B(u)`` are tested for zero mean with the normal statistic
  ``Z = mean(d) / (sd(d) / sqrt(n))``, two-sided. (sclite's MAPSSWE cuts utterances further at
  words both systems got right; using whole utterances keeps the segments independent.) It also
  reports Bisani & Ney's paired-bootstrap "probability of improvement" of B over A.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from asr.score.result import ScoreResult


def _replicate_sums(values: torch.Tensor, n: int, seed: int, chunk_elems: int = 4_000_000) -> torch.Tensor:
    """Sums of ``values`` (``(U, K)``) over ``n`` bootstrap resamples of the rows -> ``(n, K)``."""
    g = torch.Generator().manual_seed(seed)
    U = values.shape[0]
    rows = max(1, chunk_elems // max(U, 1))
    out = []
    for s in range(0, n, rows):
        idx = torch.randint(U, (min(rows, n - s), U), generator=g)
        out.append(values[idx].sum(dim=1))
    return torch.cat(out, dim=0)


def bootstrap_ci(result: ScoreResult, n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (percent) of the corpus error rate (Bisani & Ney 2004).

    Resamples the ``U`` utterances ``n`` times with replacement (``torch.Generator`` seeded with
    ``seed``, so the interval is deterministic) and returns the ``(1-level)/2`` and
    ``(1+level)/2`` quantiles of the replicate error rates.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n < 1:
        raise ValueError(f"need at least one bootstrap replicate, got n={n}")
    if len(result.utts) == 0:
        raise ValueError("cannot bootstrap an empty result")
    vals = torch.stack([result.utt_errors, result.counts[:, 4]], dim=1).double()
    sums = _replicate_sums(vals, n, seed)
    wer = 100.0 * sums[:, 0] / sums[:, 1].clamp(min=1.0)
    a = (1.0 - level) / 2.0
    q = torch.quantile(wer, torch.tensor([a, 1.0 - a], dtype=torch.float64))
    return float(q[0]), float(q[1])


@dataclass(frozen=True)
class MatchedPairs:
    """Outcome of ``matched_pairs``: ``p_value`` (two-sided) of the hypothesis that the systems
    have equal expected errors per utterance, ``z`` the test statistic, ``mean_diff`` the mean of
    ``e_A - e_B`` per utterance (positive: B is better), ``n`` the utterances compared, and
    ``prob_improvement`` the fraction of paired bootstrap replicates where B has fewer errors."""

    p_value: float
    z: float
    mean_diff: float
    n: int
    prob_improvement: float


def matched_pairs(res_a: ScoreResult, res_b: ScoreResult, n_boot: int = 1000, seed: int = 0) -> MatchedPairs:
    """Matched-pairs (MAPSSWE-style, utterance segments) test of system A against system B.

    Both results must score the same utterances against the same references.
    """
    if res_a.utts != res_b.utts:
        raise ValueError("matched_pairs needs two results on the same utterances in the same order")
    if not torch.equal(res_a.counts[:, 4], res_b.counts[:, 4]):
        raise ValueError("matched_pairs: the two results were scored against different references")
    d = (res_a.utt_errors - res_b.utt_errors).double()
    n = int(d.numel())
    if n == 0:
        raise ValueError("matched_pairs: no utterances")
    mean = float(d.mean())
    sd = float(d.std(unbiased=True)) if n > 1 else 0.0
    if sd == 0.0:
        z = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    else:
        z = mean / (sd / math.sqrt(n))
    p = math.erfc(abs(z) / math.sqrt(2.0))
    sums = _replicate_sums(d[:, None], n_boot, seed)[:, 0]
    poi = float((sums > 0).double().mean())
    return MatchedPairs(p_value=p, z=z, mean_diff=mean, n=n, prob_improvement=poi)
