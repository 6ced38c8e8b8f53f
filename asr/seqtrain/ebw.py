"""Discriminative training of the GMM baseline: (boosted) MMI by Extended Baum-Welch.

Per iteration the current GMMs rescore fixed denominator lattices (``asr seq lattices`` of the
GMM system); the lattice forward-backward at acoustic scale κ (with boosting b: path scores get
−b × frame phone accuracy, Povey et al. 2008) gives denominator occupancies γ_den(t, pdf), the
reference alignment gives γ_num; within a pdf the occupancy is shared among its Gaussians by their
posteriors. The numerator statistics are I-smoothed towards the current model with τ points, and
the Gaussians are re-estimated by Extended Baum-Welch (Povey 2003, thesis §4.4–4.6; Kaldi
``gmm-est-gaussians-ebw``):

    μ' = (x_num − x_den + D μ) / (γ_num − γ_den + D)
    σ²' = (x²_num − x²_den + D (σ² + μ²)) / (γ_num − γ_den + D) − μ'²

with D = max(E · γ_den, 2 · D_min), D_min the smallest constant keeping every variance of the
Gaussian positive. Mixture weights and transitions are kept.
"""
from __future__ import annotations

import torch
from torch import Tensor

from asr.gmm.model import DiagGmmSet, GmmAccs, logsumexp_last, exp_flushed_
from asr.seqtrain.lattice import DenLattice, lattice_arc_forward_backward


def ebw_update(gmm: DiagGmmSet, num: GmmAccs, den: GmmAccs, E: float = 2.0, tau: float = 400.0,
               min_var: float = 1e-3) -> tuple[DiagGmmSet, dict]:
    """EBW re-estimation of means and variances (module docstring); returns the new set and
    a summary (mean D, Gaussians updated, fraction of D set by the positivity bound)."""
    mu = gmm.means.double().to(num.occ.device)
    var = gmm.vars.double().to(num.occ.device)
    g_n = num.occ + tau
    x_n = num.x + tau * mu
    x2_n = num.x2 + tau * (var + mu * mu)
    g = (g_n - den.occ).unsqueeze(1)                                # (G, 1)
    x = x_n - den.x
    x2 = x2_n - den.x2
    # var'(D) > 0  <=>  a D^2 + b D + c > 0 with a = var, b = x2 + g (var + mu^2) - 2 x mu, c = g x2 - x^2
    a = var
    b = x2 + g * (var + mu * mu) - 2 * x * mu
    c = g * x2 - x * x
    disc = (b * b - 4 * a * c).clamp_min(0.0)
    root = ((-b + disc.sqrt()) / (2 * a)).amax(dim=1).clamp_min(0.0)
    d_min = torch.maximum(root, (-g.squeeze(1)).clamp_min(0.0))
    d = torch.maximum(E * den.occ, 2 * d_min)
    upd = (num.occ + den.occ) > 0
    dd = d.unsqueeze(1)
    new_mu = (x + dd * mu) / (g + dd)
    new_var = ((x2 + dd * (var + mu * mu)) / (g + dd) - new_mu * new_mu).clamp_min(min_var)
    means = torch.where(upd.unsqueeze(1), new_mu, mu).float()
    vars_ = torch.where(upd.unsqueeze(1), new_var, var).float()
    out = DiagGmmSet(means.to(gmm.device), vars_.to(gmm.device), gmm.log_weights, gmm.gauss2pdf, gmm.num_pdfs)
    info = {"gaussians_updated": int(upd.sum()), "mean_D": float(d[upd].mean()) if upd.any() else 0.0,
            "D_from_positivity": float(((2 * d_min) > E * den.occ)[upd].float().mean()) if upd.any() else 0.0}
    return out, info


def accumulate_den(gmm: DiagGmmSet, accs: GmmAccs, x: Tensor, occ: Tensor, min_post: float = 1e-4) -> None:
    """Denominator statistics of one utterance: ``x (T, D)``, pdf occupancies ``occ (T, P)``
    (entries below ``min_post`` dropped); each (frame, pdf) pair's occupancy is shared among the
    pdf's Gaussians by their posteriors."""
    t, j = torch.nonzero(occ > min_post, as_tuple=True)
    if t.numel() == 0:
        return
    xr = x[t]
    gauss, post, _ = gmm.gauss_posteriors(xr, j)
    accs.accumulate(xr.to(gmm.device), gauss, post * occ[t, j].to(post.dtype).to(post.device).unsqueeze(1))


def accumulate_batch(gmm: DiagGmmSet, num: GmmAccs, den: GmmAccs, feats: list[Tensor], ref: list[Tensor],
                     lats: list[DenLattice], kappa: float, boost: list[Tensor] | None = None,
                     min_post: float = 1e-4) -> tuple[Tensor, Tensor]:
    """Numerator and denominator statistics of a batch of utterances, scoring only what is used.

    ``feats`` (T_b, D), ``ref`` (T_b,) reference pdfs, ``lats`` their denominator lattices; ``boost``
    per lattice (A_b,) bMMI boosting. Only the (frame, pdf) pairs on a lattice arc or on the
    reference are evaluated — a few per frame, where a dense ``(T, P)`` likelihood matrix costs
    every Gaussian of every pdf — each pair's component log-likelihoods once, grouped by pdf
    (:meth:`DiagGmmSet.components_by_pdf`); they give the arc scores κ·ll of the lattice
    forward-backward and, afterwards, the Gaussian posteriors that share a pair's numerator
    (1 on the reference) and denominator occupancy (below ``min_post`` dropped) among its
    components. Utterances whose lattice total is not finite add nothing.

    Returns ``(logz (B,), num_score (B,))``: the denominator log total and κ·Σ_t ll(t, ref_t),
    float64; the MMI objective of utterance b is ``num_score[b] − logz[b]``.
    """
    dev = gmm.device
    P = gmm.num_pdfs
    lens = [int(x.shape[0]) for x in feats]
    offs = torch.tensor([0] + lens[:-1], dtype=torch.long).cumsum(0).to(dev)
    arc_key = torch.cat([(offs[k] + la.frame.long().to(dev)) * P + la.pdf.long().to(dev) for k, la in enumerate(lats)])
    ref_key = torch.cat([(offs[k] + torch.arange(n, device=dev)) * P + r.long().to(dev)
                         for k, (n, r) in enumerate(zip(lens, ref))])
    pairs, inv = torch.unique(torch.cat([arc_key, ref_key]), return_inverse=True)
    arc_pair, ref_pair = inv[:arc_key.numel()], inv[arc_key.numel():]
    x_all = torch.cat([x.to(dev, torch.float32) for x in feats])
    groups = list(gmm.components_by_pdf(x_all[pairs // P], pairs % P))
    ll = torch.empty(pairs.numel(), device=dev)
    for _, rows, _, sel in groups:
        ll[rows] = logsumexp_last(sel.clone())
    fb = lattice_arc_forward_backward(lats, kappa * ll[arc_pair].double(), boost=boost)
    ok = torch.isfinite(fb.logz)
    ref_utt = torch.repeat_interleave(torch.arange(len(lats), device=dev), torch.tensor(lens, device=dev))
    w_den = torch.zeros(pairs.numel(), dtype=torch.float64, device=dev).index_add_(
        0, arc_pair, torch.where(ok[fb.arc_utt], fb.gamma, 0.0))
    w_den = torch.where(w_den > min_post, w_den, 0.0)
    w_num = torch.zeros(pairs.numel(), dtype=torch.float64, device=dev).index_add_(
        0, ref_pair, ok[ref_utt].double())
    D = gmm.dim
    for p, rows, a, sel in groups:
        w = torch.stack([w_num[rows], w_den[rows]], 1)                          # (n, 2)
        if not bool(w.any()):
            continue
        post = exp_flushed_(sel - ll[rows, None]).double()                       # (n, m)
        ad = a.double()
        stats = post.T @ torch.cat([ad * w[:, :1], ad * w[:, 1:]], 1)          # (m, 2 (2D+1))
        g = gmm.pdf_gauss[p, :post.shape[1]]
        for acc, st in ((num, stats[:, :2 * D + 1]), (den, stats[:, 2 * D + 1:])):
            acc.x2.index_add_(0, g, st[:, :D])
            acc.x.index_add_(0, g, st[:, D:2 * D])
            acc.occ.index_add_(0, g, st[:, 2 * D])
    num_score = torch.zeros(len(lats), dtype=torch.float64, device=dev).index_add_(
        0, ref_utt, kappa * ll[ref_pair].double())
    return fb.logz, num_score
