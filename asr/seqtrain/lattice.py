"""Denominator lattices and Povey & Woodland's arc-level MPE.

MPE (Povey & Woodland 2002, "Minimum phone error and I-smoothing for improved discriminative
training"; Povey 2003, PhD thesis ch. 6) maximises the expected *approximate phone accuracy*
of the hypotheses in a lattice. A hypothesised phone segment q (phone, start, end frames) scores

    A(q) = max_z { −1 + 2·e(q, z)  if z has q's phone
                  { −1 +   e(q, z)  otherwise,

over the reference phone segments z it overlaps, e(q, z) = overlap frames / length of z; a
segment overlapping no reference phone scores −1. A path's accuracy is the sum over its
segments, so the accuracy of a segment is known only where it *ends*.

To make that an additive arc quantity, the decoder's state-level lattice is rebuilt here so each
node also knows the phone and start frame of the segment it is inside ("segment expansion"):

1. The lattice is generated over a copy of HCLG whose HMM self-loops carry the input label
   ``pdf + 1 + P`` instead of ``pdf + 1`` (``loop_marked_graph``); the decoder sees the
   log-likelihood matrix twice, ``[ll, ll]``, so scores are unchanged. A non-loop arc into an
   HMM state 0 then marks the first frame of a phone — exact, where times read off word labels
   of a determinised lattice would not be.
2. ε-arcs are removed (``asr.seqtrain.graph.remove_epsilons``, graph costs only: they carry no
   frames), leaving a frame-synchronous acyclic acceptor.
3. Frame by frame, nodes are split by (segment start, segment phone); an arc that starts a new
   phone carries A(previous segment), final nodes carry A(last segment).

Forward-backward over the expanded lattice then gives the expected accuracy and, for every arc,
γ(a)·(c(a) − E[A]) with c(a) the expected accuracy of the paths through a (Povey 2003 eq. 6.19),
summed into ∂E[A]/∂(κ·ll[t, pdf]). The same lattices serve the frame-level criteria (MPFE phone
match, sMBR pdf match) and MMI / boosted MMI (numerator = the reference alignment).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from asr.seqtrain.fb import DenGraph
from asr.seqtrain.objective import SeqObjective
from asr.seqtrain.graph import (connected_after_epsilon_removal, csr_index, epsilon_free, group_logsumexp,
                                  keep_states, out_arcs, trim_mask)

NEG_INF = float("-inf")


@dataclass
class DenLattice:
    """One utterance's segment-expanded denominator lattice (ε-free, one frame per arc).

    num_nodes: N; node 0 is the start; ``final`` (N,) float64 log weight (−inf = not final);
    ``final_acc`` (N,) float32 accuracy of the segment that ends with the utterance.
    Arcs (A,): ``frame`` int32, ``src``/``dst`` int32 node ids, ``pdf`` int32, ``weight`` float32
    graph log-score (−graph cost: LM, HMM transitions), ``seg_acc`` float32 approximate accuracy
    of the phone segment the arc closes (0 for arcs inside a segment). ``num_frames``: T.
    """

    num_nodes: int
    num_frames: int
    frame: Tensor
    src: Tensor
    dst: Tensor
    pdf: Tensor
    weight: Tensor
    seg_acc: Tensor
    final: Tensor
    final_acc: Tensor

    @property
    def num_arcs(self) -> int:
        return int(self.src.numel())

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# ---------------------------------------------------------------------------------------------
# phone segments and approximate accuracy

def phone_segments(pdf_ali: Tensor, pdf2phone: Tensor, pdf2state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Phone segments of a pdf alignment (T,): (start, end inclusive, phone) LongTensors.

    A phone starts where the HMM state is 0 unless the previous frame is state 0 of the same
    phone (a self-loop); so repeated phones are split correctly for left-to-right topologies.
    """
    a = pdf_ali.long()
    if a.numel() == 0:
        z = torch.zeros(0, dtype=torch.long)
        return z, z, z
    ph, st = pdf2phone[a], pdf2state[a]
    new = st == 0
    new[1:] &= ~((st[:-1] == 0) & (ph[:-1] == ph[1:]))
    new[0] = True
    starts = torch.nonzero(new).flatten()
    ends = torch.cat([starts[1:] - 1, torch.tensor([a.numel() - 1])])
    return starts, ends, ph[starts]


def approx_phone_accuracy(hyp_class: Tensor, hyp_start: Tensor, hyp_end: Tensor, ref_start: Tensor,
                          ref_end: Tensor, ref_class: Tensor, ignore: Tensor | None = None) -> Tensor:
    """Povey & Woodland's approximate accuracy of hypothesis segments (module docstring).

    hyp_*: (Q,) phone class, first and last frame; ref_*: (Z,) the reference segments.
    ``ignore`` (classes, e.g. silence): hypothesis segments of these classes score 0 and
    reference segments of these classes are left out of the max. Returns float64 (Q,).
    """
    q = hyp_class.numel()
    out = torch.full((q,), -1.0, dtype=torch.float64)
    if q == 0 or ref_start.numel() == 0:
        return out
    keep_ref = torch.ones_like(ref_class, dtype=torch.bool) if ignore is None else ~torch.isin(ref_class, ignore)
    rs, re, rc = ref_start[keep_ref], ref_end[keep_ref], ref_class[keep_ref]
    if rs.numel():
        lo = torch.maximum(hyp_start.view(-1, 1), rs.view(1, -1))
        hi = torch.minimum(hyp_end.view(-1, 1), re.view(1, -1))
        ov = (hi - lo + 1).clamp_min(0).double()                     # (Q, Z) overlapping frames
        e = ov / (re - rs + 1).double().view(1, -1)
        same = hyp_class.view(-1, 1) == rc.view(1, -1)
        val = torch.where(same, -1.0 + 2.0 * e, -1.0 + e).masked_fill(ov == 0, NEG_INF)
        out = val.max(dim=1).values.clamp_min(-1.0)
    if ignore is not None and ignore.numel():
        out = out.masked_fill(torch.isin(hyp_class, ignore), 0.0)
    return out


# ---------------------------------------------------------------------------------------------
# lattice generation and expansion

def loop_marked_graph(hclg: str | Path, out: str | Path, num_pdfs: int) -> Path:
    """Write a copy of ``hclg`` whose self-loop arcs (src == dst, non-ε) have input label
    ``pdf + 1 + num_pdfs``; decode it with the log-likelihood matrix ``[ll, ll]`` (T, 2P)."""
    import kaldifst

    from asr.lang.fstarrays import arrays_to_fst, fst_to_arrays, read_fst, write_fst

    fa = fst_to_arrays(read_fst(hclg))
    if fa.num_arcs and int(fa.ilabel.max()) > num_pdfs:
        raise ValueError(f"{hclg}: input labels above {num_pdfs} (already loop-marked, or another tree?)")
    loop = (fa.src == fa.dst) & (fa.ilabel > 0)
    fa.ilabel = torch.where(loop, fa.ilabel + num_pdfs, fa.ilabel)
    f = arrays_to_fst(fa)
    kaldifst.arcsort(f, "ilabel")
    return write_fst(f, out)


def expand_lattice(lat, num_pdfs: int, pdf2phone: Tensor, pdf2state: Tensor, ref_pdf: Tensor,
                   phone_class: Tensor | None = None, ignore_classes: Tensor | None = None,
                   segments: bool = True) -> DenLattice:
    """Segment-expanded ``DenLattice`` of a loop-marked state-level lattice.

    lat: ``asr.decode.lattice.LatticeArrays`` decoded over ``loop_marked_graph`` (pdf ids in
    [0, 2P), −1 = ε); ref_pdf: (T,) reference pdf alignment (for the segment accuracies);
    phone_class: (num_phones+1,) class of each phone id for matching (e.g. the 48→39 folding;
    default identity); ignore_classes: see ``approx_phone_accuracy``. ``segments=False`` skips
    the node splitting (an ε-free lattice for the frame criteria and MMI; ``seg_acc`` = 0).

    A node is (lattice state q, segment start frame s, segment phone) — (q, 0, 0) without
    segments; node 0 is the start, the others are numbered in the order of (frame of q, q, s,
    phone) and arcs in the order of (source node, ε-free arc). An arc that enters an HMM state 0
    (not a self-loop) starts a segment (its frame, its phone), any other keeps its source's, so
    the nodes are found for all frames at once, one step per frame of segment age (the longest
    segment, not the utterance, bounds the loop). Runs on one thread: its operations are too
    small for torch's threads, which only contend (a job run in the main process would
    otherwise use all of them).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _expand(lat, num_pdfs, pdf2phone, pdf2state, ref_pdf, phone_class, ignore_classes, segments)
    finally:
        torch.set_num_threads(threads)


def _expand(lat, num_pdfs: int, pdf2phone: Tensor, pdf2state: Tensor, ref_pdf: Tensor, phone_class: Tensor | None,
            ignore_classes: Tensor | None, segments: bool) -> DenLattice:
    t_len = int(lat.num_frames)
    if ref_pdf.numel() != t_len:
        raise ValueError(f"lattice has {t_len} frames, reference alignment {ref_pdf.numel()}")
    pdf2phone, pdf2state = pdf2phone.long(), pdf2state.long()
    cls = phone_class.long() if phone_class is not None else torch.arange(int(pdf2phone.max()) + 1)
    g, frame_q = _epsilon_free_lattice(lat)
    if g.num_arcs and int(g.pdf.max()) >= 2 * num_pdfs:
        raise ValueError(f"lattice pdf ids reach {int(g.pdf.max())}, expected < {2 * num_pdfs}")
    q0 = torch.nonzero(torch.isfinite(g.start)).flatten()
    if q0.numel() != 1:
        raise ValueError("lattice must have one start state")
    a_frame = frame_q[g.src]
    per_frame = torch.bincount(a_frame, minlength=t_len)[:t_len]
    if bool((per_frame == 0).any()):
        raise ValueError(f"lattice has no arcs at frame {int(torch.nonzero(per_frame == 0)[0])}")
    pdf = g.pdf % num_pdfs
    starts = (g.pdf < num_pdfs) & (pdf2state[pdf] == 0)
    n_ph = int(pdf2phone.max()) + 2
    if segments:
        if bool((~starts & (g.src == q0)).any()):
            raise ValueError("lattice path does not begin with the first HMM state of a phone")
        node_q, node_s, node_ph = _segment_nodes(g, starts, a_frame, pdf2phone[pdf], t_len, n_ph)
    else:
        others = torch.nonzero(torch.arange(g.num_states) != q0).flatten()
        node_q, node_s, node_ph = others, torch.zeros_like(others), torch.zeros_like(others)
    # number the nodes: the start, then by (frame, state, segment start, phone)
    node_q = torch.cat([q0, node_q])
    node_s = torch.cat([torch.tensor([-1]), node_s])
    node_ph = torch.cat([torch.tensor([-1]), node_ph])
    key = _node_key(frame_q[node_q], node_q, node_s, node_ph, g.num_states, t_len, n_ph)
    srt = torch.argsort(key)
    key, node_q, node_s, node_ph = key[srt], node_q[srt], node_s[srt], node_ph[srt]
    n_nodes = int(key.numel())
    # every arc out of every node
    order, first, counts = csr_index(g.src, g.num_states)
    src, arc = out_arcs(node_q, first, counts, order)
    st, ps, pph = starts[arc], node_s[src], node_ph[src]
    t_arc = a_frame[arc]
    if segments:
        new_s = torch.where(st, t_arc, ps)
        new_ph = torch.where(st, pdf2phone[pdf[arc]], pph)
        closes = st & (ps >= 0)
    else:
        new_s, new_ph = torch.zeros_like(ps), torch.zeros_like(pph)
        closes = torch.zeros_like(st)
    dq = g.dst[arc]
    dst = torch.searchsorted(key, _node_key(frame_q[dq], dq, new_s, new_ph, g.num_states, t_len, n_ph))
    rs, re, rph = phone_segments(ref_pdf, pdf2phone, pdf2state)
    rc = cls[rph]
    seg_acc = torch.zeros(arc.numel(), dtype=torch.float64)
    seg_acc[closes] = _segment_accuracy(cls, pph[closes], ps[closes], t_arc[closes] - 1, rs, re, rc, ignore_classes,
                                        t_len, n_ph)
    last = torch.nonzero(frame_q[node_q] == t_len).flatten()
    final = torch.full((n_nodes,), NEG_INF, dtype=torch.float64)
    final_acc = torch.zeros(n_nodes, dtype=torch.float64)
    final[last] = g.final[node_q[last]]
    if segments:
        final_acc[last] = approx_phone_accuracy(cls[node_ph[last]], node_s[last], torch.full_like(last, t_len - 1),
                                                rs, re, rc, ignore_classes)
    if not bool(torch.isfinite(final).any()):
        raise ValueError("lattice has no final node at its last frame")
    return DenLattice(num_nodes=n_nodes, num_frames=t_len, frame=t_arc.int(), src=src.int(), dst=dst.int(),
                      pdf=pdf[arc].int(), weight=g.weight[arc].float(), seg_acc=seg_acc.float(), final=final,
                      final_acc=final_acc.float())


def _epsilon_free_lattice(lat) -> tuple[DenGraph, Tensor]:
    """The ε-removed (graph scores only: ε-arcs carry no frames), trimmed lattice as a
    ``DenGraph`` with labels ``pdf`` in [0, 2P), and the frame of each of its states (S,)."""
    n, start = int(lat.num_states), int(lat.start)
    src, dst, labels, final = lat.src.long(), lat.dst.long(), lat.pdf.long() + 1, -lat.final.double()
    g = epsilon_free(n, start, src, dst, labels, -lat.graph_cost.double(), final)
    keep = connected_after_epsilon_removal(n, start, src, dst, labels, final)
    if keep is None:             # not a trimmed, sorted lattice (``lattice_to_arrays`` makes them so)
        keep = trim_mask(g)
    return keep_states(g, keep), lat.frame.long()[keep]


def _node_key(frame: Tensor, q: Tensor, s: Tensor, ph: Tensor, num_states: int, t_len: int, n_ph: int) -> Tensor:
    """One int64 per node that sorts as (frame, state, segment start, phone); s, ph >= -1."""
    return ((frame * num_states + q) * (t_len + 2) + s + 1) * (n_ph + 1) + ph + 1


def _segment_nodes(g: DenGraph, starts: Tensor, a_frame: Tensor, a_phone: Tensor, t_len: int, n_ph: int
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Every (state, segment start, phone) reached, the start node excepted: the destinations of
    segment-starting arcs, then, one frame of segment age at a time, what arcs inside a segment
    (self-loops, HMM state > 0) carry them to. A node of age k is found at step k only, so the
    steps never meet a node twice. In numpy on one int64 key per node (state · m + the segment
    part), the step's few operations costing microseconds where torch's cost tens."""
    m = (t_len + 1) * n_ph
    st = starts.numpy()
    src, dst = g.src.numpy(), g.dst.numpy()
    key = np.unique((dst[st] * (t_len + 1) + a_frame.numpy()[st]) * n_ph + a_phone.numpy()[st])
    inner = np.flatnonzero(~st)
    order = inner[np.argsort(src[inner], kind="stable")]
    counts = np.bincount(src[inner], minlength=g.num_states)
    first = np.cumsum(counts) - counts
    d_sorted = dst[order]
    parts = [key]
    while key.size:
        q = key // m
        cnt = counts[q]
        total = int(cnt.sum())
        if total == 0:
            break
        pos = np.repeat(first[q] - (np.cumsum(cnt) - cnt), cnt) + np.arange(total)
        key = np.unique(d_sorted[pos] * m + np.repeat(key - q * m, cnt))
        parts.append(key)
    k = torch.from_numpy(np.concatenate(parts))
    return k // m, (k // n_ph) % (t_len + 1), k % n_ph


def _segment_accuracy(cls: Tensor, ph: Tensor, s: Tensor, e: Tensor, rs: Tensor, re: Tensor, rc: Tensor,
                      ignore: Tensor | None, t_len: int, n_ph: int) -> Tensor:
    """``approx_phone_accuracy`` of segments (phone ``ph``, frames ``s..e``), computed once per
    distinct segment (many arcs close the same one)."""
    if ph.numel() == 0:
        return torch.zeros(0, dtype=torch.float64)
    u, inv = torch.unique((s * (t_len + 1) + e) * n_ph + ph, return_inverse=True)
    us, ue, uph = u // ((t_len + 1) * n_ph), (u // n_ph) % (t_len + 1), u % n_ph
    return approx_phone_accuracy(cls[uph], us, ue, rs, re, rc, ignore)[inv]


# ---------------------------------------------------------------------------------------------
# forward-backward

@dataclass
class LatticeFB:
    """Batch results: logz (B,); occ (B, T, P) arc posteriors summed per (frame, pdf);
    exp_acc (B,) and grad (B, T, P) = ∂E[A]/∂(κ·ll) when accuracies were given."""

    logz: Tensor
    occ: Tensor
    exp_acc: Tensor | None = None
    grad: Tensor | None = None


@dataclass
class ArcFB:
    """Per-arc results of :func:`lattice_arc_forward_backward` for a batch: logz (B,); gamma (A,)
    arc posteriors (arcs of all lattices concatenated in batch order); arc_utt (A,) the batch
    index of each arc's lattice; exp_acc (B,) and acc_grad (A,) = γ(a)·(c(a) − E[A]) when
    accuracies were given."""

    logz: Tensor
    gamma: Tensor
    arc_utt: Tensor
    exp_acc: Tensor | None = None
    acc_grad: Tensor | None = None


def lattice_arc_forward_backward(lats: list[DenLattice], arc_scores: Tensor, arc_acc: list[Tensor] | None = None,
                                 final_acc: list[Tensor] | None = None, boost: list[Tensor] | None = None) -> ArcFB:
    """Forward-backward over a batch of ``DenLattice``s given each arc's acoustic score.

    arc_scores: (A,) κ·ll of every arc (the lattices' arcs concatenated in batch order; the graph
    weights are added here, then ``boost`` subtracted, as in :func:`lattice_forward_backward`).
    Callers that score only the (frame, pdf) pairs the lattices use (GMM EBW) call this directly;
    :func:`lattice_forward_backward` gathers the scores from a dense ``(B, T, P)`` matrix.
    Vectorised over the arcs of a frame; on the device of ``arc_scores``.
    """
    b = len(lats)
    dt = torch.float64
    dev = arc_scores.device
    offs = np.cumsum([0] + [la.num_nodes for la in lats])
    n = int(offs[-1])
    t_max = max([la.num_frames for la in lats] + [int(la.frame.max()) + 1 for la in lats if la.num_arcs])

    def cat(f) -> Tensor:
        return torch.cat([f(k, la) for k, la in enumerate(lats)]).to(dev)
    src = cat(lambda k, la: la.src.long() + int(offs[k]))
    dst = cat(lambda k, la: la.dst.long() + int(offs[k]))
    frame = cat(lambda k, la: la.frame.long())
    utt = cat(lambda k, la: torch.full((la.num_arcs,), k, dtype=torch.long))
    if arc_scores.shape != frame.shape:
        raise ValueError(f"{tuple(arc_scores.shape)} arc scores for {frame.numel()} arcs")
    s = arc_scores.to(dt) + cat(lambda k, la: la.weight.to(dt))
    if boost is not None:
        s = s - torch.cat(boost).to(dev, dt)
    acc = torch.cat(arc_acc).to(dev, dt) if arc_acc is not None else None
    fin = cat(lambda k, la: la.final.to(dt))
    facc = None
    if acc is not None:
        facc = torch.cat(final_acc).to(dev, dt) if final_acc is not None else torch.zeros(n, dtype=dt, device=dev)
    node_utt = torch.repeat_interleave(torch.arange(b), torch.tensor([la.num_nodes for la in lats])).to(dev)
    order = torch.argsort(frame, stable=True)
    bounds = torch.searchsorted(frame[order], torch.arange(t_max + 1, device=dev)).tolist()
    alpha = torch.full((n,), NEG_INF, dtype=dt, device=dev)
    alpha[torch.from_numpy(offs[:-1]).long().to(dev)] = 0.0
    aacc = torch.zeros(n, dtype=dt, device=dev) if acc is not None else None
    for t in range(t_max):
        a = order[bounds[t]:bounds[t + 1]]
        if a.numel() == 0:
            continue
        u, v, mean = group_logsumexp(alpha[src[a]] + s[a], dst[a],
                                     aacc[src[a]] + acc[a] if acc is not None else None)
        alpha[u] = v
        if acc is not None:
            aacc[u] = mean
    ends = alpha + fin
    mz = torch.full((b,), NEG_INF, dtype=dt, device=dev).scatter_reduce(0, node_utt, ends, "amax")
    mz = torch.where(torch.isfinite(mz), mz, torch.zeros_like(mz))
    logz = torch.log(torch.zeros(b, dtype=dt, device=dev).index_add_(0, node_utt, torch.exp(ends - mz[node_utt]))) + mz
    exp_acc = None
    if acc is not None:
        pf = torch.exp(ends - logz[node_utt]).nan_to_num(0.0)
        exp_acc = torch.zeros(b, dtype=dt, device=dev).index_add_(0, node_utt, pf * (aacc + facc))
    beta = fin.clone()
    bacc = facc.clone() if acc is not None else None
    gamma = torch.zeros_like(s)
    acc_grad = torch.zeros_like(s) if acc is not None else None
    for t in range(t_max - 1, -1, -1):
        a = order[bounds[t]:bounds[t + 1]]
        if a.numel() == 0:
            continue
        sa, da = src[a], dst[a]
        e = s[a] + beta[da]
        gam = torch.exp(alpha[sa] + e - logz[utt[a]]).nan_to_num(0.0)
        gamma[a] = gam
        if acc is not None:
            c = aacc[sa] + acc[a] + bacc[da]
            acc_grad[a] = gam * (c - exp_acc[utt[a]])
        u, v, mean = group_logsumexp(e, sa, acc[a] + bacc[da] if acc is not None else None)
        beta[u] = v
        if acc is not None:
            bacc[u] = mean
    return ArcFB(logz=logz, gamma=gamma, arc_utt=utt, exp_acc=exp_acc, acc_grad=acc_grad)


def lattice_forward_backward(lats: list[DenLattice], scores: Tensor, arc_acc: list[Tensor] | None = None,
                             final_acc: list[Tensor] | None = None, boost: list[Tensor] | None = None) -> LatticeFB:
    """Forward-backward over a batch of ``DenLattice``s with dense acoustic scores.

    scores: (B, T, P) acoustic scores κ·ll; arc_acc: per lattice (A_b,) arc accuracies (and
    final_acc (N_b,)) -> expected accuracy and its gradient; boost: per lattice (A_b,) amounts
    subtracted from the arc scores (boosted MMI). Float64 throughout, on the device of ``scores``
    (the lattices are moved there once per batch; the frame loop makes no host round trip).
    Arc posteriors are summed per (frame, pdf) in arc order, as they were added frame by frame.
    """
    b, t_max, p = scores.shape
    dt = torch.float64
    dev = scores.device

    def cat(f) -> Tensor:
        return torch.cat([f(k, la) for k, la in enumerate(lats)]).to(dev)
    frame = cat(lambda k, la: la.frame.long())
    utt = cat(lambda k, la: torch.full((la.num_arcs,), k, dtype=torch.long))
    flat = (utt * t_max + frame) * p + cat(lambda k, la: la.pdf.long())
    fb = lattice_arc_forward_backward(lats, scores.to(dt).reshape(-1)[flat], arc_acc, final_acc, boost)
    occ = torch.zeros(b * t_max * p, dtype=dt, device=dev).index_add_(0, flat, fb.gamma)
    grad = (torch.zeros_like(occ).index_add_(0, flat, fb.acc_grad) if fb.acc_grad is not None else None)
    shape = (b, t_max, p)
    return LatticeFB(logz=fb.logz, occ=occ.view(shape), exp_acc=fb.exp_acc,
                     grad=grad.view(shape) if grad is not None else None)


def lattice_frame_accuracy(la: DenLattice, ref_pdf: Tensor, kind: str, pdf_class: Tensor | None = None,
                           silence_classes: Tensor | None = None) -> Tensor:
    """Per-arc frame accuracy (A,) float64 against the reference pdf alignment ``ref_pdf (≥T,)``:
    ``smbr`` pdf match, ``mpfe`` phone-class match (``pdf_class (P,)``; also bMMI's boosting);
    reference frames of ``silence_classes`` count 0. On the device of ``ref_pdf``."""
    dev = ref_pdf.device
    t, pdf = la.frame.long().to(dev), la.pdf.long().to(dev)
    pdf_class = pdf_class.to(dev) if pdf_class is not None else None
    silence_classes = silence_classes.to(dev) if silence_classes is not None else None
    r = ref_pdf.long()[t]
    if kind == "smbr":
        a = pdf == r
    else:
        if pdf_class is None:
            raise ValueError(f"criterion {kind} needs the pdf -> phone class map")
        a = pdf_class[pdf] == pdf_class[r]
    if silence_classes is not None and silence_classes.numel() and pdf_class is not None:
        a = a & ~torch.isin(pdf_class[r], silence_classes)
    return a.double()


def lattice_objective(lats: list[DenLattice], loglikes: Tensor, lengths: Tensor, ref_pdf: Tensor,
                      criterion: str = "mpe", kappa: float = 0.1, boost: float = 0.1,
                      pdf_class: Tensor | None = None, silence_classes: Tensor | None = None):
    """MPE / MPFE / sMBR / MMI / bMMI objective and gradient for a batch over its lattices.

    loglikes (B, T, P) scaled log-likelihoods; ref_pdf (B, T) reference alignment (the numerator
    of MMI, the reference of the frame accuracies; MPE's segment accuracies are in the lattices);
    pdf_class (P,) phone class of every pdf (MPFE / bMMI matching); silence_classes: reference
    frames of these classes count 0 in the frame criteria. Returns ``asr.seqtrain.objective.SeqObjective``
    (no_num_path is all False: a lattice need not contain the reference). Computed on the device
    of ``loglikes``.
    """

    if criterion not in ("mpe", "mpfe", "smbr", "mmi", "bmmi"):
        raise ValueError(f"unknown criterion {criterion!r} (mpe|mpfe|smbr|mmi|bmmi)")
    b, t_max, p = loglikes.shape
    dev = loglikes.device
    sc = kappa * loglikes.detach().double()
    ref = ref_pdf.long().to(dev)
    lengths = lengths.to(dev)
    tmask = (torch.arange(t_max, device=dev).view(1, -1) < lengths.view(-1, 1))
    if criterion in ("mmi", "bmmi"):
        bst = [boost * lattice_frame_accuracy(la, ref[k], "mpfe", pdf_class, silence_classes)
               for k, la in enumerate(lats)] if criterion == "bmmi" else None
        den = lattice_forward_backward(lats, sc, boost=bst)
        num_occ = torch.zeros(b, t_max, p, dtype=torch.float64, device=dev).scatter_(2, ref.unsqueeze(-1), 1.0)
        num_occ = num_occ * tmask.unsqueeze(-1)
        num_logz = (sc.gather(2, ref.unsqueeze(-1)).squeeze(-1) * tmask).sum(1)
        obj = num_logz - den.logz
        grad = (num_occ - den.occ) * kappa
    else:
        if criterion == "mpe":
            accs = [la.seg_acc.to(dev) for la in lats]
            facc = [la.final_acc.to(dev) for la in lats]
        else:
            accs = [lattice_frame_accuracy(la, ref[k], criterion, pdf_class, silence_classes)
                    for k, la in enumerate(lats)]
            facc = None
        den = lattice_forward_backward(lats, sc, arc_acc=accs, final_acc=facc)
        num_logz = torch.full((b,), float("nan"), dtype=torch.float64, device=dev)
        obj = den.exp_acc
        grad = den.grad * kappa
    return SeqObjective.masked(obj, grad, ~torch.isfinite(den.logz), den.logz, num_logz)
