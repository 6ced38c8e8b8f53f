"""The sequence-training objectives (MMI, boosted MMI, sMBR, MPFE) and their gradients over a
denominator graph: a generic ε-free ``DenGraph`` (``asr.seqtrain.fb``, arc-level recursion) or a
``PdfHmmDen`` (``asr.seqtrain.pdfhmm``, state-level recursion). The criteria and their gradients are
described in ``asr.seqtrain.fb``; arc-level MPE over lattices is in ``asr.seqtrain.lattice``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from asr.seqtrain.fb import DenGraph, arc_accuracy, forward_backward
from asr.seqtrain.pdfhmm import PdfHmmDen, hmm_forward_backward, path_logprob


@dataclass
class SeqObjective:
    """Per-utterance objective (B,) (to maximise), its gradient w.r.t. the scaled log-likelihoods
    ll (B, T, P) (already multiplied by κ), and the utterances without a numerator path (bool (B,))."""

    objective: Tensor
    grad: Tensor
    no_num_path: Tensor
    den_logz: Tensor
    num_logz: Tensor

    @classmethod
    def masked(cls, obj: Tensor, grad: Tensor, bad: Tensor, den_logz: Tensor, num_logz: Tensor) -> "SeqObjective":
        """The result with objective and gradient 0 for the utterances flagged in ``bad`` (B,)
        (whatever the recursion left there, non-finite values included); the gradient as float32."""
        obj = torch.where(bad, torch.zeros_like(obj), obj)
        grad = torch.where(bad.view(-1, 1, 1), 0.0, grad).float()
        return cls(objective=obj, grad=grad, no_num_path=bad, den_logz=den_logz, num_logz=num_logz)


def sequence_objective(graph: DenGraph | PdfHmmDen, loglikes: Tensor, lengths: Tensor, ref_pdf: Tensor,
                       criterion: str = "mpfe", kappa: float = 0.1, boost: float = 0.1,
                       pdf2phone: Tensor | None = None, silence_phones: Tensor | None = None) -> SeqObjective:
    """MMI / bMMI / sMBR / MPE objective and its gradient for a batch of utterances.

    loglikes: (B, T, P) scaled log-likelihoods; ref_pdf: (B, T) reference pdf alignment (the
    numerator); returns ``SeqObjective``. Utterances whose reference has no path through
    ``graph`` get objective 0 and gradient 0 and are flagged in ``no_num_path``.
    ``graph``: a generic ε-free ``DenGraph`` (arc-level recursion) or a ``PdfHmmDen``
    (state-level recursion with sparse matmuls, ``asr.seqtrain.pdfhmm``) — same results on the
    same hypothesis space (tested). Computed on the device of ``loglikes``.
    """
    if criterion == "mpe":
        raise ValueError("arc-level MPE (approximate phone accuracy) needs denominator lattices "
                         "(asr.seqtrain.lattice); on a lattice-free graph use its frame form 'mpfe'")
    if criterion not in ("mmi", "bmmi", "smbr", "mpfe"):
        raise ValueError(f"unknown criterion {criterion!r} (mmi|bmmi|smbr|mpfe)")
    b, t_max, _ = loglikes.shape
    dev = loglikes.device
    sc = kappa * loglikes.detach()
    lengths, ref_pdf = lengths.to(dev), ref_pdf.to(dev)
    pdf2phone = pdf2phone.to(dev) if pdf2phone is not None else None
    silence_phones = silence_phones.to(dev) if silence_phones is not None else None
    if isinstance(graph, PdfHmmDen):
        return _hmm_objective(graph, sc, lengths, ref_pdf, criterion, kappa, boost, pdf2phone, silence_phones)
    tmask = torch.arange(t_max, device=dev).view(1, -1) < lengths.view(-1, 1)
    num_mask = graph.pdf.to(dev).view(1, 1, -1) == ref_pdf.unsqueeze(-1)    # (B, T, A)
    num_mask = num_mask | ~tmask.unsqueeze(-1)
    num = forward_backward(graph, sc, lengths, arc_mask=num_mask)
    bad = ~torch.isfinite(num.logz)
    if criterion in ("mmi", "bmmi"):
        acc = arc_accuracy(graph, ref_pdf, lengths, "bmmi", pdf2phone, silence_phones) if criterion == "bmmi" else None
        den = forward_backward(graph, sc, lengths, acc=acc, boost=boost if acc is not None else 0.0)
        obj = num.logz - den.logz
        grad = (num.occ - den.occ) * kappa
    else:
        acc = arc_accuracy(graph, ref_pdf, lengths, criterion, pdf2phone, silence_phones)
        den = forward_backward(graph, sc, lengths, acc=acc)
        obj = den.exp_acc
        grad = den.grad * kappa
    return SeqObjective.masked(obj, grad, bad, den.logz, num.logz)


def state_accuracy(num_pdfs: int, ref_pdf: Tensor, lengths: Tensor, criterion: str, pdf2phone: Tensor | None = None,
                   silence_phones: Tensor | None = None) -> Tensor:
    """Per-frame accuracy of every pdf (B, T, P): the state-based form of ``arc_accuracy``."""
    dev = ref_pdf.device
    z = torch.zeros(num_pdfs, dtype=torch.long, device=dev)
    g = DenGraph(num_states=1, src=z, dst=z, pdf=torch.arange(num_pdfs, device=dev), weight=torch.zeros(num_pdfs),
                 start=torch.zeros(1), final=torch.zeros(1))
    return arc_accuracy(g, ref_pdf, lengths, criterion, pdf2phone, silence_phones)


def _hmm_objective(den: PdfHmmDen, sc: Tensor, lengths: Tensor, ref_pdf: Tensor, criterion: str, kappa: float,
                   boost: float, pdf2phone: Tensor | None, silence_phones: Tensor | None) -> SeqObjective:
    b, t_max, p = sc.shape
    dev = sc.device
    num_logz = path_logprob(den, sc, lengths, ref_pdf)
    bad = ~torch.isfinite(num_logz)
    tmask = (torch.arange(t_max, device=dev).view(1, -1) < lengths.view(-1, 1)).unsqueeze(-1)
    num_occ = torch.zeros(b, t_max, p, dtype=torch.float64, device=dev).scatter_(2, ref_pdf.long().unsqueeze(-1), 1.0)
    num_occ = num_occ * tmask
    if criterion in ("mmi", "bmmi"):
        s = sc
        if criterion == "bmmi":
            s = sc - boost * state_accuracy(p, ref_pdf, lengths, "bmmi", pdf2phone, silence_phones).to(sc.dtype)
        den_r = hmm_forward_backward(den, s, lengths)
        obj = num_logz - den_r.logz
        grad = (num_occ - den_r.occ) * kappa
    else:
        acc = state_accuracy(p, ref_pdf, lengths, criterion, pdf2phone, silence_phones)
        den_r = hmm_forward_backward(den, sc, lengths, acc=acc)
        obj = den_r.exp_acc
        grad = den_r.grad * kappa
    return SeqObjective.masked(obj, grad, bad, den_r.logz, num_logz)
