"""Test-time fMLLR for SAT systems (Kaldi ``steps/decode_fmllr.sh``).

Per speaker, without transcripts:

1. first pass: decode the speaker-independent features with the SAT system's *alignment model*
   (same tree and Gaussians, estimated on unadapted features; :func:`asr.gmm.adapt.estimate_alignment_model`);
2. pdf posteriors of that lattice at acoustic scale ``acwt`` (1/12), silence pdfs weighted
   ``silence_weight`` (0.01), spread over the Gaussians of each pdf by the alignment model, give
   fMLLR statistics for the SAT model's Gaussians on the unadapted features -> ``W1``;
3. second pass on the ``W1`` features with the SAT model, at the final decode's beams; its lattice
   posteriors (SAT Gaussians, ``W1`` features) give a second transform ``W2``; the speaker's
   transform is ``W2 o W1``;
4. the second pass's lattices are rescored with the SAT model on the ``W2 o W1`` features (Kaldi
   ``gmm-rescore-lattice``; :func:`asr.decode.lattice.rescore_lattice`) and scored: the final
   hypotheses, without a third search (``FmllrDecodeConfig.rescore``; off: the caller decodes the
   adapted features again with the ordinary decoder).

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
    first_lattice_beam: float = 4.0
    """Lattice beam of the first pass (Kaldi's ``first_lattice_beam``): its lattice only feeds the
    first transform's posteriors."""
    fmllr_iters: int = 10
    """Row-update sweeps per estimation."""
    min_count: float = 50.0
    """A speaker with at most this (weighted) occupancy keeps the transform it has (identity at first)."""
    lmwt_grid: tuple[float, ...] = field(default_factory=lambda: tuple(float(x) for x in range(1, 21)))
    rescore: bool = True
    """Final hypotheses from the second pass's lattices rescored on the final transforms (Kaldi); False:
    a third search over the adapted features (what ``asr`` did before; same models, ~1/3 more search)."""


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
    none = torch.zeros(0, dtype=torch.long, device=gmm.device)
    rows, gauss, vals = [none], [none], [none.double()]
    for sel, comp in gmm.component_loglikes_row_buckets(x, frames, pdfs):           # (R_b, m_b)
        p = torch.softmax(comp, 1)
        g = gmm.pdf_gauss[pdfs_d[sel], :comp.shape[1]]
        keep = g >= 0
        rows.append(frames_d[sel].unsqueeze(1).expand_as(g)[keep])
        gauss.append(g[keep])
        vals.append((p.double() * w_d[sel].unsqueeze(1))[keep])
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


@dataclass
class AdaptJobResult:
    """What :func:`adapt_job` returns for its speakers. ``hyps[k]`` / ``final_hyps[k]``: utt -> words
    of the first pass / of the rescored second pass at LM weight ``grid[k]`` / ``final_grid[k]``
    (``final_hyps`` empty unless ``FmllrDecodeConfig.rescore``); ``events`` / ``final_events``: how
    each pass's lattices were obtained (``asr.decode.decoder`` statuses -> utterances)."""

    transforms: dict[str, Tensor]
    identity: list[str]
    hyps: list[dict[str, list[str]]]
    events: dict[str, list[str]]
    final_hyps: list[dict[str, list[str]]]
    final_events: dict[str, list[str]]


def adapt_job(args: tuple) -> AdaptJobResult:
    """Passes 1-4 for the utterances of one job (whole speakers). ``args = (model_dir, graph_dir,
    data_dir, utts, cfg: FmllrDecodeConfig, grid, final_cfg: DecodeConfig, final_grid)``: ``grid``
    the first pass's LM weights, ``final_cfg`` the beams (and MBR choice) of the final decode,
    ``final_grid`` its LM weights. Speakers left with the identity transform (too little data) get
    an ordinary search of their unadapted features with the SAT model."""
    from dataclasses import replace

    from asr.decode.decoder import LATTICE_OK, NOT_DECODED, DecodeConfig, Graph, decode_lattice
    from asr.decode.lattice import LatticeRescorer, iter_best_paths, lattice_to_arrays
    from asr.decode.mbr import lattice_words
    from asr.decode.posteriors import lattice_pdf_posteriors
    from asr.gmm.system import load_system, read_transcripts
    from asr.transforms import apply_fmllr, identity_fmllr

    model_dir, graph_dir, data_dir, utts, cfg, grid, final_cfg, final_grid = args
    sat = load_system(model_dir)
    if sat.ali_gmm is None:
        raise ValueError(f"{model_dir}: SAT system without an alignment model; retrain it with `asr gmm tri3`")
    graph = Graph(graph_dir)
    utt2spk = read_transcripts(data_dir)[1]
    si = sat.features(data_dir, list(utts))
    sil_pdf = torch.isin(sat.ctx.pdf2phone, torch.tensor(sat.silence, dtype=torch.long))
    first = DecodeConfig(acwt=cfg.acwt, beam=cfg.first_beam, lattice_beam=cfg.first_lattice_beam)
    # Kaldi's main pass: the final decode's beams at the adaptation's acoustic scale
    second = replace(final_cfg, acwt=cfg.acwt) if cfg.rescore else DecodeConfig(acwt=cfg.acwt)
    spk2utts: dict[str, list[str]] = {}
    for u in sorted(si):
        spk2utts.setdefault(utt2spk[u], []).append(u)
    hyps: list[dict[str, list[str]]] = [{} for _ in grid]
    final_hyps: list[dict[str, list[str]]] = [{} for _ in final_grid] if cfg.rescore else []
    events: dict[str, list[str]] = {}
    final_events: dict[str, list[str]] = {}
    out: dict[str, Tensor] = {}
    identity: list[str] = []

    def search(gmm: DiagGmmSet, feats: dict[str, Tensor], conf: DecodeConfig, ev: dict[str, list[str]] | None):
        lats = {}
        for u, x in feats.items():
            lat, status = decode_lattice(graph, u, gmm.loglikes(x).cpu(), conf)
            if ev is not None and status != LATTICE_OK:
                ev.setdefault(status, []).append(u)
            if lat is not None:
                lats[u] = lat
        return lats

    def posteriors(lats: dict) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
        return {u: lattice_pdf_posteriors(lattice_to_arrays(lat), cfg.acwt)[:3] for u, lat in lats.items()}

    def words(lats: dict, lmwts: tuple[float, ...], conf: DecodeConfig, into: list[dict[str, list[str]]]) -> None:
        # a speaker's best paths for every LM weight of the grid at once (dev: 20 of them in one
        # dynamic programme, the same words as a shortest path per weight), or its MBR hypotheses
        items = sorted(lats.items())
        scored = ((u, lattice_words(lat, lmwts, conf)) for u, lat in items) if conf.mbr else iter_best_paths(items, lmwts)
        for u, paths in scored:
            for k, ids in enumerate(paths):
                into[k][u] = graph.word_strings(ids)

    for spk, us in spk2utts.items():
        feats = {u: si[u] for u in us}
        lats1 = search(sat.ali_gmm, feats, first, events)
        words(lats1, grid, DecodeConfig(acwt=cfg.acwt), hyps)
        p1 = posteriors(lats1)
        ok = [u for u in us if u in p1]
        w1 = speaker_fmllr_from_posteriors(sat.gmm, sat.ali_gmm, [feats[u] for u in ok], [p1[u] for u in ok],
                                           sil_pdf, cfg.silence_weight, cfg.fmllr_iters, cfg.min_count)
        if w1 is None:
            identity.append(spk)
            out[spk] = identity_fmllr(sat.gmm.dim).float()
            if cfg.rescore:
                words(search(sat.gmm, feats, final_cfg, final_events), final_grid, final_cfg, final_hyps)
            continue
        adapted = {u: apply_fmllr(feats[u], w1) for u in us}
        lats2 = search(sat.gmm, adapted, second, final_events if cfg.rescore else None)
        p2 = posteriors(lats2)
        ok = [u for u in us if u in p2]
        w2 = speaker_fmllr_from_posteriors(sat.gmm, sat.gmm, [adapted[u] for u in ok], [p2[u] for u in ok],
                                           sil_pdf, cfg.silence_weight, cfg.fmllr_iters, cfg.min_count)
        out[spk] = w1 if w2 is None else compose_fmllr(w2, w1)
        if cfg.rescore:
            rescored = {}
            for u, lat in lats2.items():       # only the (frame, pdf) pairs on the lattice's arcs
                r = LatticeRescorer(lat)
                rescored[u] = r.with_costs(-sat.gmm.loglikes_at(apply_fmllr(feats[u], out[spk]), r.frames, r.pdfs))
            words(rescored, final_grid, final_cfg, final_hyps)
    events.setdefault(NOT_DECODED, []).extend(u for u in utts if u not in si)
    if cfg.rescore:
        done = set(final_hyps[0]) if final_hyps else set()
        final_events.setdefault(NOT_DECODED, []).extend(u for u in utts if u not in done)
    return AdaptJobResult(out, identity, hyps, events, final_hyps, final_events)
