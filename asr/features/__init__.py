"""Kaldi-compatible features: MFCC / fbank (``torchaudio.compliance.kaldi``), per-speaker CMVN,
deltas and splicing, and Kaldi ark/scp storage of a data directory's features."""
from asr.features.compute import (
    FEAT_DIMS, FEAT_TYPES, add_deltas, apply_cmvn, cmvn_stats, compute_features, delta_scales,
    num_frames, splice,
)
from asr.features.io import load_cmvn, load_feats, make_feats, read_wav

__all__ = [
    "FEAT_DIMS", "FEAT_TYPES", "add_deltas", "apply_cmvn", "cmvn_stats", "compute_features",
    "delta_scales", "num_frames", "splice", "load_cmvn", "load_feats", "make_feats", "read_wav",
]
