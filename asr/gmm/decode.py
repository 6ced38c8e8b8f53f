"""Alignment and decoding with a trained GMM system (Kaldi ``align_si.sh`` / ``align_fmllr.sh``,
``decode.sh`` / ``decode_fmllr.sh``).

SAT systems decode in two passes (Kaldi ``decode_fmllr.sh``, ``asr.gmm.fmllr_decode``): the SAT
system's speaker-independent alignment model decodes first; its lattice posteriors estimate one fMLLR
transform per test speaker; the second pass decodes the adapted features, its lattice posteriors give
a second transform composed with the first, and its lattices, rescored on the composed transforms,
give the hypotheses. Alignment of transcribed data (``align_fmllr.sh``) estimates a new speaker's
transform from an alignment with the alignment model instead (:func:`estimate_test_fmllr`).
"""
from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from asr.gmm.adapt import estimate_speaker_fmllr
from asr.gmm.system import GmmSystem, load_system, one_thread, phone_ids, read_transcripts, write_alignments
from asr.gmm.train import chain_state_loglikes, utterance_chains
from asr.jobs.atomic import copy_file_atomic, write_text_atomic
from asr.jobs.safeio import save_data


def gmm_loglike_job(utts: list[str], model_dir: str, data_dir: str,
                    fmllr_path: str | None = None) -> Iterator[tuple[str, Tensor]]:
    """Picklable ``loglike_job`` for :func:`asr.decode.decode_and_score`: yields
    ``(utt, (T, num_pdfs) log-likelihoods)`` of ``utts`` of ``data_dir`` under ``model_dir``'s
    system, with the per-speaker fMLLR transforms in ``fmllr_path`` when given."""
    sys_ = load_system(model_dir)
    from asr.jobs.safeio import load_data

    fm = load_data(fmllr_path, what="fMLLR transforms") if fmllr_path else None
    feats = sys_.features(data_dir, utts, fmllr=fm)
    for u in utts:
        yield u, sys_.loglikes(feats[u]).cpu()


def ensure_graph(model_dir: str | Path, lang_dir: str | Path) -> Path:
    """``model_dir/graph`` with ``HCLG.fst`` built by :func:`asr.lang.graph.make_hclg` unless it
    exists for the same lang dir. Returns the graph directory."""
    from asr.lang.graph import make_hclg

    model_dir, lang_dir = Path(model_dir), Path(lang_dir).resolve()
    gdir = model_dir / "graph"
    stamp = gdir / "lang_source"
    if (gdir / "HCLG.fst").is_file() and stamp.is_file() and stamp.read_text().strip() == str(lang_dir):
        return gdir
    sys_ = load_system(model_dir)
    make_hclg(lang_dir, sys_.ctx, sys_.topo, sys_.trans, gdir)
    write_text_atomic(stamp, str(lang_dir) + "\n")
    return gdir


def _lang_mode(lang_dir: str | Path) -> str:
    from asr.lang.langdir import load_lang_info

    return load_lang_info(lang_dir).get("mode", "phone")


def align_phone_strings(sys_: GmmSystem, feats: dict[str, Tensor], phones: dict[str, Tensor]
                        ) -> tuple[dict[str, Tensor], list[str]]:
    """Chain-state Viterbi alignments of ``phones`` (utt -> ids) with ``sys_``; (alis, failed)."""
    from asr.hmm.align import viterbi_align_states

    utts = sorted(u for u in phones if u in feats)
    chains = utterance_chains({u: phones[u] for u in utts}, sys_.ctx, sys_.topo)
    res = viterbi_align_states([chain_state_loglikes(sys_.gmm, feats[u], chains[u]) for u in utts],
                               [chains[u] for u in utts], sys_.trans)
    alis = {u: r.states for u, r in zip(utts, res) if r is not None}
    return alis, sorted(set(phones) - set(alis))


def estimate_test_fmllr(sat: GmmSystem, data_dir: str | Path, phones: dict[str, Tensor],
                        iters: int = 10) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """Per-speaker fMLLR for ``data_dir`` from transcripts ``phones`` (Kaldi ``align_fmllr.sh``):
    align the unadapted features with the SAT system's alignment model, then estimate with the SAT
    model, silence frames weighted 0. Returns (transforms, failed utts, speakers kept at identity)."""
    from asr.gmm.train import silence_weights

    if sat.ali_gmm is None:
        raise ValueError(f"{sat.exp_dir}: SAT system without an alignment model; retrain it with `asr gmm tri3`")
    utt2spk = read_transcripts(data_dir)[1]
    utts = sorted(phones)
    si_feats = sat.features(data_dir, utts)
    si = GmmSystem(sat.topo, sat.ctx, sat.trans, sat.ali_gmm, sat.pipeline, sat.stage, sat.silence)
    alis, failed = align_phone_strings(si, si_feats, phones)
    chains = utterance_chains({u: phones[u] for u in alis}, sat.ctx, sat.topo)
    weights = {u: silence_weights(phones[u], a, sat.topo, sat.silence) for u, a in alis.items()}
    identity: list[str] = []
    fm = estimate_speaker_fmllr(sat.gmm, si_feats, {u: chains[u][a] for u, a in alis.items()}, utt2spk, iters,
                                frame_weights=weights, skipped=identity)
    return fm, failed, identity


@one_thread
def decode_system(model_dir: str | Path, lang_dir: str | Path, data_dir: str | Path, out_dir: str | Path,
                  nj: int = 1, lmwt_from: str | Path | None = None, cfg=None, mode: str | None = None,
                  transform_dir: str | Path | None = None, fmllr_cfg=None):
    """Decode ``data_dir`` with the system in ``model_dir`` into ``out_dir`` and score it.

    ``lmwt_from``: a dev decode dir whose ``best_lmwt`` is applied (test sets); without it the LM
    weight is chosen on this set. SAT systems estimate each speaker's fMLLR in two adaptation passes
    (:func:`adapt_speakers`; ``out_dir/si`` = the scored first pass) and score the second pass's
    lattices rescored on the final transforms (``fmllr_cfg``, ``asr.gmm.fmllr_decode.FmllrDecodeConfig``:
    ``rescore=False`` decodes the adapted features again instead), unless
    ``transform_dir`` names a decode dir whose ``trans.pt`` to use (Kaldi ``--transform-dir``, e.g.
    the SAT system's own decode for its discriminatively trained version).
    Returns the ``asr.score.ScoreResult`` of the final pass.
    """
    from asr.decode import DecodeConfig, decode_and_score
    from asr.decode.pipeline import read_best_lmwt

    cfg = cfg or DecodeConfig()
    mode = mode or _lang_mode(lang_dir)
    model_dir, out = Path(model_dir), Path(out_dir)
    sys_ = load_system(model_dir)
    lmwt = read_best_lmwt(lmwt_from)
    out.mkdir(parents=True, exist_ok=True)
    fmllr_path = None
    if transform_dir is not None:
        fmllr_path = Path(transform_dir) / "trans.pt"
        if not fmllr_path.is_file():
            raise FileNotFoundError(f"{fmllr_path} not found: decode {data_dir} with the SAT system first")
        if not sys_.si_model:
            raise ValueError(f"{model_dir} is not a SAT system: --transform-dir does not apply")
    elif sys_.si_model:
        from asr.decode.pipeline import score_hyps
        from asr.gmm.fmllr_decode import FmllrDecodeConfig

        fcfg = fmllr_cfg or FmllrDecodeConfig()
        grid = (float(lmwt),) if lmwt is not None else tuple(cfg.lmwt_grid)
        fmllr_path, final = adapt_speakers(model_dir, lang_dir, data_dir, out, nj, lmwt_from, mode, fcfg,
                                           final_cfg=cfg, final_grid=grid)
        if final is not None:
            return score_hyps(out, data_dir, grid, *final, mode)
    job = functools.partial(gmm_loglike_job, model_dir=str(model_dir), data_dir=str(data_dir),
                            fmllr_path=None if fmllr_path is None else str(fmllr_path))
    return decode_and_score(ensure_graph(model_dir, lang_dir), data_dir, out, job, cfg, nj=nj, lmwt=lmwt, mode=mode)


def adapt_speakers(model_dir: Path, lang_dir: str | Path, data_dir: str | Path, out: Path, nj: int,
                   lmwt_from: str | Path | None, mode: str, cfg=None, final_cfg=None,
                   final_grid: tuple[float, ...] = ()) -> tuple[Path, tuple | None]:
    """The passes of ``decode_fmllr.sh`` (:mod:`asr.gmm.fmllr_decode`) for every speaker of
    ``data_dir``: writes ``out/trans.pt`` (speaker -> fMLLR) and the scored first pass in ``out/si``
    (LM weight from ``lmwt_from/si`` when given). Speakers left with the identity are named.
    Returns ``(trans.pt path, final)``: with ``cfg.rescore``, ``final = (hyps per LM weight of
    final_grid, events)`` of the rescored second pass (``final_cfg``: its beams and scoring), for
    ``asr.decode.pipeline.score_hyps``; else None."""
    from asr.decode import DecodeConfig
    from asr.decode.pipeline import read_best_lmwt, score_hyps
    from asr.gmm.fmllr_decode import FmllrDecodeConfig, adapt_job
    from asr.jobs import decode_parts, map_jobs
    from asr.jobs.stage import write_counts
    from asr.score import read_utt2spk

    cfg = cfg or FmllrDecodeConfig()
    gdir = ensure_graph(model_dir, lang_dir)
    si_lmwt = read_best_lmwt(Path(lmwt_from) / "si") if lmwt_from else None
    grid = (si_lmwt,) if si_lmwt is not None else tuple(cfg.lmwt_grid)
    utt2spk = read_utt2spk(Path(data_dir) / "utt2spk")
    final_cfg = final_cfg or DecodeConfig()
    final_grid = tuple(final_grid) or tuple(final_cfg.lmwt_grid)
    jobs = [(str(model_dir), str(gdir), str(data_dir), utts, cfg, grid, final_cfg, final_grid)
            for utts in decode_parts(utt2spk, nj, data_dir)]
    res = map_jobs(adapt_job, jobs, nj=nj, desc=f"fmllr {out.name}", log_dir=out / "log", task="fmllr")
    fm: dict[str, Tensor] = {}
    identity: list[str] = []
    hyps: list[dict[str, list[str]]] = [{} for _ in grid]
    final_hyps: list[dict[str, list[str]]] = [{} for _ in final_grid]
    events: dict[str, list[str]] = {}
    final_events: dict[str, list[str]] = {}
    for r in res:
        fm.update(r.transforms)
        identity += r.identity
        for into, ev in ((events, r.events), (final_events, r.final_events)):
            for kind, utts in ev.items():
                into.setdefault(kind, []).extend(utts)
        for k in range(len(grid)):
            hyps[k].update(r.hyps[k])
        for k in range(len(r.final_hyps)):
            final_hyps[k].update(r.final_hyps[k])
    score_hyps(out / "si", data_dir, grid, hyps, events, mode)
    identity.sort()
    write_counts(out, {"fmllr_identity_speakers": identity})
    if identity:
        print(f"asr gmm decode: {len(identity)} speaker(s) kept the identity transform (too little "
              f"non-silence data or singular statistics): {', '.join(identity[:5])}"
              + (" ..." if len(identity) > 5 else ""))
    path = out / "trans.pt"
    save_data(dict(sorted(fm.items())), path)          # the same file whatever the split
    return path, ((final_hyps, final_events) if cfg.rescore else None)


@one_thread
def align_system(model_dir: str | Path, data_dir: str | Path, out_dir: str | Path) -> Path:
    """Force-align the transcripts of ``data_dir`` with ``model_dir`` (Kaldi ``align_si.sh``; SAT
    systems: ``align_fmllr.sh``, speakers seen in training reuse their transforms, others get
    fMLLR estimated from an SI alignment). Writes ``out_dir/ali_{pdf,phone,state}.ark``, copies
    of the model files, ``log/failed_utts.txt`` and ``.done``."""
    from asr.jobs.stage import clear_done, mark_done

    model_dir, out = Path(model_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clear_done(out)
    sys_ = load_system(model_dir)
    text, utt2spk = read_transcripts(data_dir)
    ids, _ = phone_ids()
    phones, bad = {}, []
    for u, toks in sorted(text.items()):
        if all(t in ids for t in toks) and toks:
            phones[u] = torch.tensor([ids[t] for t in toks], dtype=torch.long)
        else:
            bad.append(u)
    fm = None
    if sys_.si_model:
        known = sys_.fmllr or {}
        new_spk = {u for u in phones if utt2spk.get(u) not in known}
        fm = dict(known)
        if new_spk:
            est, _, identity = estimate_test_fmllr(sys_, data_dir, {u: phones[u] for u in new_spk})
            fm.update(est)
            if identity:
                print(f"asr gmm align: {len(identity)} speaker(s) kept the identity transform: "
                      f"{', '.join(identity[:5])}" + (" ..." if len(identity) > 5 else ""))
        save_data(fm, out / "trans.pt")
    feats = sys_.features(data_dir, sorted(phones), fmllr=fm)
    alis, failed = align_phone_strings(sys_, feats, phones)
    chains = utterance_chains({u: phones[u] for u in alis}, sys_.ctx, sys_.topo)
    write_alignments(out, phones, alis, chains, sys_.topo)
    if (model_dir / "final.pt").resolve() != (out / "final.pt").resolve():
        copy_file_atomic(model_dir / "final.pt", out / "final.pt")
    (out / "log").mkdir(exist_ok=True)
    skipped = sorted(set(bad) | set(failed))
    write_text_atomic(out / "log" / "failed_utts.txt", "".join(f"{u}\n" for u in skipped))
    if skipped:
        print(f"asr gmm align: {len(skipped)} utterance(s) not aligned: {', '.join(skipped[:5])}"
              + (" ..." if len(skipped) > 5 else ""))
    cfg = {"model": str(model_dir.resolve()), "data": str(Path(data_dir).resolve())}
    write_text_atomic(out / "config.json", json.dumps(cfg, indent=1) + "\n")
    mark_done(out, cfg)
    return out
