"""Lattices as tensors, for sequence training (MPE / sMBR / MMI) and rescoring.

``LatticeArrays`` is the raw **state-level** lattice of ``LatticeSimpleDecoder`` (Kaldi's
``GetRawLattice``): every arc with ``pdf >= 0`` consumes exactly one frame, arcs with
``pdf == -1`` are epsilon arcs (word-boundary / backoff arcs of HCLG) that consume none. So
``frame[dst] = frame[src] + (pdf >= 0)`` and the emitting arcs of frame ``t`` are those with
``pdf >= 0`` and ``frame[src] == t``; a frame-level forward-backward processes states in index
order (they are topologically sorted: ``src < dst`` for every arc).

Fields (S states, A arcs):
    num_states: S; start: start state (always 0).
    final: DoubleTensor (S,) final graph cost (-ln), +inf for non-final states.
    frame: LongTensor (S,) number of frames consumed before the state.
    src, dst: LongTensor (A,); pdf: LongTensor (A,) pdf id (-1 epsilon);
    word: LongTensor (A,) output word id (0 = none; phones in phone mode);
    graph_cost: DoubleTensor (A,) -ln of LM x lexicon x HMM transition weights (graph scale 1);
    acoustic_cost: DoubleTensor (A,) -loglikelihood of the arc's frame (unscaled; 0 for epsilon).
    num_frames: T.
A path's total cost at acoustic scale ``acwt`` is ``sum(graph_cost) + acwt * sum(acoustic_cost)
+ final``. States not on any complete path are removed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from asr.lang.fstarrays import parse_fst_text


@dataclass
class LatticeArrays:
    num_states: int
    start: int
    final: Tensor
    frame: Tensor
    src: Tensor
    dst: Tensor
    pdf: Tensor
    word: Tensor
    graph_cost: Tensor
    acoustic_cost: Tensor
    num_frames: int

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _levels(n: int, src: np.ndarray, dst: np.ndarray, roots: np.ndarray,
            step: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Kahn topological order (vectorised per frontier) of the states reachable from ``roots``
    and each state's depth counting ``step`` per arc (default 0; the depth of one path, which is
    every path's in a state-level lattice); raises
    ValueError on a cycle among reachable states."""
    order_idx = np.argsort(src, kind="stable")
    s_sorted, d_sorted = src[order_idx], dst[order_idx]
    step_sorted = np.zeros(src.size, dtype=np.int64) if step is None else step[order_idx]
    depth = np.zeros(n, dtype=np.int64)
    starts = np.searchsorted(s_sorted, np.arange(n + 1))
    # restrict in-degree to arcs from reachable states
    reach = np.zeros(n, dtype=bool)
    frontier = roots
    reach[roots] = True
    while frontier.size:
        nxt, _ = _gather(frontier, starts, d_sorted)
        nxt = np.unique(nxt[~reach[nxt]])
        reach[nxt] = True
        frontier = nxt
    live = reach[src]
    indeg = np.bincount(dst[live], minlength=n)
    order = []
    frontier = roots[indeg[roots] == 0]
    while frontier.size:
        order.append(frontier)
        nxt, idx = _gather(frontier, starts, d_sorted)
        if idx.size:  # state-level lattice: every path into a state has the same depth
            depth[nxt] = depth[s_sorted[idx]] + step_sorted[idx]
        cand, cnt = np.unique(nxt, return_counts=True)
        indeg[cand] -= cnt
        frontier = cand[indeg[cand] == 0]
    out = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    if out.size != int(reach.sum()):
        raise ValueError("lattice has a cycle")
    return out, depth


def _gather(states: np.ndarray, starts: np.ndarray, d_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Destinations (and sorted-arc indices) of all arcs leaving ``states`` (CSR gather)."""
    lo, hi = starts[states], starts[states + 1]
    cnt = hi - lo
    if cnt.sum() == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    idx = np.repeat(lo - np.cumsum(cnt) + cnt, cnt) + np.arange(cnt.sum())
    return d_sorted[idx], idx


def lattice_to_arrays(lat) -> LatticeArrays:
    """Convert a ``kaldifst.Lattice`` (input labels ``pdf + 1``) to topologically sorted,
    trimmed ``LatticeArrays`` (see module docstring)."""
    arcs, finals = parse_fst_text(lat.to_str(), 2)
    n = lat.num_states
    start = int(lat.start)
    finals_g = np.full(n, np.inf)
    finals_a = np.zeros(n)
    fs = finals[:, 0].astype(np.int64)
    finals_g[fs], finals_a[fs] = finals[:, 1], finals[:, 2]
    a = arcs[:, :4].astype(np.int64)
    ga = arcs[:, 4:]
    src, dst, il, ol = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
    # co-accessible states: reachable from finals in the reversed graph
    is_final = np.isfinite(finals_g)
    order_rev = _levels(n, dst, src, np.nonzero(is_final)[0])[0] if is_final.any() else np.zeros(0, np.int64)
    coacc = np.zeros(n, dtype=bool)
    coacc[order_rev] = True
    keep_arc = coacc[src] & coacc[dst]
    src, dst, il, ol, ga = src[keep_arc], dst[keep_arc], il[keep_arc], ol[keep_arc], ga[keep_arc]
    if not coacc[start]:
        raise ValueError("lattice has no complete path")
    order, depth = _levels(n, src, dst, np.array([start]), (il > 0).astype(np.int64))
    new_id = np.full(n, -1, dtype=np.int64)
    new_id[order] = np.arange(order.size)
    keep = new_id[src] >= 0
    src, dst, il, ol, ga = new_id[src[keep]], new_id[dst[keep]], il[keep], ol[keep], ga[keep]
    srt = np.lexsort((dst, src))
    src, dst, il, ol, ga = src[srt], dst[srt], il[srt], ol[srt], ga[srt]
    S = order.size
    final = torch.from_numpy(finals_g[order] + finals_a[order])
    frame = depth[order]  # in a state-level lattice every path into a state has the same length
    T = int(frame[np.isfinite(final.numpy())].max()) if S else 0
    return LatticeArrays(
        num_states=S, start=0, final=final, frame=torch.from_numpy(frame),
        src=torch.from_numpy(src), dst=torch.from_numpy(dst), pdf=torch.from_numpy(il - 1),
        word=torch.from_numpy(ol), graph_cost=torch.from_numpy(ga[:, 0].copy()),
        acoustic_cost=torch.from_numpy(ga[:, 1].copy()), num_frames=T)
