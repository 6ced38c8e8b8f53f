"""Forward-backward over a hypothesis graph for sequence-discriminative training.

The hypothesis space is an epsilon-free acceptor whose every arc consumes one frame (a
lattice-free denominator graph, e.g. the epsilon-removed phone-bigram HCLG, or a state-level
lattice — both are ``DenGraph``s). A path ``a_1..a_T`` scores

    start[src a_1] + Σ_t ( w[a_t] + κ · ll[t, pdf a_t] ) + final[dst a_T]

with ``ll`` the network's scaled log-likelihoods (log p(s|x) − log p(s)) and κ the acoustic scale.
The recursion is vectorised over arcs and batched over utterances (B, S) in float64, with a
per-frame max shift so sums are taken in probability space (``index_add_``), as LF-MMI does.

Criteria (all maximised):
- ``mmi``:  F = log p_num − log p_den (Bahl et al. 1986); numerator = the paths of the same graph
  constrained to the reference pdf alignment; ∂F/∂(κ·ll[t,s]) = γ_num(t,s) − γ_den(t,s).
- ``bmmi``: boosted MMI (Povey et al. 2008): den path scores get −b·acc(path).
- ``smbr``: expected state (pdf) accuracy Σ_t [pdf_t == ref_pdf_t] (Kingsbury 2009).
- ``mpfe``: expected phone accuracy at frame level, Σ_t [phone_t == ref_phone_t] (minimum phone
  frame error, Zheng & Stolcke 2005; Kaldi ``--criterion=mpfe``). Povey & Woodland's arc-level
  ``mpe`` needs phone segments, i.e. lattices: ``asr.seqtrain.lattice``. For the accuracy criteria (Povey 2003, eq. 6.12 ff.)
  ∂E[A]/∂(κ·ll[t,s]) = Σ_{a: pdf a = s} γ_t(a) (c_t(a) − E[A]), c_t(a) = expected accuracy of
  paths through arc a at frame t (alpha-accuracy + arc accuracy + beta-accuracy).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

NEG_INF = float("-inf")


@dataclass
class DenGraph:
    """Epsilon-free acceptor, one frame per arc. Weights are natural-log scores (higher = better).

    src, dst, pdf: LongTensor (A,); weight: (A,); start, final: (S,) log weights (−inf = not
    initial / not final); num_states = S. pdf ids index the network outputs.
    """

    num_states: int
    src: Tensor
    dst: Tensor
    pdf: Tensor
    weight: Tensor
    start: Tensor
    final: Tensor

    @property
    def num_arcs(self) -> int:
        return int(self.src.numel())

    def validate(self, num_pdfs: int) -> None:
        if self.num_arcs and (int(self.pdf.min()) < 0 or int(self.pdf.max()) >= num_pdfs):
            raise ValueError(f"denominator graph has pdf ids outside [0, {num_pdfs})")
        if torch.isinf(self.start).all() or torch.isinf(self.final).all():
            raise ValueError("denominator graph has no start or no final state")


@dataclass
class FBResult:
    """Per-utterance results. logz: (B,) log total score; occ: (B, T, P) pdf occupancies γ(t, s);
    exp_acc: (B,) expected accuracy (accuracy criteria, else None); grad: (B, T, P) derivative
    of the objective w.r.t. κ·ll (multiply by κ for ∂/∂ll)."""

    logz: Tensor
    occ: Tensor
    exp_acc: Tensor | None = None
    grad: Tensor | None = None


def _lse_scatter(e: Tensor, dst: Tensor, num_states: int, extra: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """log Σ_{a: dst a = s} exp(e[:, a]) for every s, (B, A) -> (B, S); with ``extra`` (B, A) also
    the weighted mean Σ p_a extra_a / Σ p_a per destination (0 where unreachable)."""
    m = e.max(dim=1, keepdim=True).values
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(e - m)
    s = torch.zeros(e.shape[0], num_states, dtype=e.dtype, device=e.device).index_add_(1, dst, p)
    out = torch.log(s) + m
    mean = None
    if extra is not None:
        num = torch.zeros_like(s).index_add_(1, dst, p * extra)
        mean = torch.where(s > 0, num / s.clamp_min(1e-300), torch.zeros_like(s))
    return out, mean


def forward_backward(graph: DenGraph, scores: Tensor, lengths: Tensor, acc: Tensor | None = None,
                     arc_mask: Tensor | None = None, boost: float = 0.0) -> FBResult:
    """Forward-backward over ``graph`` for a batch.

    scores: (B, T, P) acoustic scores κ·ll (padding frames ignored); lengths: (B,) frames;
    acc: optional (B, T, A) per-frame arc accuracy -> expected accuracy and its gradient;
    arc_mask: optional (B, T, A) bool, arcs allowed at each frame (numerator constraint);
    boost: b of boosted MMI, arc score −= b·acc (requires ``acc``).
    Returns ``FBResult`` (occ = γ summed per pdf; logz = −inf when no path survives).
    """
    b, t_max, n_pdf = scores.shape
    dt = torch.float64
    dev = scores.device
    src, dst, pdf = graph.src.to(dev), graph.dst.to(dev), graph.pdf.to(dev)
    w = graph.weight.to(dev, dt)
    n_s = graph.num_states
    lengths = lengths.to(dev)
    sc = scores.to(dt)
    acc = acc.to(dev, dt) if acc is not None else None
    if boost and acc is None:
        raise ValueError("boosted MMI needs per-arc accuracies")

    arc_mask = arc_mask.to(dev) if arc_mask is not None else None

    def arc_score(t: int) -> Tensor:  # (B, A)
        e = w + sc[:, t, pdf]
        if boost:
            e = e - boost * acc[:, t]
        if arc_mask is not None:
            e = e.masked_fill(~arc_mask[:, t], NEG_INF)
        return e

    alpha = torch.empty(t_max + 1, b, n_s, dtype=dt, device=dev)
    alpha[0] = graph.start.to(dev, dt)
    aacc = torch.zeros(t_max + 1, b, n_s, dtype=dt, device=dev) if acc is not None else None
    for t in range(t_max):
        e = arc_score(t) + alpha[t][:, src]
        extra = (aacc[t][:, src] + acc[:, t]) if acc is not None else None
        alpha[t + 1], mean = _lse_scatter(e, dst, n_s, extra)
        if acc is not None:
            aacc[t + 1] = mean
    final = graph.final.to(dev, dt)
    a_end = alpha[lengths, torch.arange(b, device=dev)]                 # (B, S)
    logz = torch.logsumexp(a_end + final, dim=1)
    exp_acc = None
    if acc is not None:
        pf = torch.exp(a_end + final - logz.unsqueeze(1)).nan_to_num(0.0)
        exp_acc = (pf * aacc[lengths, torch.arange(b, device=dev)]).sum(1)
    # backward
    occ = torch.zeros(b, t_max, n_pdf, dtype=dt, device=dev)
    grad = torch.zeros_like(occ) if acc is not None else None
    beta = final.expand(b, n_s).clone()
    bacc = torch.zeros(b, n_s, dtype=dt, device=dev)
    neg = torch.full_like(beta, NEG_INF)
    for t in range(t_max - 1, -1, -1):
        live = (t < lengths).view(b, 1)
        at_end = (t + 1 == lengths).view(b, 1)
        beta_next = torch.where(at_end, final.expand(b, n_s), torch.where(live, beta, neg))
        bacc_next = torch.where(at_end, torch.zeros_like(bacc), bacc)
        e = arc_score(t)                                             # (B, A)
        lg = alpha[t][:, src] + e + beta_next[:, dst] - logz.unsqueeze(1)
        gam = torch.exp(lg).nan_to_num(0.0) * live                   # (B, A)
        occ[:, t].index_add_(1, pdf, gam)
        if acc is not None:
            c = aacc[t][:, src] + acc[:, t] + bacc_next[:, dst]
            grad[:, t].index_add_(1, pdf, gam * (c - exp_acc.unsqueeze(1)))
        # beta_t(s) = log Σ_{a: src a = s} exp(e_a + beta_next[dst a])
        eb = e + beta_next[:, dst]
        extra = (acc[:, t] + bacc_next[:, dst]) if acc is not None else None
        beta, mean = _lse_scatter(eb, src, n_s, extra)
        if acc is not None:
            bacc = mean
    return FBResult(logz=logz, occ=occ, exp_acc=exp_acc, grad=grad)


def arc_accuracy(graph: DenGraph, ref_pdf: Tensor, lengths: Tensor, criterion: str,
                 pdf2phone: Tensor | None = None, silence_phones: Tensor | None = None) -> Tensor:
    """Per-frame arc accuracies (B, T, A) in {0, 1}: ``smbr`` pdf match, ``mpfe`` phone match
    (``pdf2phone`` (P,) maps pdf -> phone id). ``silence_phones``: reference frames of these
    phones count 0 for every hypothesis (Kaldi's ``--silence-phones`` option for MPE/sMBR).
    On the device of ``ref_pdf``."""
    ref = ref_pdf.long()
    dev = ref.device
    g_pdf = graph.pdf.to(dev)
    pdf2phone = pdf2phone.to(dev) if pdf2phone is not None else None
    if criterion == "smbr":
        a = (g_pdf.view(1, 1, -1) == ref.unsqueeze(-1))
    elif criterion in ("mpfe", "bmmi"):
        if pdf2phone is None:
            raise ValueError(f"criterion {criterion} needs the pdf -> phone map")
        hyp_ph = pdf2phone[g_pdf].view(1, 1, -1)
        a = hyp_ph == pdf2phone[ref].unsqueeze(-1)
    else:
        raise ValueError(f"no accuracy for criterion {criterion!r}")
    a = a.to(torch.float64)
    if silence_phones is not None and pdf2phone is not None and len(silence_phones):
        sil = torch.isin(pdf2phone[ref], silence_phones.to(dev))    # (B, T)
        a = a.masked_fill(sil.unsqueeze(-1), 0.0)
    t = torch.arange(ref.shape[1], device=dev).view(1, -1, 1)
    return a.masked_fill(t >= lengths.to(dev).view(-1, 1, 1), 0.0)
