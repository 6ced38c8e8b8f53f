"""Token-level alignments of hypotheses against references, for confusion matrices and
per-phone error rates.

``asr.score`` returns only the counts of each utterance's alignment. The figures need the
aligned pairs themselves, from the *same* alignment, so that a confusion matrix's
substitutions and deletions add up to the counts of the report's PER. ``align_pairs`` uses the
cost scheme and trace-back preference order of ``asr.score.align`` (NIST sclite by default);
``tests/test_report_figures.py`` checks that its pairs give exactly ``asr.score.align_counts``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from asr.score.align import _COSTS, _ORDER, _check_method

Pair = tuple[str | None, str | None]
"""(reference token, hypothesis token): (r, None) a deletion, (None, h) an insertion."""


def align_pairs(ref: Sequence[str], hyp: Sequence[str], method: str = "sclite") -> list[Pair]:
    """The minimum-cost alignment of ``hyp`` against ``ref`` as pairs in reading order.

    Same costs and tie-breaking as ``asr.score.align_counts(ref, hyp, method)``; with
    ``"sclite"`` tokens compare case-insensitively (the pairs keep the original tokens).
    The DP runs row by row with the insertion chain as a cumulative minimum (as in
    ``asr.score.align``); the trace-back walks ``len(ref) + len(hyp)`` steps at most.
    """
    _check_method(method)
    c_cor, c_sub, c_ins, c_del = _COSTS[method]
    key = (lambda t: t.lower()) if method == "sclite" else (lambda t: t)
    vocab: dict[str, int] = {}
    r = np.array([vocab.setdefault(key(t), len(vocab)) for t in ref], dtype=np.int64)
    h = np.array([vocab.setdefault(key(t), len(vocab)) for t in hyp], dtype=np.int64)
    R, H = len(r), len(h)
    sub = np.where(r[:, None] == h[None, :], c_cor, c_sub)  # (R, H)
    jj = np.arange(H + 1, dtype=np.int64)
    D = np.empty((R + 1, H + 1), dtype=np.int64)
    D[0] = c_ins * jj
    for i in range(1, R + 1):
        a = np.empty(H + 1, dtype=np.int64)
        a[0] = D[i - 1, 0] + c_del
        a[1:] = np.minimum(D[i - 1, :-1] + sub[i - 1], D[i - 1, 1:] + c_del)
        D[i] = np.minimum.accumulate(a - c_ins * jj) + c_ins * jj
    out: list[Pair] = []
    i, j = R, H
    while i > 0 or j > 0:
        cur = D[i, j]
        for move in _ORDER[method]:
            if move == "diag" and i > 0 and j > 0 and cur == D[i - 1, j - 1] + sub[i - 1, j - 1]:
                out.append((ref[i - 1], hyp[j - 1]))
                i, j = i - 1, j - 1
                break
            if move == "ins" and j > 0 and cur == D[i, j - 1] + c_ins:
                out.append((None, hyp[j - 1]))
                j -= 1
                break
            if move == "del" and i > 0 and cur == D[i - 1, j] + c_del:
                out.append((ref[i - 1], None))
                i -= 1
                break
        else:  # pragma: no cover - the DP guarantees one move matches
            raise AssertionError(f"alignment trace-back stuck at ({i}, {j})")
    out.reverse()
    return out


def confusion_counts(ref: dict[str, list[str]], hyp: dict[str, list[str]], phones: Sequence[str],
                     method: str = "sclite") -> tuple[np.ndarray, np.ndarray]:
    """Counts over every utterance of ``ref`` (a missing hypothesis is all deletions).

    Returns ``(conf, ins)``: ``conf (P, P + 1)`` int64 with ``conf[a, b]`` the times reference
    phone ``phones[a]`` was aligned to hypothesis phone ``phones[b]`` and ``conf[a, P]`` its
    deletions; ``ins (P,)`` the insertions of each hypothesis phone. A token outside ``phones``
    is a ValueError naming the utterance.
    """
    index = {p: k for k, p in enumerate(phones)}
    P = len(phones)
    conf = np.zeros((P, P + 1), dtype=np.int64)
    ins = np.zeros(P, dtype=np.int64)
    for utt, r in ref.items():
        for a, b in align_pairs(r, hyp.get(utt, []), method):
            if (a is not None and a not in index) or (b is not None and b not in index):
                raise ValueError(f"utterance {utt}: token {a if a not in index else b!r} is not in the "
                                 f"phone set of the confusion matrix")
            if a is None:
                ins[index[b]] += 1
            else:
                conf[index[a], P if b is None else index[b]] += 1
    return conf, ins
