"""WFST decoding (kaldi-decoder) of per-utterance log-likelihood matrices over HCLG graphs,
lattices as tensors for sequence training, LM-weight tuning and scoring. See DECODE API in
``asr/README.md`` and the module docstrings."""
from asr.decode.decoder import (DecodeConfig, Graph, decode_lattice, decode_one, decode_utts, lattice_best_words,
                                lattice_one)
from asr.decode.lattice import LatticeArrays, lattice_to_arrays
from asr.decode.pipeline import decode_and_score, loglikes_from_dict, make_lattices

__all__ = ["DecodeConfig", "Graph", "decode_lattice", "decode_one", "decode_utts", "lattice_best_words", "lattice_one",
           "LatticeArrays", "lattice_to_arrays", "decode_and_score", "loglikes_from_dict",
           "make_lattices"]
