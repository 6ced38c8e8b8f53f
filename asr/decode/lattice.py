"""Lattices as tensors, for sequence training (MPE / sMBR / MMI) and rescoring.

``LatticeArrays`` is the raw **state-level** lattice of ``LatticeSimpleDecoder`` (Kaldi's
``GetRawLattice``): every arc with ``pdf >= 0`` consumes exactly one frame, arcs with
``pdf == -1`` are epsilon arcs (word-boundary / backoff arcs of HCLG) that consume none. So
``frame[dst] = frame[src] + (pdf >= 0)`` and the emitting arcs of frame ``t`` are those with
``pdf >= 0`` and ``frame[src] == t``; a frame-level forward-backward processes states in index
order (they are topologically sorted: ``src < dst`` for every arc; states in the order of their
frame, then of their ε-depth within it).

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

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


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


def _levels(n: int, src: np.ndarray, dst: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """States reachable from ``roots`` in Kahn topological order (vectorised per frontier);
    raises ValueError on a cycle among them. Only the fallback of ``lattice_to_arrays`` for a
    lattice that is not trimmed uses it: its loop is as long as the lattice."""
    order_idx = np.argsort(src, kind="stable")
    d_sorted = dst[order_idx]
    starts = np.searchsorted(src[order_idx], np.arange(n + 1))
    reach = np.zeros(n, dtype=bool)
    frontier = roots
    reach[roots] = True
    while frontier.size:
        nxt = _gather(frontier, starts, d_sorted)
        nxt = np.unique(nxt[~reach[nxt]])
        reach[nxt] = True
        frontier = nxt
    live = reach[src]
    indeg = np.bincount(dst[live], minlength=n)
    order = []
    frontier = roots[indeg[roots] == 0]
    while frontier.size:
        order.append(frontier)
        cand, cnt = np.unique(_gather(frontier, starts, d_sorted), return_counts=True)
        indeg[cand] -= cnt
        frontier = cand[indeg[cand] == 0]
    out = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    if out.size != int(reach.sum()):
        raise ValueError("lattice has a cycle")
    return out


def _gather(states: np.ndarray, starts: np.ndarray, d_sorted: np.ndarray) -> np.ndarray:
    """Destinations of all arcs leaving ``states`` (CSR gather)."""
    lo, hi = starts[states], starts[states + 1]
    cnt = hi - lo
    if cnt.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    return d_sorted[np.repeat(lo - np.cumsum(cnt) + cnt, cnt) + np.arange(cnt.sum())]


MAX_EPS_DEPTH = 64


def _frame_order(n: int, start: int, src: np.ndarray, dst: np.ndarray, emit: np.ndarray, final: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """(states in the order (frame, ε-depth within the frame, id), frame of every state) when
    the lattice is trimmed and state-level (every path into a state consumes the same number of
    frames); None when it is not.

    Without a loop over frames: one in-arc per state is a tree whose depths (frames counted by
    ``emit``) pointer jumping finds in log2(S) steps; every arc must then agree with those
    frames; the ε-arcs within a frame are ordered by their longest ε-path (a few steps, ε-chains
    of HCLG being short). Trimmed: every state's tree path reaches the start (reachable) and
    every state but the final ones has an arc out, which in a DAG leads to a final state."""
    if n == 0:
        return None
    parent = np.full(n, -1, dtype=np.int64)
    step = np.zeros(n, dtype=np.int64)
    parent[dst[::-1]] = src[::-1]            # any one in-arc (the first one) per state
    step[dst[::-1]] = emit[::-1]
    if parent[start] != -1 or bool((np.delete(parent, start) < 0).any()):
        return None
    parent[start] = start                    # step[start] = 0: jumps that reach the start stop adding
    frame = step.copy()
    for _ in range(int(n).bit_length()):
        frame = frame + frame[parent]
        parent = parent[parent]
    if bool((parent != start).any()):
        return None                          # a cycle
    if not bool((frame[dst] == frame[src] + emit).all()):
        return None
    if bool((np.bincount(src, minlength=n)[~np.isfinite(final)] == 0).any()):
        return None
    eps = emit == 0
    es, ed = src[eps], dst[eps]
    level = np.zeros(n, dtype=np.int64)
    for _ in range(MAX_EPS_DEPTH + 1):
        new = np.zeros(n, dtype=np.int64)
        np.maximum.at(new, ed, level[es] + 1)
        if np.array_equal(new, level):
            break
        level = new
    else:
        return None                          # an ε-cycle (or ε-paths longer than MAX_EPS_DEPTH)
    return np.lexsort((level, frame)), frame


def _read_raw_lattice(lat) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(num_states, start, arcs (A, 6) float64: src, dst, ilabel, olabel, graph cost, acoustic
    cost, finals (S, 2) float64: graph, acoustic (+inf = not final)) of a ``kaldifst.Lattice``,
    read from its OpenFst binary form (``VectorFst<LatticeArc>``: a header, then per state its
    final weight (2 float32), int64 arc count and 20-byte arcs) — the float32 weights exactly,
    where the text form keeps 6 digits. The state records have variable length; their offsets
    are found by pointer doubling over every word position (log2(S) vectorised steps)."""
    fd, path = tempfile.mkstemp(suffix=".lat", dir=_TMP_DIR)
    os.close(fd)
    try:
        if not lat.write(path):
            raise OSError(f"could not write a lattice to {path}")
        buf = Path(path).read_bytes()
    finally:
        os.unlink(path)
    return _parse_vector_lattice(buf)


_TMP_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
_MAGIC = 2125659606


def _parse_vector_lattice(buf: bytes) -> tuple[int, int, np.ndarray, np.ndarray]:
    """See ``_read_raw_lattice``."""
    def header_string(off: int) -> tuple[str, int]:
        k = int(np.frombuffer(buf, "<i4", 1, off)[0])
        return buf[off + 4:off + 4 + k].decode(), off + 4 + k
    if len(buf) < 8 or int(np.frombuffer(buf, "<i4", 1, 0)[0]) != _MAGIC:
        raise ValueError("not an OpenFst binary FST")
    fst_type, off = header_string(4)
    arc_type, off = header_string(off)
    if fst_type != "vector" or arc_type != "lattice4":
        raise ValueError(f"expected a vector FST of lattice4 arcs, got {fst_type}/{arc_type}")
    flags = int(np.frombuffer(buf, "<i4", 1, off + 4)[0])
    start, n = (int(x) for x in np.frombuffer(buf, "<i8", 2, off + 16))
    if flags & 3:
        raise ValueError("lattices with symbol tables are not supported")
    body = np.frombuffer(buf[off + 40:], "<i4")
    w = body.size
    if n == 0:
        return 0, start, np.zeros((0, 6)), np.zeros((0, 2))
    # a state record at word p: final (2 words), arc count (int64: 2 words), 5 words per arc
    p = np.arange(w - 3)
    cnt = body[2:w - 1].astype(np.int64)
    ok = (body[3:w] == 0) & (cnt >= 0) & (p + 4 + 5 * cnt <= w)
    jump = np.full(w + 2, w + 1, dtype=np.int64)
    jump[:w - 3] = np.where(ok, p + 4 + 5 * cnt, w + 1)
    jump[w] = w
    pos = np.zeros(1, dtype=np.int64)       # the records 0 .. 2^k - 1 in order; jump: 2^k records on
    while pos.size <= n:
        pos = np.concatenate([pos, jump[pos]])
        jump = jump[jump]
    states = pos[:n]
    if pos[n] != w or bool((states >= w).any()):
        raise ValueError("corrupt lattice (state records do not add up)")
    narcs = body[states + 2].astype(np.int64)
    first = states + 4
    arc_word = np.repeat(first - 5 * (np.cumsum(narcs) - narcs), narcs) + 5 * np.arange(int(narcs.sum()))
    f32 = body.view("<f4")
    arcs = np.empty((arc_word.size, 6))
    arcs[:, 0] = np.repeat(np.arange(n), narcs)
    arcs[:, 1] = body[arc_word + 4]
    arcs[:, 2] = body[arc_word]
    arcs[:, 3] = body[arc_word + 1]
    arcs[:, 4] = f32[arc_word + 2]
    arcs[:, 5] = f32[arc_word + 3]
    finals = np.stack([f32[states], f32[states + 1]], 1).astype(np.float64)
    return n, start, arcs, finals


def lattice_to_arrays(lat) -> LatticeArrays:
    """Convert a ``kaldifst.Lattice`` (input labels ``pdf + 1``) to topologically sorted,
    trimmed ``LatticeArrays`` (see module docstring), states in the order (frame, ε-depth,
    decoder's id). A lattice that is not trimmed is trimmed first; one whose paths into a
    state consume different numbers of frames (not state-level) or that has a cycle is a
    ValueError."""
    n, start, arcs, finals = _read_raw_lattice(lat)
    return raw_lattice_arrays(n, start, arcs, finals)


def raw_lattice_arrays(n: int, start: int, arcs: np.ndarray, finals: np.ndarray) -> LatticeArrays:
    """``LatticeArrays`` of a raw lattice given as arrays (see ``_read_raw_lattice``)."""
    a = arcs[:, :4].astype(np.int64)
    src, dst, il, ol = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
    ga = arcs[:, 4:]
    final = finals[:, 0] + finals[:, 1]
    emit = (il > 0).astype(np.int64)
    res = _frame_order(n, start, src, dst, emit, final)
    ids = np.arange(n)
    if res is None:  # trim (co-reachable from a final state, reachable from the start), then again
        fin = np.nonzero(np.isfinite(final))[0]
        coacc = np.zeros(n, dtype=bool)
        coacc[_levels(n, dst, src, fin)] = True
        if not coacc[start]:
            raise ValueError("lattice has no complete path")
        keep_arc = coacc[src] & coacc[dst]
        acc = np.zeros(n, dtype=bool)
        acc[_levels(n, src[keep_arc], dst[keep_arc], np.array([start]))] = True
        ids = np.nonzero(acc)[0]
        new = np.full(n, -1, dtype=np.int64)
        new[ids] = np.arange(ids.size)
        k = acc[src] & acc[dst] & keep_arc
        src, dst, il, ol, ga, emit = new[src[k]], new[dst[k]], il[k], ol[k], ga[k], emit[k]
        n, start, final = ids.size, int(new[start]), final[ids]
        res = _frame_order(n, start, src, dst, emit, final)
        if res is None:
            raise ValueError("not a state-level lattice (paths into a state consume different numbers of frames)")
    order, frame = res
    new_id = np.empty(n, dtype=np.int64)
    new_id[order] = np.arange(n)
    src, dst = new_id[src], new_id[dst]
    srt = np.lexsort((dst, src))
    src, dst, il, ol, ga = src[srt], dst[srt], il[srt], ol[srt], ga[srt]
    final, frame = final[order], frame[order]
    T = int(frame[np.isfinite(final)].max())
    return LatticeArrays(
        num_states=n, start=int(new_id[start]), final=torch.from_numpy(final.copy()),
        frame=torch.from_numpy(frame.copy()), src=torch.from_numpy(src), dst=torch.from_numpy(dst),
        pdf=torch.from_numpy(il - 1), word=torch.from_numpy(ol), graph_cost=torch.from_numpy(ga[:, 0].copy()),
        acoustic_cost=torch.from_numpy(ga[:, 1].copy()), num_frames=T)
