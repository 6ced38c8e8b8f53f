"""Lattice-free denominator as an HMM over pdfs (the default; fast on CPU).

The phone-bigram HCLG of a triphone system has ~5·10^5 arcs (≈10^6 after ε-removal): an exact
forward-backward over it costs seconds per utterance on 2 cores. As in LF-MMI (Povey et al.
2016, whose denominator is also a graph over pdf ids), the denominator here is a *pdf bigram*
HMM estimated from the training alignments: states = pdfs, transition (i→j) probabilities =
smoothed-free ML bigram counts of consecutive frames (self-loops included, so durations and
phone-to-phone statistics are kept), initial / final = utterance-start / end pdf frequencies.
Every training reference has a path by construction (all its bigrams were counted).
Emissions sit on states, so one frame of the recursion is a sparse matmul ``(B, P) @ (P, P)`` in
scaled probability space, and the frame-level accuracies of sMBR/MPE are state-based.

Expected accuracy recursions (Povey 2003, §6.3, state-level form): with scaled α̂, β̂,
αacc_t(j) = Σ_i α̂_{t−1}(i)A_ij αacc_{t−1}(i) / Σ_i α̂_{t−1}(i)A_ij + acc_t(j),
βacc_t(i) = Σ_j A_ij e_{t+1}(j)β̂_{t+1}(j)(acc_{t+1}(j)+βacc_{t+1}(j)) / Σ_j A_ij e_{t+1}(j)β̂_{t+1}(j),
∂E[A]/∂s_t(j) = γ_t(j)(αacc_t(j) + βacc_t(j) − E[A]).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from asr.seqtrain.fb import DenGraph, FBResult


@dataclass
class PdfHmmDen:
    """log_init (P,), log_trans (P, P) (−inf = no transition), log_final (P,); natural logs."""

    log_init: Tensor
    log_trans: Tensor
    log_final: Tensor

    @property
    def num_pdfs(self) -> int:
        return int(self.log_init.numel())

    @property
    def num_arcs(self) -> int:
        return int(torch.isfinite(self.log_trans).sum())

    @property
    def num_states(self) -> int:
        return self.num_pdfs

    def validate(self, num_pdfs: int) -> None:
        if self.num_pdfs != num_pdfs:
            raise ValueError(f"denominator HMM has {self.num_pdfs} pdfs, the model {num_pdfs}")

    @classmethod
    def from_alignments(cls, alis: Iterable[Tensor], num_pdfs: int) -> "PdfHmmDen":
        """ML pdf-bigram HMM from frame alignments (each (T,) pdf ids)."""
        big = torch.zeros(num_pdfs * num_pdfs, dtype=torch.float64)
        ini = torch.zeros(num_pdfs, dtype=torch.float64)
        fin = torch.zeros(num_pdfs, dtype=torch.float64)
        for a in alis:
            a = a.long()
            if a.numel() == 0:
                continue
            ini[a[0]] += 1
            fin[a[-1]] += 1
            big.index_add_(0, a[:-1] * num_pdfs + a[1:], torch.ones(a.numel() - 1, dtype=torch.float64))
        big = big.view(num_pdfs, num_pdfs)
        rows = big.sum(1, keepdim=True)
        # a pdf's final weight is its share of utterance ends among its frames (Kaldi-like HMM stop prob)
        occ = rows.squeeze(1) + fin
        log_trans = (big / occ.clamp_min(1).unsqueeze(1)).log()
        log_final = (fin / occ.clamp_min(1)).log()
        log_init = (ini / ini.sum().clamp_min(1)).log()
        return cls(log_init.float(), log_trans.float(), log_final.float())

    def to_den_graph(self) -> DenGraph:
        """The same hypothesis space as a generic ``DenGraph`` (state 0 = start, j+1 = in pdf j)."""
        p = self.num_pdfs
        ii, jj = torch.nonzero(torch.isfinite(self.log_trans), as_tuple=True)
        s0 = torch.nonzero(torch.isfinite(self.log_init)).flatten()
        src = torch.cat([torch.zeros_like(s0), ii + 1])
        dst = torch.cat([s0 + 1, jj + 1])
        pdf = torch.cat([s0, jj])
        w = torch.cat([self.log_init[s0], self.log_trans[ii, jj]]).double()
        start = torch.full((p + 1,), float("-inf"), dtype=torch.float64)
        start[0] = 0.0
        final = torch.cat([torch.tensor([float("-inf")]), self.log_final]).double()
        return DenGraph(num_states=p + 1, src=src, dst=dst, pdf=pdf, weight=w, start=start, final=final)


def hmm_forward_backward(den: PdfHmmDen, scores: Tensor, lengths: Tensor, acc: Tensor | None = None) -> FBResult:
    """Scaled forward-backward of the pdf HMM. scores: (B, T, P) per-frame state log-scores
    (κ·ll, boosting already applied); lengths (B,); acc: optional (B, T, P) state accuracies.
    Returns ``FBResult`` (occ (B, T, P), logz (B,), exp_acc / grad when ``acc`` is given)."""
    b, t_max, p = scores.shape
    dt = torch.float64
    dev = scores.device
    s = scores.to(dt)
    A = den.log_trans.to(dev, dt).exp()
    # sparse transition matrix (a pdf bigram has few successors per pdf): x @ A and x @ A^T
    a_t, a_n = A.T.to_sparse_coo().coalesce(), A.to_sparse_coo().coalesce()

    def times_a(x: Tensor) -> Tensor:
        return torch.sparse.mm(a_t, x.T).T

    def times_at(x: Tensor) -> Tensor:
        return torch.sparse.mm(a_n, x.T).T
    init = den.log_init.to(dev, dt).exp()
    fin = den.log_final.to(dev, dt).exp()
    lengths = lengths.to(dev)
    m = s.max(dim=2, keepdim=True).values                          # (B, T, 1)
    E = torch.exp(s - m)
    alpha = torch.zeros(b, t_max, p, dtype=dt, device=dev)
    logc = torch.zeros(b, t_max, dtype=dt, device=dev)
    aacc = torch.zeros_like(alpha) if acc is not None else None
    accd = acc.to(dev, dt) if acc is not None else None
    prev = None
    for t in range(t_max):
        if t == 0:
            pred = init.expand(b, p)
            a = pred * E[:, 0]
        else:
            pred = times_a(prev)
            a = pred * E[:, t]
        c = a.sum(1, keepdim=True)
        live = (t < lengths).view(b, 1)
        a = torch.where(live, a / c.clamp_min(1e-300), prev if prev is not None else a)
        logc[:, t] = torch.where(live.squeeze(1), torch.log(c.squeeze(1)) + m[:, t, 0], torch.zeros_like(c.squeeze(1)))
        alpha[:, t] = a
        if acc is not None:
            if t == 0:
                aa = accd[:, 0]
            else:
                num = times_a(prev * aacc[:, t - 1])
                aa = torch.where(pred > 0, num / pred.clamp_min(1e-300), torch.zeros_like(num)) + accd[:, t]
            aacc[:, t] = torch.where(live, aa, aacc[:, t - 1] if t > 0 else aa)
        prev = a
    ar = torch.arange(b, device=dev)
    last = (lengths - 1).clamp_min(0)
    a_end = alpha[ar, last]                                          # (B, P)
    zf = (a_end * fin).sum(1)
    logz = logc.sum(1) + torch.log(zf)
    occ = torch.zeros_like(alpha)
    exp_acc = None
    grad = None
    if acc is not None:
        exp_acc = (a_end * fin * aacc[ar, last]).sum(1) / zf
        grad = torch.zeros_like(alpha)
    beta = torch.zeros(b, p, dtype=dt, device=dev)
    bacc = torch.zeros(b, p, dtype=dt, device=dev)
    for t in range(t_max - 1, -1, -1):
        at_end = (t == lengths - 1).view(b, 1)
        inside = (t < lengths - 1).view(b, 1)
        if t < t_max - 1:
            eb = E[:, t + 1] * beta
            pb = times_at(eb)
            c_next = torch.exp(logc[:, t + 1] - m[:, t + 1, 0]).view(b, 1)
            rec = pb / c_next
            if acc is not None:
                racc = torch.where(pb > 0, times_at(eb * (accd[:, t + 1] + bacc)) / pb.clamp_min(1e-300),
                                   torch.zeros_like(pb))
        else:
            rec = torch.zeros(b, p, dtype=dt, device=dev)
            racc = torch.zeros(b, p, dtype=dt, device=dev)
        beta = torch.where(at_end, fin.expand(b, p), torch.where(inside, rec, torch.zeros_like(rec)))
        gam = alpha[:, t] * beta / zf.view(b, 1)
        occ[:, t] = gam
        if acc is not None:
            bacc = torch.where(at_end, torch.zeros_like(racc), torch.where(inside, racc, torch.zeros_like(racc)))
            grad[:, t] = gam * (aacc[:, t] + bacc - exp_acc.view(b, 1))
    return FBResult(logz=logz, occ=occ, exp_acc=exp_acc, grad=grad)


def path_logprob(den: PdfHmmDen, scores: Tensor, lengths: Tensor, ref: Tensor) -> Tensor:
    """Log score of the single reference path (numerator): (B,) (−inf when a transition is missing)."""
    b, t_max, _ = scores.shape
    dev = scores.device
    ref, lengths = ref.long().to(dev), lengths.to(dev)
    t = torch.arange(t_max, device=dev).view(1, -1)
    mask = (t < lengths.view(-1, 1))
    em = scores.double().gather(2, ref.unsqueeze(-1)).squeeze(-1)
    tr = den.log_trans.to(dev, torch.float64)[ref[:, :-1], ref[:, 1:]]
    tmask = mask[:, 1:]
    out = em.masked_fill(~mask, 0).sum(1) + tr.masked_fill(~tmask, 0).sum(1)
    out = out + den.log_init.to(dev, torch.float64)[ref[:, 0]]
    last = ref.gather(1, (lengths - 1).clamp_min(0).view(-1, 1)).squeeze(1)
    return out + den.log_final.to(dev, torch.float64)[last]
