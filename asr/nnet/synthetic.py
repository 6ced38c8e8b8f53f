"""Synthetic frame-labelled corpora (segments of pdfs with Gaussian features) for tests and
benchmarks of the DNN and sequence-training code without a real front-end."""
from __future__ import annotations

import torch
from torch import Tensor


def synth_corpus(n_utts: int, num_pdfs: int, dim: int, seed: int, noise: float = 1.0,
                 n_speakers: int = 5, seg_frames: tuple[int, int] = (3, 8),
                 segs: tuple[int, int] = (4, 8)) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``n_utts`` utterances ``spk<k>_u<i>`` made of ``segs`` pdf segments of ``seg_frames``
    frames each; features (T, dim) = per-pdf mean (fixed seed) + ``noise`` · N(0, I).
    Returns (feats: utt -> (T, dim) float32, alis: utt -> (T,) pdf ids)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(num_pdfs, dim, generator=torch.Generator().manual_seed(1234)) * 1.5
    feats, alis = {}, {}
    for i in range(n_utts):
        nseg = int(torch.randint(segs[0], segs[1] + 1, (1,), generator=g))
        pdfs = torch.randint(0, num_pdfs, (nseg,), generator=g)
        durs = torch.randint(seg_frames[0], seg_frames[1] + 1, (nseg,), generator=g)
        y = torch.repeat_interleave(pdfs, durs)
        x = means[y] + noise * torch.randn(len(y), dim, generator=g)
        u = f"spk{i % n_speakers}_u{i:03d}"
        feats[u], alis[u] = x, y
    return feats, alis
