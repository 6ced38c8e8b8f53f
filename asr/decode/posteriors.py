"""Frame-level pdf posteriors of a state-level lattice (Kaldi ``lattice-to-post``).

The forward-backward runs over the lattice's states in Kahn order, one frontier at a time (all
predecessors of a frontier's states are in earlier frontiers), vectorised over the arcs entering a
frontier: a few hundred numpy steps per utterance, not one per state.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from asr.decode.lattice import LatticeArrays


def _frontiers(n: int, src: np.ndarray, dst: np.ndarray, start: int) -> list[np.ndarray]:
    """Kahn frontiers of a DAG whose every state is reachable from ``start``."""
    order = np.argsort(src, kind="stable")
    starts = np.searchsorted(src[order], np.arange(n + 1))
    d_sorted = dst[order]
    indeg = np.bincount(dst, minlength=n)
    out = []
    frontier = np.array([start], dtype=np.int64)
    while frontier.size:
        out.append(frontier)
        lo, hi = starts[frontier], starts[frontier + 1]
        cnt = hi - lo
        if cnt.sum() == 0:
            break
        idx = np.repeat(lo - np.cumsum(cnt) + cnt, cnt) + np.arange(cnt.sum())
        cand, c = np.unique(d_sorted[idx], return_counts=True)
        indeg[cand] -= c
        frontier = cand[indeg[cand] == 0]
    return out


def _segment_logsumexp(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """log sum exp of each contiguous segment ``values[..., starts[i]:starts[i+1]]`` (last to the
    end) along the last axis."""
    m = np.maximum.reduceat(values, starts, axis=-1)
    safe = np.where(np.isfinite(m), m, 0.0)
    rep = np.repeat(safe, np.diff(np.append(starts, values.shape[-1])), axis=-1)
    s = np.add.reduceat(np.exp(values - rep), starts, axis=-1)
    with np.errstate(divide="ignore"):
        return np.where(s > 0, np.log(s) + safe, -np.inf)


def _level_sweep(init: np.ndarray, frm: np.ndarray, to: np.ndarray, cost: np.ndarray, level: np.ndarray,
                 levels: range) -> np.ndarray:
    """``score[to] = logaddexp(score[to], logsumexp(score[frm] - cost))`` over the arcs whose ``to``
    is at each level of ``levels`` in turn (all their ``frm`` states are done by then)."""
    order = np.lexsort((to, level[to]))
    frm, to, cost, lev = frm[order], to[order], cost[order], level[to[order]]
    bounds = np.searchsorted(lev, np.arange(level.max() + 2))
    score = init.copy()
    for k in levels:
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi:
            continue
        t = to[lo:hi]
        first = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
        v = _segment_logsumexp(score[frm[lo:hi]] - cost[lo:hi], first)
        dst = t[first]
        score[dst] = np.logaddexp(score[dst], v)
    return score


def lattice_pdf_posteriors(la: LatticeArrays, acwt: float) -> tuple[Tensor, Tensor, Tensor, float]:
    """Posterior of each (frame, pdf) under the lattice's path distribution at acoustic scale ``acwt``.

    A path's log-probability is ``-(graph cost + acwt * acoustic cost + final cost)``, normalised
    over the lattice (Kaldi ``lattice-to-post --acoustic-scale``). Returns ``(frames, pdfs, post,
    log_total)``: LongTensors ``(R,)``, DoubleTensor ``(R,)`` with one row per distinct (frame, pdf)
    on an emitting arc (posteriors of a frame sum to 1), and the log total path weight.
    """
    n = int(la.num_states)
    src, dst = la.src.numpy().astype(np.int64), la.dst.numpy().astype(np.int64)
    cost = (la.graph_cost.double() + acwt * la.acoustic_cost.double()).numpy()
    final = la.final.double().numpy()
    fronts = _frontiers(n, src, dst, int(la.start))
    level = np.empty(n, dtype=np.int64)
    for k, f in enumerate(fronts):
        level[f] = k
    init = np.full(n, -np.inf)
    init[int(la.start)] = 0.0
    alpha = _level_sweep(init, src, dst, cost, level, range(1, len(fronts)))
    # backward: levels counted from the end, arcs reversed
    rlevel = level.max() - level
    beta = _level_sweep(np.where(np.isfinite(final), -final, -np.inf), dst, src, cost, rlevel,
                        range(1, len(fronts)))
    total = float(beta[int(la.start)])
    if not np.isfinite(total):
        raise ValueError("lattice has no complete path with finite weight")
    pdf = la.pdf.numpy().astype(np.int64)
    emit = pdf >= 0
    post = np.exp(alpha[src[emit]] - cost[emit] + beta[dst[emit]] - total)
    frames = la.frame.numpy().astype(np.int64)[src[emit]]
    P = int(pdf.max()) + 1 if emit.any() else 1
    key = frames * P + pdf[emit]
    uk, inv = np.unique(key, return_inverse=True)
    acc = np.zeros(uk.size)
    np.add.at(acc, inv, post)
    return (torch.from_numpy(uk // P), torch.from_numpy(uk % P), torch.from_numpy(acc), total)
