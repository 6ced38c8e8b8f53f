"""Feature-space transforms estimated while training the GMM stages: LDA and MLLT (tri2,
Kaldi ``train_lda_mllt.sh``), per-speaker fMLLR and the SAT alignment model (tri3, Kaldi
``train_sat.sh``). Tensors in, tensors out; the statistics and solvers are in ``asr.transforms``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from asr.gmm.model import DiagGmmSet
from asr.gmm.train import TrainState, gaussian_posteriors_sparse


def estimate_lda_matrix(spliced: dict[str, Tensor], labels: dict[str, Tensor], weights: dict[str, Tensor],
                        out_dim: int) -> Tensor:
    """LDA ``(out_dim, D)`` from spliced frames with class = pdf id (silence weighted 0)."""
    from asr.transforms import LdaStats, estimate_lda

    utts = sorted(labels)
    st = LdaStats(next(iter(spliced.values())).shape[1])
    st.accumulate(torch.cat([spliced[u] for u in utts]).double(), torch.cat([labels[u] for u in utts]),
                  torch.cat([weights[u] for u in utts]))
    return estimate_lda(st, out_dim).float()


def mllt_step(state: TrainState, feats: dict[str, Tensor], chains: dict[str, Tensor], alis: dict[str, Tensor],
              weights: dict[str, Tensor], sweeps: int = 200) -> Tensor:
    """One MLLT estimation as Kaldi's ``train_lda_mllt.sh`` does it (``gmm-acc-mllt``,
    ``est-mllt``, ``gmm-transform-means``): statistics ``G`` relative to the current model's means
    and diagonal variances, from the soft Gaussian posteriors of the aligned pdfs with frames
    weighted by ``weights`` (0 on silence: ``weight-silence-post 0.0``); ``sweeps`` row sweeps of
    Gales' update (1999) with ``G`` fixed (``MlltAccs::Update``: 200). The model's means become
    ``A mu`` in place; its variances are left to the EM update that follows, as in Kaldi.
    Returns ``A (D, D)``, applied to features as ``y = A x``.

    (Re-estimating each Gaussian's variances from its own full covariance instead, Gales' full
    semi-tied scheme, is at the mercy of Gaussians with a few dozen frames in 40 dimensions: on
    a 0.4 h corpus at tri2's 12th iteration it lost 12 nats per frame and 5 points of dev PER.)"""
    from asr.transforms import MlltModelStats, estimate_mllt

    gmm = state.gmm
    utts = sorted(alis)
    x = torch.cat([feats[u] for u in utts]).to(gmm.device)
    pdfs = torch.cat([chains[u][alis[u]] for u in utts])
    w = torch.cat([weights[u] for u in utts]).to(gmm.device)
    rows, ids, post = gmm.gauss_posterior_pairs(x, pdfs)
    pw = post * w[rows]
    keep = pw > 1e-4
    rows, ids, pw = rows[keep].cpu(), ids[keep].cpu(), pw[keep].double().cpu()
    st = MlltModelStats(gmm.means.cpu(), gmm.vars.cpu())
    x = x.cpu()
    step = 65536
    for i in range(0, ids.numel(), step):
        st.accumulate(x[rows[i:i + step]].double(), ids[i:i + step], pw[i:i + step])
    A = estimate_mllt(st, iters=sweeps)
    means = gmm.means.double().cpu() @ A.T
    state.gmm = DiagGmmSet(means.float(), gmm.vars.cpu(), gmm.log_weights.cpu(), gmm.gauss2pdf.cpu(),
                           gmm.num_pdfs).to(gmm.device)
    return A.float()


def estimate_speaker_fmllr(gmm: DiagGmmSet, feats: dict[str, Tensor], pdf_alis: dict[str, Tensor],
                           utt2spk: dict[str, str], iters: int = 10,
                           prev: dict[str, Tensor] | None = None, min_count: float = 50.0,
                           frame_weights: dict[str, Tensor] | None = None,
                           skipped: list[str] | None = None,
                           post_gmm: DiagGmmSet | None = None) -> dict[str, Tensor]:
    """Per-speaker fMLLR ``W (D, D+1)`` (Gales 1998) for ``gmm`` from untransformed ``feats`` and the
    Gaussian posteriors of the aligned pdfs, each frame weighted by ``frame_weights`` (e.g. 0 on
    silence: Kaldi ``weight-silence-post``). A speaker with at most ``min_count`` weighted frames or
    singular statistics keeps ``prev`` / the identity and is appended to ``skipped``.

    The Gaussian posteriors come from ``gmm`` on the features transformed by ``prev`` (SAT
    training, Kaldi ``gmm-est-fmllr`` on the adapted features; the estimate starts at ``prev``) or,
    with ``post_gmm`` (the alignment model, one Gaussian per Gaussian of ``gmm``), from ``post_gmm``
    on the untransformed features and the estimate starts at the identity (Kaldi ``align_fmllr.sh``:
    ``gmm-post-to-gpost final.alimdl`` + ``gmm-est-fmllr-gpost final.mdl``)."""
    from asr.transforms import FmllrStats, apply_fmllr, estimate_fmllr, identity_fmllr

    if post_gmm is not None and post_gmm.num_gauss != gmm.num_gauss:
        raise ValueError(f"post_gmm has {post_gmm.num_gauss} Gaussians, the model {gmm.num_gauss}: "
                         "the alignment model must share the model's Gaussians")

    spk2utts: dict[str, list[str]] = {}
    for u in sorted(pdf_alis):
        spk2utts.setdefault(utt2spk[u], []).append(u)
    means, vars_ = gmm.means.double().cpu(), gmm.vars.double().cpu()
    out = {}
    for spk, utts in spk2utts.items():
        kept = identity_fmllr(gmm.dim) if prev is None or spk not in prev else prev[spk].double()
        x = torch.cat([feats[u] for u in utts])
        pdfs = torch.cat([pdf_alis[u] for u in utts])
        if post_gmm is None:
            w0 = kept
            post = gaussian_posteriors_sparse(gmm, apply_fmllr(x, w0).to(gmm.device), pdfs)
        else:
            w0 = identity_fmllr(gmm.dim)
            post = gaussian_posteriors_sparse(post_gmm, x.to(post_gmm.device), pdfs)
        if frame_weights is not None:
            fw = torch.cat([frame_weights[u] for u in utts]).double()
            post = torch.sparse_coo_tensor(post.indices(), post.values() * fw[post.indices()[0]], post.shape,
                                           check_invariants=False)
        st = FmllrStats(gmm.dim)
        st.accumulate(x.double(), post, means, vars_)
        try:
            w = estimate_fmllr(st, iters=iters, w0=w0, min_count=min_count)
        except ValueError:
            w = w0
        if st.beta <= min_count or w is w0:
            w = kept
            if skipped is not None:
                skipped.append(spk)
        out[spk] = w.float()
    return out


def estimate_alignment_model(sat_gmm: DiagGmmSet, adapted: dict[str, Tensor], si_feats: dict[str, Tensor],
                             pdf_alis: dict[str, Tensor], min_var: float) -> DiagGmmSet:
    """Kaldi's SAT alignment model (``gmm-acc-stats-twofeats`` + ``gmm-est``, ``final.alimdl``):
    Gaussian posteriors of the aligned pdfs computed by the SAT model on the adapted features,
    statistics gathered on the speaker-independent features. Same Gaussians (one to one) as the
    SAT model, so posteriors from a first pass with it serve to estimate fMLLR for the SAT model."""
    from asr.gmm.model import GmmAccs

    accs = GmmAccs.zeros(sat_gmm.num_gauss, sat_gmm.dim, sat_gmm.device)
    for u in sorted(pdf_alis):
        g, p, _ = sat_gmm.gauss_posteriors(adapted[u].to(sat_gmm.device), pdf_alis[u].to(sat_gmm.device))
        accs.accumulate(si_feats[u].to(sat_gmm.device), g, p)
    return sat_gmm.update(accs, min_var=min_var, min_count=0.0, remove_low_count=False)
