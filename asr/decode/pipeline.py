"""Decode a data set in parallel jobs, choose the LM weight, write hypotheses and scores.

Kaldi ``steps/decode.sh`` + ``local/score.sh``: lattices are generated once at ``acwt``, then
re-scored for every ``LMWT`` in ``cfg.lmwt_grid`` (graph + acoustic / LMWT: the minimum-Bayes-risk
hypothesis, ``asr.decode.mbr``, or with ``cfg.mbr`` off the best path); the best LMWT is picked on
the dev set and given explicitly for the test set.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from torch import Tensor

from asr.decode.decoder import (LATTICE_OK, NOT_DECODED, PARTIAL_LATTICE, RETRY_BEAM, DecodeConfig, Graph,
                                decode_lattice, lattice_one)
from asr.decode.lattice import LatticeArrays, iter_best_paths, lattice_to_arrays
from asr.decode.mbr import lattice_words
from asr.jobs import decode_parts, map_jobs
from asr.jobs.stage import StageFailed, describe_ids, write_counts
from asr.jobs.atomic import copy_tree_atomic, write_text_atomic

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


def _decode_job(args: tuple) -> tuple[list[dict[str, list[str]]], dict[str, list[str]]]:
    """One job: lattices for its utterances, hypotheses for every LMWT of the grid; and the
    utterances that needed the retry beam, ended without a final state or were not decoded
    (no lattice, or no log-likelihoods from ``loglike_job``)."""
    graph_dir, cfg, loglike_job, utts, grid = args
    graph = Graph(graph_dir)
    hyps: list[dict[str, list[str]]] = [{} for _ in grid]
    events: dict[str, list[str]] = {RETRY_BEAM: [], PARTIAL_LATTICE: [], NOT_DECODED: []}
    seen = set()

    def lattices():
        for utt, ll in loglike_job(list(utts)):
            seen.add(utt)
            lat, status = decode_lattice(graph, utt, ll, cfg)
            if status != LATTICE_OK:
                events[status].append(utt)
            if lat is not None:
                yield utt, lat

    if cfg.mbr:   # MBR hypothesis per lattice at every LM weight (Kaldi score.sh)
        scored = ((utt, lattice_words(lat, grid, cfg)) for utt, lat in lattices())
    else:         # best paths: all LM weights of the grid in one pass
        scored = iter_best_paths(lattices(), grid)
    for utt, paths in scored:
        for k, ids in enumerate(paths):
            hyps[k][utt] = graph.word_strings(ids)
    events[NOT_DECODED].extend(u for u in utts if u not in seen)
    return hyps, events


def read_best_lmwt(decode_dir: str | Path | None) -> float | None:
    """The LM weight a dev decoding chose (``DECODE_DIR/best_lmwt``), to apply to a test set; None
    for None. A missing file is an error saying to decode the dev set first."""
    if decode_dir is None:
        return None
    p = Path(decode_dir) / "best_lmwt"
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: decode the dev set first (it chooses the LM weight)")
    return float(p.read_text().split()[0])


def read_scoring_errors(decode_dir: str | Path) -> tuple[int, int]:
    """(errors, reference tokens) of a decoding's ``DECODE_DIR/scoring`` line (``%WER x [ E / N, ...``),
    the figure dev-based choices compare; a missing file says to decode the set first."""
    path = Path(decode_dir) / "scoring"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: decode the dev set first")
    line = path.read_text().split()
    try:
        i = line.index("[")
        return int(line[i + 1]), int(line[i + 3].rstrip(","))
    except (ValueError, IndexError):
        raise ValueError(f"{path}: not a scoring line ({' '.join(line)[:80]!r})") from None


def adopt_decoding(src: str | Path, dst: str | Path) -> Path:
    """Make ``dst`` a copy of the decoding directory ``src`` (hypotheses, scores, ``best_lmwt``,
    logs; not its ``.done``), its ``scoring`` and ``wer_*`` lines labelled ``dst``: a decoding made
    of the same model, graph and settings elsewhere (a dev selection's candidate) taken as this
    system's. Atomic: ``dst`` is the old directory or the whole copy."""
    dst = Path(dst)

    def relabel(tmp: Path) -> None:
        for f in [tmp / "scoring", *tmp.glob("wer_*")]:
            if f.is_file():
                lines = [ln.rsplit(" ", 1)[0] + f" {dst}" if ln.startswith("%WER") else ln
                         for ln in f.read_text().splitlines()]
                f.write_text("".join(ln + "\n" for ln in lines))

    return copy_tree_atomic(src, dst, ignore=(".done",), edit=relabel)


def _fmt(lmwt: float) -> str:
    return f"{lmwt:g}"


def decode_and_score(graph_dir: str | Path, data_dir: str | Path, out_dir: str | Path,
                     loglike_job: LoglikeJob, cfg: DecodeConfig, nj: int = 1,
                     lmwt: float | None = None, mode: str = "phone"):
    """Decode ``data_dir`` with ``nj`` processes (``asr.jobs.decode_parts``: whole speakers, a few
    parts per process, heaviest first), score every LMWT, write results.

    Args:
        loglike_job: picklable callable(list[utt]) -> iterator of (utt, Tensor (T, num_pdfs)).
        lmwt: None -> score the whole ``cfg.lmwt_grid`` and pick the best (dev only!);
            a value -> use only that one (test).
        mode: ``"phone"`` (48-set hypotheses folded to 39, scored against ``text.39``) or
            ``"word"`` (against ``text.wrd``).
    Writes ``out_dir/hyp.<lmwt>.txt``, ``wer_<lmwt>``, ``scoring`` (``%WER`` line of the chosen
    LMWT, labelled ``out_dir``), ``best_lmwt`` and ``log/counts.json`` (``retry_beam``,
    ``partial_lattice``, ``not_decoded``: each named in a ``UserWarning`` too). Returns the
    ``asr.score.ScoreResult``; raises ``StageFailed`` when no utterance could be decoded.
    """
    from asr.score import read_utt2spk

    if mode not in ("phone", "word"):
        raise ValueError(f"mode must be 'phone' or 'word', got {mode!r}")
    data_dir, out = Path(data_dir), Path(out_dir)
    ref_path = data_dir / ("text.39" if mode == "phone" else "text.wrd")
    if not ref_path.is_file():
        raise FileNotFoundError(f"reference {ref_path} missing")
    utt2spk = read_utt2spk(data_dir / "utt2spk")
    grid = (float(lmwt),) if lmwt is not None else tuple(cfg.lmwt_grid)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(str(graph_dir), cfg, loglike_job, utts, grid) for utts in decode_parts(utt2spk, nj, data_dir)]
    results = map_jobs(_decode_job, jobs, nj=nj, desc=f"decode {out.name}", log_dir=out / "log", task="decode")
    hyps: list[dict[str, list[str]]] = [{} for _ in grid]
    for h, _ in results:
        for k in range(len(grid)):
            hyps[k].update(h[k])
    events = {kind: sorted(u for _, ev in results for u in ev[kind])
              for kind in (RETRY_BEAM, PARTIAL_LATTICE, NOT_DECODED)}
    return score_hyps(out, data_dir, grid, hyps, events, mode)


def score_hyps(out_dir: str | Path, data_dir: str | Path, grid: tuple[float, ...],
               hyps: list[dict[str, list[str]]], events: dict[str, list[str]], mode: str = "phone"):
    """Score the hypotheses ``hyps[k]`` (utt -> words) of every LM weight ``grid[k]`` against
    ``data_dir``'s reference; write ``hyp.<lmwt>.txt``, ``wer_<lmwt>``, ``scoring``, ``best_lmwt``
    (the grid's best) and ``log/counts.json`` of ``events`` (``retry_beam``, ``partial_lattice``,
    ``not_decoded``: utterance lists, each named in a ``UserWarning`` too) into ``out_dir``.
    Returns the ``asr.score.ScoreResult`` of the best LM weight; raises ``StageFailed`` when no
    utterance was decoded."""
    from asr.lang.phones import load_phone_map
    from asr.score import fold39, read_text, read_utt2spk, score

    data_dir, out = Path(data_dir), Path(out_dir)
    ref_path = data_dir / ("text.39" if mode == "phone" else "text.wrd")
    if not ref_path.is_file():
        raise FileNotFoundError(f"reference {ref_path} missing")
    ref = read_text(ref_path)
    utt2spk = read_utt2spk(data_dir / "utt2spk")
    out.mkdir(parents=True, exist_ok=True)
    events = {kind: sorted(events.get(kind, [])) for kind in (RETRY_BEAM, PARTIAL_LATTICE, NOT_DECODED)}
    write_counts(out, events)
    for kind, what in ((RETRY_BEAM, "decoded again with the retry beam (no final state within the beam)"),
                       (PARTIAL_LATTICE, "no final state reached: lattice ends in the last frame's states"),
                       (NOT_DECODED, "not decoded (scored as all deletions)")):
        if events[kind]:
            warnings.warn(f"{out}: {what}: {describe_ids(events[kind])}", UserWarning, stacklevel=2)
    scored_utts = [u for u in ref if u in utt2spk]
    if scored_utts and set(scored_utts) <= set(events[NOT_DECODED]):
        raise StageFailed(f"{out}: no utterance of {data_dir} was decoded "
                          f"({describe_ids(events[NOT_DECODED])})")
    pmap = load_phone_map() if mode == "phone" else None
    best = None
    for k, w in enumerate(grid):
        hyp = dict(sorted(hyps[k].items()))
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
