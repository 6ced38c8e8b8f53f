"""Alignment and decoding with a trained GMM system (Kaldi ``align_si.sh`` / ``align_fmllr.sh``,
``decode.sh`` / ``decode_fmllr.sh``).

SAT systems decode in two passes (Kaldi ``decode_fmllr.sh``): the speaker-independent system the
SAT model was trained from decodes first; its 1-best phone strings are force-aligned with that
SI model, the alignment (chain states, tree-independent) gives SAT pdfs whose Gaussian posteriors
estimate one fMLLR transform per test speaker; the second pass decodes the adapted features.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from asr.gmm.stages import (
    GmmSystem, _atomic_save, _atomic_text, one_thread, estimate_speaker_fmllr, load_system, phone_ids, read_transcripts,
    write_alignments,
)
from asr.gmm.train import chain_loglikes, utterance_chains


def gmm_loglike_job(utts: list[str], model_dir: str, data_dir: str,
                    fmllr_path: str | None = None) -> Iterator[tuple[str, Tensor]]:
    """Picklable ``loglike_job`` for :func:`asr.decode.decode_and_score`: yields
    ``(utt, (T, num_pdfs) log-likelihoods)`` of ``utts`` of ``data_dir`` under ``model_dir``'s
    system, with the per-speaker fMLLR transforms in ``fmllr_path`` when given."""
    sys_ = load_system(model_dir)
    fm = torch.load(fmllr_path, weights_only=False) if fmllr_path else None
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
    _atomic_text(stamp, str(lang_dir) + "\n")
    return gdir


def _read_lmwt(decode_dir: str | Path | None) -> float | None:
    if decode_dir is None:
        return None
    p = Path(decode_dir) / "best_lmwt"
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: decode the dev set first (it chooses the LM weight)")
    return float(p.read_text().split()[0])


def _lang_mode(lang_dir: str | Path) -> str:
    from asr.lang.langdir import load_lang_info

    return load_lang_info(lang_dir).get("mode", "phone")


def hyp_phones(hyps: dict[str, list[str]], lang_dir: str | Path, mode: str) -> tuple[dict[str, Tensor], list[str]]:
    """Phone-id sequences of 1-best hypotheses (phone mode: the tokens; word mode: first
    pronunciation of each word in the lang's ``lexicon.txt``). Returns (phones, skipped utts)."""
    ids, _ = phone_ids()
    lex: dict[str, list[str]] = {}
    if mode == "word":
        for line in (Path(lang_dir) / "lexicon.txt").read_text().splitlines():
            cols = line.split()
            if len(cols) >= 2 and cols[0] not in lex:
                lex[cols[0]] = cols[1:]
    out, skipped = {}, []
    for u, toks in hyps.items():
        seq = toks if mode == "phone" else [p for w in toks for p in lex.get(w, ["?"])]
        if not seq or any(p not in ids for p in seq):
            skipped.append(u)
            continue
        out[u] = torch.tensor([ids[p] for p in seq], dtype=torch.long)
    return out, skipped


def align_phone_strings(sys_: GmmSystem, feats: dict[str, Tensor], phones: dict[str, Tensor]
                        ) -> tuple[dict[str, Tensor], list[str]]:
    """Chain-state Viterbi alignments of ``phones`` (utt -> ids) with ``sys_``; (alis, failed)."""
    from asr.hmm.align import viterbi_align

    utts = sorted(u for u in phones if u in feats)
    chains = utterance_chains({u: phones[u] for u in utts}, sys_.ctx, sys_.topo)
    res = viterbi_align([chain_loglikes(sys_.gmm, feats[u], chains[u]) for u in utts], [chains[u] for u in utts],
                        sys_.trans)
    alis = {u: r.states for u, r in zip(utts, res) if r is not None}
    return alis, sorted(set(phones) - set(alis))


def estimate_test_fmllr(sat: GmmSystem, si: GmmSystem, data_dir: str | Path, phones: dict[str, Tensor],
                        iters: int = 10) -> tuple[dict[str, Tensor], list[str]]:
    """Per-speaker fMLLR for ``data_dir`` from phone strings (transcripts or 1-best hypotheses):
    align with the SI system, posteriors from the SAT system. Returns (transforms, failed utts)."""
    utt2spk = read_transcripts(data_dir)[1]
    utts = sorted(phones)
    si_feats = si.features(data_dir, utts)
    alis, failed = align_phone_strings(si, si_feats, phones)
    sat_feats = sat.features(data_dir, sorted(alis))
    chains = utterance_chains({u: phones[u] for u in alis}, sat.ctx, sat.topo)
    fm = estimate_speaker_fmllr(sat.gmm, sat_feats, {u: chains[u][a] for u, a in alis.items()}, utt2spk, iters)
    return fm, failed


@one_thread
def decode_system(model_dir: str | Path, lang_dir: str | Path, data_dir: str | Path, out_dir: str | Path,
                  nj: int = 1, lmwt_from: str | Path | None = None, cfg=None, mode: str | None = None):
    """Decode ``data_dir`` with the system in ``model_dir`` into ``out_dir`` and score it.

    ``lmwt_from``: a dev decode dir whose ``best_lmwt`` is applied (test sets); without it the LM
    weight is chosen on this set. SAT systems decode twice (``out_dir/si`` = first pass).
    Returns the ``asr.score.ScoreResult`` of the final pass.
    """
    from asr.decode import DecodeConfig, decode_and_score

    cfg = cfg or DecodeConfig()
    mode = mode or _lang_mode(lang_dir)
    model_dir, out = Path(model_dir), Path(out_dir)
    sys_ = load_system(model_dir)
    lmwt = _read_lmwt(lmwt_from)
    out.mkdir(parents=True, exist_ok=True)
    fmllr_path = None
    if sys_.si_model:
        si_dir = Path(sys_.si_model)
        si_out = out / "si"
        si_lmwt = _read_lmwt(Path(lmwt_from) / "si") if lmwt_from else None
        decode_and_score(ensure_graph(si_dir, lang_dir), data_dir, si_out,
                         functools.partial(gmm_loglike_job, model_dir=str(si_dir), data_dir=str(data_dir)),
                         cfg, nj=nj, lmwt=si_lmwt, mode=mode)
        best = _read_lmwt(si_out)
        from asr.score import read_text

        hyps = read_text(si_out / f"hyp.{best:g}.txt")
        phones, skipped = hyp_phones(hyps, lang_dir, mode)
        fm, failed = estimate_test_fmllr(sys_, load_system(si_dir), data_dir, phones)
        bad = sorted(set(skipped) | set(failed))
        _atomic_text(out / "fmllr_skipped_utts.txt", "".join(f"{u}\n" for u in bad))
        if bad:
            print(f"asr gmm decode: {len(bad)} first-pass hypothesis(es) unusable for fMLLR "
                  f"(listed in {out / 'fmllr_skipped_utts.txt'})")
        fmllr_path = out / "trans.pt"
        _atomic_save(fm, fmllr_path)
    job = functools.partial(gmm_loglike_job, model_dir=str(model_dir), data_dir=str(data_dir),
                            fmllr_path=None if fmllr_path is None else str(fmllr_path))
    return decode_and_score(ensure_graph(model_dir, lang_dir), data_dir, out, job, cfg, nj=nj, lmwt=lmwt, mode=mode)


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
            est, _ = estimate_test_fmllr(sys_, load_system(sys_.si_model), data_dir,
                                         {u: phones[u] for u in new_spk})
            fm.update(est)
        _atomic_save(fm, out / "trans.pt")
    feats = sys_.features(data_dir, sorted(phones), fmllr=fm)
    alis, failed = align_phone_strings(sys_, feats, phones)
    chains = utterance_chains({u: phones[u] for u in alis}, sys_.ctx, sys_.topo)
    write_alignments(out, phones, alis, chains, sys_.topo)
    if (model_dir / "final.pt").resolve() != (out / "final.pt").resolve():
        shutil.copyfile(model_dir / "final.pt", out / "final.pt.tmp")
        os.replace(out / "final.pt.tmp", out / "final.pt")
    (out / "log").mkdir(exist_ok=True)
    skipped = sorted(set(bad) | set(failed))
    _atomic_text(out / "log" / "failed_utts.txt", "".join(f"{u}\n" for u in skipped))
    if skipped:
        print(f"asr gmm align: {len(skipped)} utterance(s) not aligned: {', '.join(skipped[:5])}"
              + (" ..." if len(skipped) > 5 else ""))
    cfg = {"model": str(model_dir.resolve()), "data": str(Path(data_dir).resolve())}
    _atomic_text(out / "config.json", json.dumps(cfg, indent=1) + "\n")
    mark_done(out, cfg)
    return out
