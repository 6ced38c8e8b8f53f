"""Feature-space transforms estimated while training the GMM stages: LDA and MLLT (tri2,
Kaldi ``train_lda_mllt.sh``), per-speaker fMLLR and the SAT alignment model (tri3, Kaldi
``train_sat.sh``). Tensors in, tensors out; the statistics and solvers are in ``asr.transforms``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from asr.gmm.model import DiagGmmSet, component_posteriors
from asr.gmm.train import TrainState


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
    st.accumulate_pairs(x.cpu().double(), rows, ids, pw)
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
                           post_gmm: DiagGmmSet | None = None, nj: int = 1) -> dict[str, Tensor]:
    """Per-speaker fMLLR ``W (D, D+1)`` (Gales 1998) for ``gmm`` from untransformed ``feats`` and the
    Gaussian posteriors of the aligned pdfs, each frame weighted by ``frame_weights`` (e.g. 0 on
    silence: Kaldi ``weight-silence-post``). A speaker with at most ``min_count`` weighted frames or
    singular statistics keeps ``prev`` / the identity and is appended to ``skipped``.

    The Gaussian posteriors come from ``gmm`` on the features transformed by ``prev`` (SAT
    training, Kaldi ``gmm-est-fmllr`` on the adapted features; the estimate starts at ``prev``) or,
    with ``post_gmm`` (the alignment model, one Gaussian per Gaussian of ``gmm``), from ``post_gmm``
    on the untransformed features and the estimate starts at the identity (Kaldi ``align_fmllr.sh``:
    ``gmm-post-to-gpost final.alimdl`` + ``gmm-est-fmllr-gpost final.mdl``).

    ``nj`` > 1 estimates the speakers in that many jobs (``asr.jobs.map_jobs``, whole speakers
    per job, balanced by frames). A job takes the posteriors of all its frames pdf by pdf, so
    the grouping moves a transform only at float rounding (about 1e-8; same ``nj``, same
    result)."""
    from asr.jobs import map_jobs, split_by_speaker

    if post_gmm is not None and post_gmm.num_gauss != gmm.num_gauss:
        raise ValueError(f"post_gmm has {post_gmm.num_gauss} Gaussians, the model {gmm.num_gauss}: "
                         "the alignment model must share the model's Gaussians")

    spk2utts: dict[str, list[str]] = {}
    for u in sorted(pdf_alis):
        spk2utts.setdefault(utt2spk[u], []).append(u)
    items = []
    for spk, utts in spk2utts.items():
        fw = None if frame_weights is None else torch.cat([frame_weights[u] for u in utts])
        items.append(_SpeakerItem(spk, torch.cat([feats[u] for u in utts]), torch.cat([pdf_alis[u] for u in utts]),
                                  fw, None if prev is None else prev.get(spk)))
    # whole speakers per job, balanced by frames; CUDA work stays in this process (no fork with an
    # initialised CUDA context)
    by_spk = {it.spk: it for it in items}
    groups = split_by_speaker({s: s for s in by_spk}, nj if gmm.device.type == "cpu" else 1,
                              weights={s: float(it.x.shape[0]) for s, it in by_spk.items()})
    jobs = [(gmm, post_gmm, [by_spk[s] for s in g], iters, min_count) for g in groups]
    done: dict[str, tuple[Tensor, bool]] = {}
    for res in map_jobs(_speaker_fmllr_job, jobs, nj=len(jobs)):
        done.update(res)
    out = {}
    for spk in spk2utts:                 # the speakers' order, whatever job estimated them
        w, kept = done[spk]
        out[spk] = w
        if kept and skipped is not None:
            skipped.append(spk)
    return out


@dataclass
class _SpeakerItem:
    """One speaker's input to :func:`_speaker_fmllr_job`: frames ``x (T, D)``, aligned pdfs ``(T,)``,
    frame weights ``(T,)`` or None, and the transform it has (None: the identity)."""

    spk: str
    x: Tensor
    pdfs: Tensor
    weights: Tensor | None
    prev: Tensor | None


def _fmllr_frame_terms(post_gmm: DiagGmmSet, x: Tensor, pdfs: Tensor, means: Tensor, inv_vars: Tensor
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """Per frame of ``x (T, D)`` aligned to ``pdfs (T,)``: the posteriors ``gamma_tj`` of the aligned
    pdf's Gaussians under ``post_gmm`` turned into ``q[t] = sum_j gamma_tj / var_j``,
    ``r[t] = sum_j gamma_tj mu_j / var_j`` (``means``, ``inv_vars (G, D)`` float64: the model being
    adapted, the same Gaussians) and ``occ[t] = sum_j gamma_tj``; all float64, ``(T, D)``,
    ``(T, D)``, ``(T,)``. One small product per pdf; no ``(T, G)`` posterior matrix."""
    t, d = x.shape
    q = torch.zeros(t, d, dtype=torch.float64)
    r = torch.zeros(t, d, dtype=torch.float64)
    occ = torch.zeros(t, dtype=torch.float64)
    mv = means * inv_vars
    for p, rows, _, sel in post_gmm.components_by_pdf(x, pdfs):
        m = sel.shape[1]
        post = component_posteriors(sel)[1].double().cpu()                          # (n, m)
        g = post_gmm.pdf_gauss[p, :m].cpu()
        rows = rows.cpu()
        q[rows] = post @ inv_vars[g]
        r[rows] = post @ mv[g]
        occ[rows] = post.sum(1)
    return q, r, occ


def _speaker_fmllr_job(args: tuple) -> dict[str, tuple[Tensor, bool]]:
    """fMLLR of each speaker of one job: ``spk -> (W (D, D+1) float32, kept)``, ``kept`` when the
    speaker kept its previous transform (or the identity). The posteriors of all the job's frames
    (each speaker's through its own starting transform) are taken pdf by pdf in one pass
    (:func:`_fmllr_frame_terms`) rather than pdf by pdf for each speaker."""
    from asr.transforms import FmllrStats, apply_fmllr, estimate_fmllr, identity_fmllr
    from asr.transforms._post import check_gmm_params

    gmm, post_gmm, items, iters, min_count = args
    means, vars_ = gmm.means.double().cpu(), gmm.vars.double().cpu()
    check_gmm_params(means, vars_)
    kept = [identity_fmllr(gmm.dim) if it.prev is None else it.prev.double() for it in items]
    w0s = kept if post_gmm is None else [identity_fmllr(gmm.dim)] * len(items)
    xs = [apply_fmllr(it.x, w0) if post_gmm is None else it.x for it, w0 in zip(items, w0s)]
    src = gmm if post_gmm is None else post_gmm
    q, r, occ = _fmllr_frame_terms(src, torch.cat(xs), torch.cat([it.pdfs for it in items]), means, 1.0 / vars_)
    out = {}
    start = 0
    for k, it in enumerate(items):
        sl = slice(start, start + it.x.shape[0])
        start = sl.stop
        w = torch.ones(it.x.shape[0], dtype=torch.float64) if it.weights is None else it.weights.double()
        st = FmllrStats(gmm.dim)
        st.accumulate_terms(it.x, q[sl] * w[:, None], r[sl] * w[:, None], float((occ[sl] * w).sum()))
        try:
            est = estimate_fmllr(st, iters=iters, w0=w0s[k], min_count=min_count)
        except ValueError:
            est = w0s[k]
        unchanged = st.beta <= min_count or est is w0s[k]
        out[it.spk] = ((kept[k] if unchanged else est).float(), unchanged)
    return out


def estimate_alignment_model(sat_gmm: DiagGmmSet, adapted: dict[str, Tensor], si_feats: dict[str, Tensor],
                             pdf_alis: dict[str, Tensor], min_var: float) -> DiagGmmSet:
    """Kaldi's SAT alignment model (``gmm-acc-stats-twofeats`` + ``gmm-est``, ``final.alimdl``):
    Gaussian posteriors of the aligned pdfs computed by the SAT model on the adapted features,
    statistics gathered on the speaker-independent features. Same Gaussians (one to one) as the
    SAT model, so posteriors from a first pass with it serve to estimate fMLLR for the SAT model."""
    from asr.gmm.model import GmmAccs

    accs = GmmAccs.zeros(sat_gmm.num_gauss, sat_gmm.dim, sat_gmm.device)
    utts = sorted(pdf_alis)
    for lo in range(0, len(utts), 256):        # bounds the per-pdf gathers' memory
        part = utts[lo:lo + 256]
        sat_gmm.accumulate_twofeats(accs, torch.cat([adapted[u] for u in part]), torch.cat([si_feats[u] for u in part]),
                                    torch.cat([pdf_alis[u] for u in part]))
    return sat_gmm.update(accs, min_var=min_var, min_count=0.0, remove_low_count=False)
