"""Decode a data set in parallel jobs, choose the LM weight, write hypotheses and scores.

Kaldi ``steps/decode.sh`` + ``local/score.sh``: lattices are generated once at ``acwt``, then
re-scored for every ``LMWT`` in ``cfg.lmwt_grid`` (best path of graph + acoustic / LMWT); the best
LMWT is picked on the dev set and given explicitly for the test set.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from torch import Tensor

from asr.decode.decoder import DecodeConfig, Graph, lattice_one
from asr.decode.lattice import LatticeArrays, iter_best_paths, lattice_to_arrays
from asr.jobs import map_jobs, split_by_speaker
from asr.lang.lexicon import write_text_atomic

LoglikeJob = Callable[[list[str]], Iterable[tuple[str, Tensor]]]


def make_lattices(graph_dir: str | Path, loglikes: dict[str, Tensor], cfg: DecodeConfig) -> dict[str, LatticeArrays]:
    """State-level lattices as tensors (``asr.decode.lattice.LatticeArrays``) for sequence training.

    Utterances whose search fails are reported by id in a warning (with the count) and left out.
    """
    graph = Graph(graph_dir)
    out: dict[str, LatticeArrays] = {}
    failed: list[str] = []
    for utt, ll in loglikes.items():
        lat = lattice_one(graph, utt, ll, cfg)
        if lat is None:
            failed.append(utt)
            continue
        la = lattice_to_arrays(lat)
        if la.num_frames != ll.shape[0]:
            raise RuntimeError(f"utterance {utt}: lattice covers {la.num_frames} of {ll.shape[0]} frames")
        out[utt] = la
    if failed:
        warnings.warn(f"lattice generation failed for {len(failed)} utterance(s): {failed[:10]}",
                      UserWarning, stacklevel=2)
    return out


def _decode_job(args: tuple) -> tuple[list[dict[str, list[str]]], list[str]]:
    """One job: lattices for its utterances, best paths for every LMWT of the grid."""
    graph_dir, cfg, loglike_job, utts, grid = args
    graph = Graph(graph_dir)
    hyps: list[dict[str, list[str]]] = [{} for _ in grid]
    failed: list[str] = []
    seen = set()

    def lattices():
        for utt, ll in loglike_job(list(utts)):
            seen.add(utt)
            lat = lattice_one(graph, utt, ll, cfg)
            if lat is None:
                failed.append(utt)
                continue
            yield utt, lat
    for utt, paths in iter_best_paths(lattices(), grid):   # all LM weights of the grid in one pass
        for k, ids in enumerate(paths):
            hyps[k][utt] = graph.word_strings(ids)
    failed.extend(u for u in utts if u not in seen)
    return hyps, failed


def _fmt(lmwt: float) -> str:
    return f"{lmwt:g}"


def decode_and_score(graph_dir: str | Path, data_dir: str | Path, out_dir: str | Path,
                     loglike_job: LoglikeJob, cfg: DecodeConfig, nj: int = 1,
                     lmwt: float | None = None, mode: str = "phone"):
    """Decode ``data_dir`` with ``nj`` jobs (split by speaker), score every LMWT, write results.

    Args:
        loglike_job: picklable callable(list[utt]) -> iterator of (utt, Tensor (T, num_pdfs)).
        lmwt: None -> score the whole ``cfg.lmwt_grid`` and pick the best (dev only!);
            a value -> use only that one (test).
        mode: ``"phone"`` (48-set hypotheses folded to 39, scored against ``text.39``) or
            ``"word"`` (against ``text.wrd``).
    Writes ``out_dir/hyp.<lmwt>.txt``, ``wer_<lmwt>``, ``scoring`` (``%WER`` line of the chosen
    LMWT, labelled ``out_dir``), ``best_lmwt``. Returns the ``asr.score.ScoreResult``.
    """
    from asr.lang.phones import load_phone_map
    from asr.score import fold39, read_text, read_utt2spk, score

    if mode not in ("phone", "word"):
        raise ValueError(f"mode must be 'phone' or 'word', got {mode!r}")
    data_dir, out = Path(data_dir), Path(out_dir)
    ref_path = data_dir / ("text.39" if mode == "phone" else "text.wrd")
    if not ref_path.is_file():
        raise FileNotFoundError(f"reference {ref_path} missing")
    ref = read_text(ref_path)
    utt2spk = read_utt2spk(data_dir / "utt2spk")
    grid = (float(lmwt),) if lmwt is not None else tuple(cfg.lmwt_grid)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(str(graph_dir), cfg, loglike_job, utts, grid) for utts in split_by_speaker(utt2spk, nj)]
    results = map_jobs(_decode_job, jobs, nj=nj, desc=f"decode {out.name}")
    failed = [u for _, f in results for u in f]
    if failed:
        warnings.warn(f"{out}: {len(failed)} utterance(s) not decoded (scored as deletions): "
                      f"{failed[:10]}", UserWarning, stacklevel=2)
    pmap = load_phone_map() if mode == "phone" else None
    best = None
    for k, w in enumerate(grid):
        hyp = {}
        for h, _ in results:
            hyp.update(h[k])
        hyp = dict(sorted(hyp.items()))
        write_text_atomic(out / f"hyp.{_fmt(w)}.txt", "".join(f"{u} {' '.join(t)}\n" for u, t in hyp.items()))
        scored = {u: fold39(t, pmap) for u, t in hyp.items()} if pmap else hyp
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = score({u: ref[u] for u in sorted(ref) if u in utt2spk}, scored)
        write_text_atomic(out / f"wer_{_fmt(w)}", res.wer_line(str(out)) + "\n")
        if best is None or res.errors < best[1].errors:
            best = (w, res)
    assert best is not None
    write_text_atomic(out / "scoring", best[1].wer_line(str(out)) + "\n")
    write_text_atomic(out / "best_lmwt", _fmt(best[0]) + "\n")
    return best[1]


def loglikes_from_dict(loglikes: dict[str, Tensor], utts: list[str]) -> Iterator[tuple[str, Tensor]]:
    """A ``loglike_job`` over an in-memory dict (bind with ``functools.partial``; tests/bench)."""
    for u in utts:
        if u in loglikes:
            yield u, loglikes[u]


def loglikes_from_kaldi(path: str, utts: list[str]) -> Iterator[tuple[str, Tensor]]:
    """A ``loglike_job`` reading Kaldi float matrices (``.scp`` random access, or an ``.ark``
    read sequentially) of shape (T, num_pdfs); bind ``path`` with ``functools.partial``."""
    import kaldiio
    import torch

    want = set(utts)
    if str(path).endswith(".scp"):
        table = kaldiio.load_scp(str(path))
        items = ((u, table[u]) for u in utts if u in table)
    else:
        items = ((u, m) for u, m in kaldiio.load_ark(str(path)) if u in want)
    for u, m in items:
        yield u, torch.tensor(m, dtype=torch.float32)
