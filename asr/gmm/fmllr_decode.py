"""Test-time fMLLR for SAT systems (Kaldi ``steps/decode_fmllr.sh``).

Per speaker, without transcripts:

1. first pass: decode the speaker-independent features with the SAT system's *alignment model*
   (same tree and Gaussians, estimated on unadapted features; :func:`asr.gmm.adapt.estimate_alignment_model`);
2. pdf posteriors of that lattice at acoustic scale ``acwt`` (1/12), silence pdfs weighted
   ``silence_weight`` (0.01), spread over the Gaussians of each pdf by the alignment model, give
   fMLLR statistics for the SAT model's Gaussians on the unadapted features -> ``W1``;
3. main pass on the ``W1`` features with the SAT model (the decode's own beams); its lattice
   posteriors (SAT Gaussians, ``W1`` features) give a second transform ``W2``; the speaker's
   transform is ``W2 o W1``;
4. the main pass's lattices are rescored with the log-likelihoods of the ``W2 o W1`` features
   (Kaldi ``gmm-rescore-lattice``) and scored: no third search.
Tensors in, tensors out, except :func:`adapt_job`, the picklable per-job runner.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from asr.gmm.model import DiagGmmSet


MIN_POST = 1e-5
"""(frame, pdf) posteriors below this are dropped before the Gaussian-level split (no effect on
the statistics beyond 1e-5 of a frame; saves the Gaussian evaluation of nearly-dead pdfs)."""


@dataclass
class FmllrDecodeConfig:
    """Kaldi ``decode_fmllr.sh`` defaults."""

    acwt: float = 1.0 / 12
    """Acoustic scale of the lattice posteriors (and of the adaptation passes' search)."""
    silence_weight: float = 0.01
    """Weight of frames whose posterior is on a silence pdf."""
    first_beam: float = 10.0
    """Search beam of the speaker-independent first pass."""
    fmllr_iters: int = 10
    """Row-update sweeps per estimation."""
    min_count: float = 50.0
    """A speaker with at most this (weighted) occupancy keeps the transform it has (identity at first)."""
    lmwt_grid: tuple[float, ...] = field(default_factory=lambda: tuple(float(x) for x in range(1, 21)))


def compose_fmllr(second: Tensor, first: Tensor) -> Tensor:
    """The affine transform ``x -> A2 (A1 x + b1) + b2`` of ``second = [A2 b2]`` after ``first = [A1 b1]``
    (Kaldi ``compose-transforms --b-is-affine=true``); both ``(D, D+1)``."""
    d = first.shape[0]
    f, s = first.double(), second.double()
    return torch.cat([s[:, :d] @ f[:, :d], (s[:, :d] @ f[:, d:] + s[:, d:])], 1).to(first.dtype)


def soft_gauss_posteriors(gmm: DiagGmmSet, x: Tensor, frames: Tensor, pdfs: Tensor, weights: Tensor) -> Tensor:
    """Sparse ``(T, G)`` Gaussian posteriors from soft pdf posteriors (Kaldi ``gmm-post-to-gpost``):
    row ``r`` gives frame ``frames[r]`` weight ``weights[r]`` on pdf ``pdfs[r]``, shared among that
    pdf's Gaussians by their posteriors under ``gmm`` for ``x[frames[r]]``."""
    # per bucket of pdfs with similar Gaussian counts: padding every row to the largest pdf
    # (silence, ~500 Gaussians) made this 10x the work of the rows' own Gaussians
    frames_d, pdfs_d, w_d = frames.to(gmm.device), pdfs.to(gmm.device), weights.to(gmm.device).double()
    rows, gauss, vals = [], [], []
    for sel, comp in gmm.component_loglikes_row_buckets(x, frames, pdfs):           # (R_b, m_b)
        p = torch.softmax(comp, 1)
        g = gmm.pdf_gauss[pdfs_d[sel], :comp.shape[1]]
        keep = g >= 0
        rows.append(frames_d[sel].unsqueeze(1).expand_as(g)[keep])
        gauss.append(g[keep])
        vals.append((p.double() * w_d[sel].unsqueeze(1))[keep])
    if not rows:
        return torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, dtype=torch.float64),
                                       (x.shape[0], gmm.num_gauss), check_invariants=False).coalesce()
    return torch.sparse_coo_tensor(torch.stack([torch.cat(rows).cpu(), torch.cat(gauss).cpu()]),
                                   torch.cat(vals).cpu(), (x.shape[0], gmm.num_gauss),
                                   check_invariants=False).coalesce()


def speaker_fmllr_from_posteriors(stat_gmm: DiagGmmSet, post_gmm: DiagGmmSet, feats: list[Tensor],
                                  posts: list[tuple[Tensor, Tensor, Tensor]], silence_pdf: Tensor,
                                  silence_weight: float, iters: int, min_count: float) -> Tensor | None:
    """One speaker's fMLLR ``W (D, D+1)`` for ``stat_gmm``'s Gaussians on ``feats`` (its utterances),
    from soft pdf posteriors ``posts`` (per utterance ``(frames, pdfs, post)``) split over Gaussians
    by ``post_gmm`` (the same Gaussians, e.g. the alignment model); None when the speaker has at
    most ``min_count`` weighted frames or singular statistics."""
    from asr.transforms import FmllrStats, estimate_fmllr

    st = FmllrStats(stat_gmm.dim)
    means, vars_ = stat_gmm.means.double().cpu(), stat_gmm.vars.double().cpu()
    for x, (fr, pdf, post) in zip(feats, posts):
        keep = post >= MIN_POST
        fr, pdf, post = fr[keep], pdf[keep], post[keep]
        w = post * torch.where(silence_pdf[pdf], silence_weight, 1.0).double()
        st.accumulate(x.double(), soft_gauss_posteriors(post_gmm, x, fr, pdf, w), means, vars_)
    if st.beta <= min_count:
        return None
    try:
        return estimate_fmllr(st, iters=iters).float()
    except ValueError:
        return None


def adapt_job(args: tuple) -> tuple[dict[str, Tensor], list[str], list[dict[str, list[str]]], dict[str, list[str]],
                                    list[dict[str, list[str]]], dict[str, list[str]]]:
    """All passes of ``decode_fmllr.sh`` for the utterances of one job (whole speakers).

    ``args = (model_dir, graph_dir, data_dir, utts, cfg: FmllrDecodeConfig, grid, final: DecodeConfig,
    final_grid)``: ``grid`` the LM weights the first pass is scored at, ``final`` the decode settings
    of the main pass (its beams, retry beam, MBR; its acoustic scale is ``cfg.acwt``, Kaldi's) and
    ``final_grid`` the LM weights it is scored at. The main pass searches the ``W1`` features once;
    its lattices give ``W2`` and are then rescored with ``W2 o W1`` (Kaldi ``gmm-rescore-lattice``),
    not searched again.

    Returns ``(transforms speaker -> W, speakers left with the identity, first-pass hypotheses per
    LM weight of ``grid`` ({utt: words}), first-pass events, final hypotheses per LM weight of
    ``final_grid``, final events)``; events: utterance lists by ``decode_lattice`` status
    (``retry_beam``, ``partial_lattice``, ``not_decoded``)."""
    from dataclasses import replace

    from asr.decode.decoder import LATTICE_OK, NOT_DECODED, DecodeConfig, Graph, decode_lattice
    from asr.decode.lattice import iter_best_paths, lattice_to_arrays, rescore_lattice
    from asr.decode.mbr import lattice_words
    from asr.decode.posteriors import lattice_pdf_posteriors
    from asr.gmm.system import load_system, read_transcripts
    from asr.transforms import apply_fmllr, identity_fmllr

    model_dir, graph_dir, data_dir, utts, cfg, grid, final, final_grid = args
    sat = load_system(model_dir)
    if sat.ali_gmm is None:
        raise ValueError(f"{model_dir}: SAT system without an alignment model; retrain it with `asr gmm tri3`")
    graph = Graph(graph_dir)
    utt2spk = read_transcripts(data_dir)[1]
    si = sat.features(data_dir, list(utts))
    sil_pdf = torch.isin(sat.ctx.pdf2phone, torch.tensor(sat.silence, dtype=torch.long))
    first = DecodeConfig(acwt=cfg.acwt, beam=cfg.first_beam)
    main = replace(final, acwt=cfg.acwt)
    spk2utts: dict[str, list[str]] = {}
    for u in sorted(si):
        spk2utts.setdefault(utt2spk[u], []).append(u)
    hyps: list[dict[str, list[str]]] = [{} for _ in grid]
    final_hyps: list[dict[str, list[str]]] = [{} for _ in final_grid]
    events: dict[str, list[str]] = {}
    final_events: dict[str, list[str]] = {}
    out: dict[str, Tensor] = {}
    identity: list[str] = []

    def decode(gmm: DiagGmmSet, feats: dict[str, Tensor], conf: DecodeConfig, ev: dict[str, list[str]]) -> dict:
        lats = {}
        for u, x in feats.items():
            lat, status = decode_lattice(graph, u, gmm.loglikes(x).cpu(), conf)
            if status != LATTICE_OK:
                ev.setdefault(status, []).append(u)
            if lat is not None:
                lats[u] = lat
        return lats

    def posteriors(lats: dict) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
        return {u: lattice_pdf_posteriors(lattice_to_arrays(lat), cfg.acwt)[:3] for u, lat in lats.items()}

    def score(lats: dict, weights, into: list[dict[str, list[str]]], conf: DecodeConfig) -> None:
        # best paths: every LM weight of the grid in one dynamic programme per speaker
        scored = ((u, lattice_words(lat, weights, conf)) for u, lat in lats.items()) if conf.mbr \
            else iter_best_paths(lats.items(), weights)
        for u, paths in scored:
            for k, ids in enumerate(paths):
                into[k][u] = graph.word_strings(ids)

    def estimate(post_gmm: DiagGmmSet, feats: dict[str, Tensor], posts: dict) -> Tensor | None:
        ok = [u for u in feats if u in posts]
        return speaker_fmllr_from_posteriors(sat.gmm, post_gmm, [feats[u] for u in ok], [posts[u] for u in ok],
                                             sil_pdf, cfg.silence_weight, cfg.fmllr_iters, cfg.min_count)

    for spk, us in spk2utts.items():
        feats = {u: si[u] for u in us}
        lats1 = decode(sat.ali_gmm, feats, first, events)
        score(lats1, grid, hyps, first)
        w1 = estimate(sat.ali_gmm, feats, posteriors(lats1))
        if w1 is None:                       # too little data: the identity, and no second estimate
            identity.append(spk)
            out[spk] = identity_fmllr(sat.gmm.dim).float()
            score(decode(sat.gmm, feats, main, final_events), final_grid, final_hyps, main)
            continue
        adapted = {u: apply_fmllr(feats[u], w1) for u in us}
        lats2 = decode(sat.gmm, adapted, main, final_events)
        w2 = estimate(sat.gmm, adapted, posteriors(lats2))
        out[spk] = w1 if w2 is None else compose_fmllr(w2, w1)
        if w2 is not None:
            lats2 = {u: rescore_lattice(lat, sat.gmm.loglikes(apply_fmllr(feats[u], out[spk])).cpu())
                     for u, lat in lats2.items()}
        score(lats2, final_grid, final_hyps, main)
    for ev in (events, final_events):
        ev.setdefault(NOT_DECODED, []).extend(u for u in utts if u not in si)
    return out, identity, hyps, events, final_hyps, final_events
