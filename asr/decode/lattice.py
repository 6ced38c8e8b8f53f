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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


def connected_states(n: int, src: np.ndarray, dst: np.ndarray, initial: np.ndarray, final: np.ndarray) -> np.ndarray:
    """States on some path from an initial to a final state (bool (n,)): OpenFst's ``Connect``
    test, accessible and co-accessible, by two breadth-first searches from a virtual source
    (O(arcs); graphs may have cycles). ``src``/``dst``: (E,) arc ends; ``initial``/``final``: (n,)
    bool masks."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import breadth_first_order

    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)

    def reach(seed: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        seeds = np.flatnonzero(seed)
        rows = np.concatenate([a, np.full(seeds.size, n)])
        cols = np.concatenate([b, seeds])
        adj = csr_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n + 1, n + 1))
        out = np.zeros(n + 1, dtype=bool)
        out[breadth_first_order(adj, n, directed=True, return_predecessors=False)] = True
        return out[:n]

    return reach(np.asarray(initial, bool), src, dst) & reach(np.asarray(final, bool), dst, src)


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
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(states in the order (frame, ε-depth within the frame, id), frame and ε-depth of every
    state) when
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
    return np.lexsort((level, frame)), frame, level


def _read_raw_lattice(lat) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(num_states, start, arcs (A, 6) float64: src, dst, ilabel, olabel, graph cost, acoustic
    cost, finals (S, 2) float64: graph, acoustic (+inf = not final)) of a ``kaldifst.Lattice``,
    read from its OpenFst binary form (``VectorFst<LatticeArc>``: a header, then per state its
    final weight (2 float32), int64 arc count and 20-byte arcs) — the float32 weights exactly,
    where the text form keeps 6 digits. The state records have variable length; their offsets
    are found by pointer doubling over every word position (log2(S) vectorised steps)."""
    return _parse_vector_lattice(_lattice_bytes(lat))


def _lattice_bytes(lat) -> bytes:
    """The OpenFst binary form of a ``kaldifst.Lattice`` (through a file in /dev/shm)."""
    fd, path = tempfile.mkstemp(suffix=".lat", dir=_TMP_DIR)
    os.close(fd)
    try:
        if not lat.write(path):
            raise OSError(f"could not write a lattice to {path}")
        return Path(path).read_bytes()
    finally:
        os.unlink(path)


def _lattice_from_bytes(buf: bytes):
    """A ``kaldifst.Lattice`` read from its OpenFst binary form."""
    import kaldifst

    fd, path = tempfile.mkstemp(suffix=".lat", dir=_TMP_DIR)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf)
        lat = kaldifst.Lattice.read(path)
    finally:
        os.unlink(path)
    if lat is None:
        raise ValueError("could not read back a rescored lattice")
    return lat


_TMP_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
_MAGIC = 2125659606


def _parse_vector_lattice(buf: bytes) -> tuple[int, int, np.ndarray, np.ndarray]:
    """See ``_read_raw_lattice``."""
    return _parse_vector_lattice_words(buf)[:4]


def _parse_vector_lattice_words(buf: bytes) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray, int]:
    """``_parse_vector_lattice``'s four results, then the 4-byte word position of every arc record
    (in the order of ``arcs``) within the body and the body's byte offset in ``buf``: an arc's
    acoustic cost is the float32 at byte ``body + 4 * (word + 3)``."""
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
        return 0, start, np.zeros((0, 6)), np.zeros((0, 2)), np.zeros(0, dtype=np.int64), off + 40
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
    return n, start, arcs, finals, arc_word, off + 40


class _Sorted(NamedTuple):
    """A raw lattice trimmed, states renumbered in the order (frame, ε-depth, decoder's id),
    arcs sorted by (src, dst); numpy arrays, weights as read (graph, acoustic)."""

    n: int
    start: int
    src: np.ndarray
    dst: np.ndarray
    ilabel: np.ndarray
    olabel: np.ndarray
    weight: np.ndarray      # (A, 2)
    final: np.ndarray       # (S, 2), +inf = not final
    frame: np.ndarray
    level: np.ndarray
    arc_id: np.ndarray      # (A,) each arc's row in the raw lattice's arcs


def lattice_to_arrays(lat) -> LatticeArrays:
    """Convert a ``kaldifst.Lattice`` (input labels ``pdf + 1``) to topologically sorted,
    trimmed ``LatticeArrays`` (see module docstring), states in the order (frame, ε-depth,
    decoder's id). A lattice that is not trimmed is trimmed first; one whose paths into a
    state consume different numbers of frames (not state-level) or that has a cycle is a
    ValueError."""
    return raw_lattice_arrays(*_read_raw_lattice(lat))


def raw_lattice_arrays(n: int, start: int, arcs: np.ndarray, finals: np.ndarray) -> LatticeArrays:
    """``LatticeArrays`` of a raw lattice given as arrays (see ``_read_raw_lattice``)."""
    r = _sorted_lattice(n, start, arcs, finals)
    final = r.final[:, 0] + r.final[:, 1]
    T = int(r.frame[np.isfinite(final)].max())
    return LatticeArrays(
        num_states=r.n, start=r.start, final=torch.from_numpy(final), frame=torch.from_numpy(r.frame),
        src=torch.from_numpy(r.src), dst=torch.from_numpy(r.dst), pdf=torch.from_numpy(r.ilabel - 1),
        word=torch.from_numpy(r.olabel), graph_cost=torch.from_numpy(r.weight[:, 0].copy()),
        acoustic_cost=torch.from_numpy(r.weight[:, 1].copy()), num_frames=T)


def _sorted_lattice(n: int, start: int, arcs: np.ndarray, finals: np.ndarray) -> _Sorted:
    a = arcs[:, :4].astype(np.int64)
    src, dst, il, ol = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
    ga = arcs[:, 4:]
    final = finals[:, 0] + finals[:, 1]
    emit = (il > 0).astype(np.int64)
    arc_id = np.arange(src.size)
    res = _frame_order(n, start, src, dst, emit, final)
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
        src, dst, il, ol, ga, emit, arc_id = new[src[k]], new[dst[k]], il[k], ol[k], ga[k], emit[k], arc_id[k]
        n, start, final, finals = ids.size, int(new[start]), final[ids], finals[ids]
        res = _frame_order(n, start, src, dst, emit, final)
        if res is None:
            raise ValueError("not a state-level lattice (paths into a state consume different numbers of frames)")
    order, frame, level = res
    new_id = np.empty(n, dtype=np.int64)
    new_id[order] = np.arange(n)
    src, dst = new_id[src], new_id[dst]
    srt = np.lexsort((dst, src))
    return _Sorted(n=n, start=int(new_id[start]), src=src[srt], dst=dst[srt], ilabel=il[srt], olabel=ol[srt],
                   weight=ga[srt], final=finals[order], frame=frame[order], level=level[order], arc_id=arc_id[srt])


class LatticeRescorer:
    """A ``kaldifst.Lattice`` (input labels ``pdf + 1``, as ``asr.decode.decoder.decode_lattice``
    returns it) prepared for new acoustic costs (Kaldi ``gmm-rescore-lattice``, which
    ``decode_fmllr.sh`` uses to score its adapted pass's lattice with the final transforms instead
    of searching again): ``frames`` / ``pdfs`` (E,) are the frame and pdf of every emitting arc on a
    complete path, the only (frame, pdf) pairs whose likelihoods are needed;
    :meth:`with_costs` gives the lattice with those arcs' acoustic costs replaced, graph costs,
    states and arcs unchanged (arcs on no complete path keep their costs)."""

    def __init__(self, lat) -> None:
        buf = _lattice_bytes(lat)
        n, start, arcs, finals, arc_word, self._body = _parse_vector_lattice_words(buf)
        r = _sorted_lattice(n, start, arcs, finals)
        emit = r.ilabel > 0
        self.frames = torch.from_numpy(r.frame[r.src[emit]])
        self.pdfs = torch.from_numpy(r.ilabel[emit] - 1)
        self._words = arc_word[r.arc_id[emit]] + 3           # the acoustic cost's float32 word
        self._buf = buf

    def with_costs(self, acoustic: Tensor):
        """The lattice with acoustic costs ``acoustic (E,)`` (unscaled, -ln) on the emitting arcs."""
        if acoustic.shape != self.frames.shape:
            raise ValueError(f"{tuple(acoustic.shape)} acoustic costs for {self.frames.numel()} emitting arcs")
        out = np.frombuffer(self._buf, np.uint8).copy()
        f32 = out[self._body:self._body + (out.size - self._body) // 4 * 4].view("<f4")
        f32[self._words] = acoustic.detach().to("cpu", torch.float32).numpy()
        return _lattice_from_bytes(out.tobytes())


def rescore_lattice(lat, loglikes: Tensor):
    """``lat`` with every emitting arc's acoustic cost replaced by ``-loglikes[t, pdf]`` of the frame
    ``t`` it consumes (:class:`LatticeRescorer`; ``loglikes (T, num_pdfs)``)."""
    r = LatticeRescorer(lat)
    if r.frames.numel() and (int(r.frames.max()) >= loglikes.shape[0] or int(r.pdfs.max()) >= loglikes.shape[1]):
        raise ValueError(f"lattice needs frame {int(r.frames.max())} and pdf {int(r.pdfs.max())}; "
                         f"log-likelihoods are {tuple(loglikes.shape)}")
    return r.with_costs(-loglikes.detach().cpu()[r.frames, r.pdfs])


def lattice_best_paths(lats: Sequence, lmwts: Sequence[float]) -> list[list[list[int]]]:
    """Word ids of the best path of each ``kaldifst.Lattice`` of ``lats`` (graph and acoustic
    costs, as ``asr.decode.decoder.lattice_one`` returns them) under the cost ``graph +
    acoustic / lmwt``, for every LM weight of ``lmwts``: ``out[i][k]`` is
    ``lattice_best_words(lats[i], lmwts[k])``.

    The arithmetic is OpenFst's on Kaldi's ``LatticeWeight``: acoustic costs scaled in double and
    stored as float32 (``ScaleLattice``), path costs summed in float32 per component, paths
    compared by (graph + acoustic, then graph), the final cost added last; so every state's best
    cost is the one ``ShortestPath`` finds. Which of two paths of exactly equal costs OpenFst keeps
    depends on its depth-first visiting order; where such a tie occurs in a lattice (for one LM
    weight), that lattice and weight are handed to OpenFst, so the result is always
    ``lattice_best_words``'s. One dynamic programme serves all lattices
    and all LM weights at once (a column per LM weight), stepping through the groups of states of
    equal (frame, ε-depth): the number of Python steps is that of the longest lattice, not the
    number of lattices times LM weights.
    """
    return _with_openfst_on_ties(list(lats), lmwts, *_best_paths([_sorted_lattice(*_read_raw_lattice(x))
                                                                 for x in lats], lmwts))


def iter_best_paths(items, lmwts: Sequence[float], chunk: int = 64):
    """Best-path word ids for every LM weight of ``lmwts`` over an iterable of (key, lattice),
    ``chunk`` lattices per ``lattice_best_paths`` call (bounded memory); yields (key, [word ids
    per LM weight]). For one or two LM weights (a test set scored at dev's choice) OpenFst's
    shortest path per lattice is cheaper and is used instead."""
    from asr.decode.decoder import lattice_best_words

    keys, pending = [], []
    for key, lat in items:
        if len(lmwts) <= 2:
            yield key, [lattice_best_words(lat, w) for w in lmwts]
            continue
        keys.append(key)
        pending.append(lat)
        if len(pending) == chunk:
            yield from zip(keys, lattice_best_paths(pending, lmwts))
            keys, pending = [], []
    if pending:
        yield from zip(keys, lattice_best_paths(pending, lmwts))


def _with_openfst_on_ties(lats: list, lmwts: Sequence[float], words: list[list[list[int]]], tied: np.ndarray
                          ) -> list[list[list[int]]]:
    """Where equal-cost paths met (``tied``), the path OpenFst's shortest path keeps: which of
    them it meets first depends on its depth-first state order, which the programme does not
    follow. Rare with real models; frequent only where a tiny tree ties pdfs and the LM ties
    unseen phones."""
    from asr.decode.decoder import lattice_best_words

    for i, k in zip(*np.nonzero(tied)):
        words[i][k] = lattice_best_words(lats[i], lmwts[k])
    return words


def _best_paths(lats: list[_Sorted], lmwts: Sequence[float]) -> tuple[list[list[list[int]]], np.ndarray]:
    """(word ids per lattice per LM weight, (L, K) bool: where some state's best in-arc, or the
    best final state, was a tie of exactly equal costs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                   # small tensors: threads would only contend
    try:
        return _best_paths_dp(lats, lmwts)
    finally:
        torch.set_num_threads(threads)


def _best_paths_dp(lats: list[_Sorted], lmwts: Sequence[float]) -> tuple[list[list[list[int]]], np.ndarray]:
    k = len(lmwts)
    if not lats or k == 0:
        return [[] for _ in lats], np.zeros((len(lats), k), dtype=bool)
    inv = np.array([1.0 / float(w) for w in lmwts])
    off = np.cumsum([0] + [r.n for r in lats])
    n = int(off[-1])
    src = np.concatenate([r.src + o for r, o in zip(lats, off)])
    dst = np.concatenate([r.dst + o for r, o in zip(lats, off)])
    weight = np.concatenate([r.weight for r in lats])
    olab = np.concatenate([r.olabel for r in lats])
    final = np.concatenate([r.final for r in lats])
    levels = 1 + max(int(r.level.max()) for r in lats)
    gid = np.concatenate([r.frame * levels + r.level for r in lats])
    start = off[:-1]
    o = np.lexsort((dst, gid[dst]))                        # arcs by (group of dst, dst)
    src, dst, olab = src[o], dst[o], olab[o]
    g1 = weight[o, 0].astype(np.float32)
    a2 = (weight[o, 1, None] * inv).astype(np.float32)     # (A, K)
    # the DP in torch: one scatter-min per criterion per group, however many destinations it has
    t_src, t_dst = torch.from_numpy(src), torch.from_numpy(dst)
    t_g1, t_a2 = torch.from_numpy(g1).unsqueeze(1), torch.from_numpy(a2)
    d1 = torch.full((n, k), float("inf"), dtype=torch.float32)
    d2 = torch.full((n, k), float("inf"), dtype=torch.float32)
    d1[torch.from_numpy(start)] = 0.0
    d2[torch.from_numpy(start)] = 0.0
    back = torch.full((n, k), -1, dtype=torch.long)
    tied = torch.zeros((len(lats), k), dtype=torch.bool)
    ptr_tie = torch.zeros((n, k), dtype=torch.bool)
    t_owner = torch.repeat_interleave(torch.arange(len(lats)), torch.from_numpy(np.diff(off)))
    change = np.concatenate([[True], gid[dst[1:]] != gid[dst[:-1]]])
    bounds = np.append(np.flatnonzero(change), dst.size).tolist()
    run = np.cumsum(np.concatenate([[0], dst[1:] != dst[:-1]]))   # index of the arc's destination run
    t_run = torch.from_numpy(run)
    inf = torch.tensor(float("inf"))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        s = t_src[lo:hi]
        r0 = int(run[lo])
        idx = (t_run[lo:hi] - r0).unsqueeze(1).expand(-1, k)
        u = int(run[hi - 1]) - r0 + 1
        c1 = d1[s] + t_g1[lo:hi]
        c2 = d2[s] + t_a2[lo:hi]
        tot = c1 + c2
        m = torch.full((u, k), float("inf")).scatter_reduce(0, idx, tot, "amin")
        best = tot == m.gather(0, idx)
        if int(best.sum()) > u * k:            # equal totals: the smaller graph cost wins
            m1 = torch.full((u, k), float("inf")).scatter_reduce(0, idx, torch.where(best, c1, inf), "amin")
            best &= c1 == m1.gather(0, idx)
        pos = torch.arange(lo, hi).unsqueeze(1).expand(-1, k)
        pick = torch.full((u, k), hi).scatter_reduce(0, idx, torch.where(best, pos, hi), "amin")
        ud = t_dst[pick[:, 0]]
        if int(best.sum()) > u * k:            # equal costs: OpenFst keeps the first it meets
            many = torch.zeros((u, k), dtype=torch.long).scatter_add_(0, idx, best.long()) > 1
            rows, ks = torch.nonzero(many, as_tuple=True)
            ptr_tie[ud[rows], ks] = True       # matters if the best path passes through it ...
            other = best & (c2 != c2.gather(0, pick - lo).gather(0, idx))
            if bool(other.any()):              # ... or anywhere, where the tied costs differ in their parts
                aj, kk = torch.nonzero(other, as_tuple=True)
                tied[t_owner[t_dst[lo:hi][aj]], kk] = True
        d1[ud] = c1.gather(0, pick - lo)
        d2[ud] = c2.gather(0, pick - lo)
        back[ud] = pick
    d1, d2, back, ptr_tie = d1.numpy(), d2.numpy(), back.numpy(), ptr_tie.numpy()
    cols = np.arange(k)
    f1 = d1 + final[:, 0, None].astype(np.float32)
    f2 = d2 + (final[:, 1, None] * inv).astype(np.float32)
    tot = f1 + f2
    best_state = np.empty((len(lats), k), dtype=np.int64)
    tied_final = np.zeros((len(lats), k), dtype=bool)
    for i, (a, b) in enumerate(zip(off[:-1].tolist(), off[1:].tolist())):   # per lattice, not per frame
        t, f = tot[a:b], f1[a:b]
        cand = t == t.min(axis=0)
        cand &= f == np.where(cand, f, np.inf).min(axis=0)
        best_state[i] = a + np.argmax(cand, axis=0)          # the first of equal finals
        tied_final[i] = cand.sum(axis=0) > 1
    state = best_state.reshape(-1)
    col = np.tile(cols, len(lats))
    stop = np.repeat(start, k)
    trail_w, trail_i = [], []
    on_tie = np.zeros(state.size, dtype=bool)
    while True:
        live = state != stop
        if not live.any():
            break
        on_tie |= live & ptr_tie[state, col]
        arc = back[state, col]
        hit = np.flatnonzero(live & (olab[arc] != 0))
        trail_i.append(hit)
        trail_w.append(olab[arc[hit]])
        state = np.where(live, src[arc], state)
    words: list[list[list[int]]] = [[[] for _ in range(k)] for _ in lats]
    for idx, w in zip(reversed(trail_i), reversed(trail_w)):
        for j, x in zip(idx.tolist(), w.tolist()):
            words[j // k][j % k].append(x)
    return words, (tied.numpy() | tied_final | on_tie.reshape(len(lats), k))
