"""WFST decoding of per-utterance log-likelihood matrices over HCLG with ``kaldi_decoder``.

``kaldi_decoder.DecodableCtc(m, offset=0)`` returns ``m[t, ilabel - 1]`` for graph input label
``ilabel``, which is exactly our HCLG convention (``ilabel = pdf + 1``). The matrix passed is
``acwt * loglikes`` (the acoustic scale lives in the decodable, as in Kaldi's
``DecodableAmDiagGmmScaled``); lattices are returned with the acoustic costs divided by ``acwt``
again (unscaled, as Kaldi writes them), so a language-model weight ``LMWT`` is applied at
scoring time as "graph cost + acoustic cost / LMWT" (Kaldi ``score.sh``: ``lattice-scale
--inv-acoustic-scale=LMWT``).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from asr.lang.lexicon import SymbolTable


@dataclass
class DecodeConfig:
    """Decoder settings (Kaldi ``decode.sh`` defaults).

    acwt: acoustic scale applied to log-likelihoods during search.
    beam: search beam (graph + scaled acoustic cost units).
    lattice_beam: lattice pruning beam.
    lmwt_grid: language-model weights (inverse acoustic scales) tried when scoring lattices;
        the best one is chosen on dev only (Kaldi ``score.sh``: 1..20 style grid).
    retry_beam: when no final state survives the search, the utterance is decoded again with
        this beam (as Kaldi's aligner's ``--retry-beam``) before falling back to a partial result.
    mbr: score each lattice's minimum-Bayes-risk hypothesis (``asr.decode.mbr``, as Kaldi's
        ``score.sh`` does with ``lattice-to-ctm-conf``) rather than its best path. Off by
        default: on the generated default corpus (mono, phone bigram) MBR scored dev 27.94 /
        test 41.93 against the best path's 27.72 / 41.90 and took 665 s to score dev's grid
        where the best path took 86 s.
    mbr_beam: beam of the word lattice MBR decodes (``asr.decode.mbr.word_lattice``, at scale
        ``acwt``); None = ``lattice_beam``, Kaldi's (its lattices are determinized at that beam).

    There is no ``max_active``: the lattice decoder of ``kaldi-decoder`` (``LatticeSimpleDecoder``)
    has no cap on active states, so such a setting would be accepted and ignored. Only the 1-best
    ``decode_one`` / ``decode_utts`` (``FasterDecoder``) take one, as an argument.
    """

    acwt: float = 0.1
    beam: float = 13.0
    lattice_beam: float = 6.0
    lmwt_grid: tuple[float, ...] = field(default_factory=lambda: tuple(float(x) for x in range(1, 21)))
    retry_beam: float = 40.0
    mbr: bool = False
    mbr_beam: float | None = None

    def __post_init__(self) -> None:
        if self.acwt <= 0 or self.beam <= 0 or self.lattice_beam <= 0 or self.retry_beam <= 0:
            raise ValueError(f"invalid decode config {self}")
        if self.mbr_beam is not None and self.mbr_beam <= 0:
            raise ValueError(f"mbr_beam must be positive, got {self.mbr_beam}")
        if not self.lmwt_grid or min(self.lmwt_grid) <= 0:
            raise ValueError(f"lmwt_grid must be non-empty and positive, got {self.lmwt_grid}")


class Graph:
    """A loaded decoding graph: ``fst`` (const HCLG), ``words`` symbol table, ``num_pdfs``.

    ``fst``: another FST over the same words to load instead of ``graph_dir/HCLG.fst``, with
    ``num_pdfs`` its input width (e.g. the loop-marked graph of sequence training, 2 x pdfs)."""

    def __init__(self, graph_dir: str | Path, fst: str | Path | None = None, num_pdfs: int | None = None) -> None:
        import json

        import kaldifst

        graph_dir = Path(graph_dir)
        p = Path(fst) if fst is not None else graph_dir / "HCLG.fst"
        if not p.is_file():
            raise FileNotFoundError(f"{p} missing: build the graph (asr.lang.graph.make_hclg) first")
        vec = kaldifst.StdVectorFst.read(str(p))
        if vec is None:
            raise ValueError(f"could not read {p}")
        self.fst = kaldifst.StdConstFst(vec)
        self.words = SymbolTable.read(graph_dir / "words.txt")
        meta = graph_dir / "graph.json"
        self.num_pdfs = json.loads(meta.read_text())["num_pdfs"] if meta.is_file() else None
        if fst is not None:
            self.num_pdfs = num_pdfs
        self.dir = graph_dir

    def check(self, utt: str, loglikes: Tensor) -> np.ndarray:
        """Validate one utterance's matrix; returns it as contiguous float32 numpy."""
        if loglikes.dim() != 2 or loglikes.shape[0] == 0:
            raise ValueError(f"utterance {utt}: log-likelihoods must be (T > 0, num_pdfs), "
                             f"got {tuple(loglikes.shape)}")
        if self.num_pdfs is not None and loglikes.shape[1] != self.num_pdfs:
            raise ValueError(f"utterance {utt}: {loglikes.shape[1]} log-likelihood columns but graph "
                             f"{self.dir} has {self.num_pdfs} pdfs")
        x = loglikes.detach().to("cpu", torch.float32)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"utterance {utt}: non-finite log-likelihoods")
        return np.ascontiguousarray(x.numpy())

    def word_strings(self, ids: list[int]) -> list[str]:
        return [self.words.symbols[i] for i in ids]


def decode_one(graph: Graph, utt: str, loglikes: Tensor, cfg: DecodeConfig, max_active: int = 7000
               ) -> list[int] | None:
    """1-best word ids of one utterance with ``FasterDecoder`` (at most ``max_active`` active
    states per frame); None if no path survives.

    Falls back to the best partial path (no final state reached) with a warning, as Kaldi does.
    """
    import kaldi_decoder
    import kaldifst

    if max_active < 1:
        raise ValueError(f"max_active must be >= 1, got {max_active}")
    x = graph.check(utt, loglikes) * np.float32(cfg.acwt)
    opts = kaldi_decoder.FasterDecoderOptions(beam=cfg.beam, max_active=max_active)
    dec = kaldi_decoder.FasterDecoder(graph.fst, opts)
    dec.decode(kaldi_decoder.DecodableCtc(x))
    ok, best = dec.get_best_path(use_final_probs=True)
    if not ok:
        ok, best = dec.get_best_path(use_final_probs=False)
        if not ok:
            return None
        warnings.warn(f"utterance {utt}: no final state reached; using the best partial path",
                      UserWarning, stacklevel=2)
    ok, _, olabels, _ = kaldifst.get_linear_symbol_sequence(best)
    return list(olabels) if ok else None


# How ``decode_lattice`` got its lattice: the counts a decode stage records (``log/counts.json``).
LATTICE_OK, RETRY_BEAM, PARTIAL_LATTICE, NOT_DECODED = "ok", "retry_beam", "partial_lattice", "not_decoded"


def decode_lattice(graph: Graph, utt: str, loglikes: Tensor, cfg: DecodeConfig):
    """Raw state-level lattice (``kaldifst.Lattice``) of one utterance with ``LatticeSimpleDecoder``
    and how it was obtained: ``(lattice or None, status)``. Weights (graph cost, unscaled
    acoustic cost) in -ln.

    status: ``"ok"``; ``"retry_beam"`` (no final state survived ``cfg.beam``, the search was
    repeated with ``cfg.retry_beam``); ``"partial_lattice"`` (no final state even then: the
    lattice ends in the states active at the last frame, not in a final state of the graph);
    ``"not_decoded"`` (no lattice; returned with None).
    """
    import kaldi_decoder
    import kaldifst

    x = graph.check(utt, loglikes) * np.float32(cfg.acwt)
    beams = [cfg.beam] + ([cfg.retry_beam] if cfg.retry_beam > cfg.beam else [])
    status = LATTICE_OK
    for k, beam in enumerate(beams):
        conf = kaldi_decoder.LatticeSimpleDecoderConfig(beam=beam, lattice_beam=cfg.lattice_beam)
        dec = kaldi_decoder.LatticeSimpleDecoder(graph.fst, conf)
        dec.decode(kaldi_decoder.DecodableCtc(x))
        if math.isfinite(dec.final_relative_cost()):
            status = RETRY_BEAM if k > 0 else LATTICE_OK
            ok, lat = dec.get_raw_lattice(use_final_probs=True)
            break
    else:
        # with no final token, kaldi's GetRawLattice makes every last-frame token final
        status = PARTIAL_LATTICE
        ok, lat = dec.get_raw_lattice(use_final_probs=True)
    if not ok or lat.num_states == 0:
        return None, NOT_DECODED
    kaldifst.scale_lattice([[1.0, 0.0], [0.0, 1.0 / cfg.acwt]], lat)
    return lat, status


def lattice_one(graph: Graph, utt: str, loglikes: Tensor, cfg: DecodeConfig):
    """``decode_lattice``'s lattice alone (None if decoding failed), with a ``UserWarning`` naming
    the utterance when the retry beam was needed or the lattice ends without a final state.
    Stages use ``decode_lattice`` and count those cases instead."""
    lat, status = decode_lattice(graph, utt, loglikes, cfg)
    if status == RETRY_BEAM:
        warnings.warn(f"utterance {utt}: no final state within beam {cfg.beam}; decoded with "
                      f"retry beam {cfg.retry_beam}", UserWarning, stacklevel=2)
    elif status == PARTIAL_LATTICE:
        warnings.warn(f"utterance {utt}: no final state reached (beams {cfg.beam}, {cfg.retry_beam}); "
                      "the lattice ends at the last frame", UserWarning, stacklevel=2)
    return lat


def lattice_best_words(lat, lmwt: float) -> list[int]:
    """Word ids of the best path of a lattice under cost ``graph + acoustic / lmwt``."""
    import kaldifst

    lat = lat.copy()
    kaldifst.scale_lattice([[1.0, 0.0], [0.0, 1.0 / lmwt]], lat)
    best = kaldifst.shortest_path(lat, n=1)
    ok, _, olabels, _ = kaldifst.get_linear_symbol_sequence(best)
    if not ok:
        raise RuntimeError("shortest path of a lattice is not linear")
    return list(olabels)


def decode_utts(graph_dir: str | Path, loglikes: dict[str, Tensor], cfg: DecodeConfig, max_active: int = 7000
                ) -> dict[str, list[str]]:
    """1-best word strings per utterance (``decode_one``).

    Args:
        graph_dir: directory with ``HCLG.fst`` and ``words.txt``.
        loglikes: {utt: Tensor (T, num_pdfs)} log-likelihoods (natural log, unscaled).
        max_active: cap on active states per frame of ``FasterDecoder``.
    Returns:
        {utt: words}; utterances whose search found no path are reported by id in a warning and
        left out (with their count).
    """
    graph = Graph(graph_dir)
    out: dict[str, list[str]] = {}
    failed: list[str] = []
    for utt, ll in loglikes.items():
        ids = decode_one(graph, utt, ll, cfg, max_active)
        if ids is None:
            failed.append(utt)
            continue
        out[utt] = graph.word_strings(ids)
    if failed:
        warnings.warn(f"decoding failed for {len(failed)} utterance(s): {failed[:10]}", UserWarning,
                      stacklevel=2)
    return out
