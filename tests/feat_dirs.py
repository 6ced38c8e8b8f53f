"""A data dir of precomputed features for the DNN tests: ``feats.scp`` (Kaldi matrices), ``utt2spk``
(speaker = the utterance id up to its last ``_``), per-speaker ``cmvn.scp`` and, for perturbed
copies, ``utt2orig``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from asr.features.compute import cmvn_stats
from asr.nnet.io import _kaldi_io


def write_feature_dir(d: Path, feats: dict[str, torch.Tensor], utt2orig: dict[str, str] | None = None) -> Path:
    """Write ``feats`` {utterance: (T, D) tensor} as the data dir ``d``; returns ``d``."""
    kio = _kaldi_io()
    (d / "mats").mkdir(parents=True)
    scp, u2s, stats = [], [], {}
    for u in sorted(feats):
        p = d / "mats" / f"{u}.mat"
        with open(p, "wb") as f:
            kio.write_mat(f, feats[u].numpy().astype(np.float32))
        scp.append(f"{u} {p}\n")
        spk = u.rsplit("_", 1)[0]
        u2s.append(f"{u} {spk}\n")
        stats[spk] = stats.get(spk, 0) + cmvn_stats(feats[u])
    cm = []
    for s in sorted(stats):
        p = d / "mats" / f"cmvn_{s}.mat"
        with open(p, "wb") as f:
            kio.write_mat(f, stats[s].numpy())
        cm.append(f"{s} {p}\n")
    (d / "feats.scp").write_text("".join(scp))
    (d / "utt2spk").write_text("".join(u2s))
    (d / "cmvn.scp").write_text("".join(cm))
    if utt2orig is not None:
        (d / "utt2orig").write_text("".join(f"{k} {v}\n" for k, v in sorted(utt2orig.items())))
    return d
