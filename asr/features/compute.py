"""Kaldi-compatible feature computation and the per-frame transforms applied on the fly.

All functions take and return tensors; nothing here touches files. Frames are rows:
``x`` has shape ``(T, D)`` with ``T`` frames (10 ms shift) and ``D`` coefficients.
"""
from __future__ import annotations

import torch
import torchaudio.compliance.kaldi as kaldi

FEAT_TYPES = ("mfcc", "fbank")
FRAME_SHIFT_MS = 10.0
FRAME_LENGTH_MS = 25.0

# Kaldi's TIMIT recipe (egs/timit/s5/conf/mfcc.conf): 13 cepstra from 23 mel bins with C0 kept
# (--use-energy=false), and a 40-bin log-mel fbank. Kaldi dithers with Gaussian noise of standard
# deviation 1 (16-bit sample units) so digital silence gives no -inf / zero-variance frames; here
# the noise is drawn from a generator seeded by the utterance id (DITHER below), so features are
# reproducible bit for bit; torchaudio's own dither (global RNG) stays off.
FEAT_OPTS: dict[str, dict[str, object]] = {
    "mfcc": dict(num_ceps=13, num_mel_bins=23, use_energy=False, dither=0.0,
                 frame_length=FRAME_LENGTH_MS, frame_shift=FRAME_SHIFT_MS),
    "fbank": dict(num_mel_bins=40, use_energy=False, dither=0.0,
                  frame_length=FRAME_LENGTH_MS, frame_shift=FRAME_SHIFT_MS),
}
FEAT_DIMS = {"mfcc": 13, "fbank": 40}
DITHER = 1.0  # standard deviation of the added Gaussian noise, 16-bit sample units (Kaldi --dither)


def dither_seed(utt: str) -> int:
    """A stable seed for the dither noise of utterance ``utt`` (the same on every machine/run)."""
    import zlib

    return zlib.crc32(utt.encode("utf-8"))


def num_frames(num_samples: int, sample_rate: int) -> int:
    """Frames Kaldi produces with ``snip_edges=true``: ``1 + (N - win) // shift`` (0 if N < win)."""
    win = int(sample_rate * FRAME_LENGTH_MS / 1000)
    shift = int(sample_rate * FRAME_SHIFT_MS / 1000)
    return 0 if num_samples < win else 1 + (num_samples - win) // shift


def compute_features(wave: torch.Tensor, sample_rate: int, feat_type: str, seed: int | None = None,
                     dither: float = DITHER) -> torch.Tensor:
    """MFCC (13, C0 kept: Kaldi TIMIT ``--use-energy=false``) or log-mel fbank (40) as Kaldi
    computes them.

    wave: ``(N,)`` samples on the 16-bit integer scale (as Kaldi reads WAV/SPHERE files, i.e.
    values in [-32768, 32767]; integer tensors are converted). Returns float32 ``(T, D)`` with
    ``T = 1 + (N - 400) // 160`` at 16 kHz (25 ms window, 10 ms shift, ``snip_edges``).
    Uses ``torchaudio.compliance.kaldi``; with ``seed`` given, Gaussian noise of standard deviation
    ``dither`` drawn from a generator seeded with it is added to the samples first (Kaldi's dither,
    reproducible); ``seed=None`` computes without dither.
    """
    if feat_type not in FEAT_TYPES:
        raise ValueError(f"unknown feature type {feat_type!r}; expected one of {FEAT_TYPES}")
    if wave.dim() != 1:
        raise ValueError(f"expected a 1-D waveform (N,), got shape {tuple(wave.shape)}")
    if num_frames(wave.numel(), sample_rate) == 0:
        raise ValueError(f"waveform of {wave.numel()} samples is shorter than one "
                         f"{FRAME_LENGTH_MS:g} ms window at {sample_rate} Hz")
    w = wave.to(torch.float32)[None]
    if seed is not None and dither > 0:
        g = torch.Generator().manual_seed(int(seed))
        w = w + dither * torch.randn(w.shape, generator=g)
    fn = kaldi.mfcc if feat_type == "mfcc" else kaldi.fbank
    return fn(w, sample_frequency=float(sample_rate), **FEAT_OPTS[feat_type]).contiguous()


def cmvn_stats(x: torch.Tensor) -> torch.Tensor:
    """Kaldi CMVN statistics of frames ``x`` ``(T, D)``: float64 ``(2, D + 1)``; row 0 holds
    the per-dimension sums and the frame count, row 1 the sums of squares and 0
    (``compute-cmvn-stats``). Stats of several utterances add up."""
    x = x.to(torch.float64)
    stats = torch.zeros(2, x.shape[1] + 1, dtype=torch.float64)
    stats[0, :-1] = x.sum(dim=0)
    stats[0, -1] = x.shape[0]
    stats[1, :-1] = (x * x).sum(dim=0)
    return stats


def apply_cmvn(x: torch.Tensor, stats: torch.Tensor, norm_vars: bool = False) -> torch.Tensor:
    """Kaldi ``apply-cmvn``: subtract the mean of ``stats`` ``(2, D + 1)`` from ``x`` ``(T, D)``
    and, with ``norm_vars``, scale to unit variance (variance floored at 1e-20). Returns float32."""
    if stats.shape != (2, x.shape[1] + 1):
        raise ValueError(f"CMVN stats of shape {tuple(stats.shape)} do not fit features of "
                         f"dimension {x.shape[1]} (expected (2, {x.shape[1] + 1}))")
    count = float(stats[0, -1])
    if count < 1.0:
        raise ValueError(f"CMVN stats with frame count {count} < 1")
    mean = stats[0, :-1].to(torch.float64) / count
    y = x.to(torch.float64) - mean
    if norm_vars:
        var = (stats[1, :-1].to(torch.float64) / count - mean * mean).clamp(min=1e-20)
        y = y / var.sqrt()
    return y.to(torch.float32)


def delta_scales(order: int = 2, window: int = 2) -> list[torch.Tensor]:
    """Kaldi's delta filters (``DeltaFeatures``): ``scales[0] = [1]`` and ``scales[i]`` is
    ``scales[i-1]`` convolved with ``[-w..w] / sum(j^2)``; ``scales[i]`` has ``1 + 2*i*w`` taps."""
    scales = [torch.ones(1, dtype=torch.float64)]
    j = torch.arange(-window, window + 1, dtype=torch.float64)
    for _ in range(order):
        prev = scales[-1]
        cur = torch.zeros(prev.numel() + 2 * window, dtype=torch.float64)
        for k, s in enumerate(j.tolist()):  # filter taps, not frames
            cur[k:k + prev.numel()] += s * prev
        scales.append(cur / float((j * j).sum()))
    return scales


def _edge_index(T: int, offsets: torch.Tensor) -> torch.Tensor:
    """``(T, K)`` frame indices ``t + offsets`` clamped to ``[0, T-1]`` (edge replication)."""
    return (torch.arange(T)[:, None] + offsets[None, :]).clamp_(0, T - 1)


def add_deltas(x: torch.Tensor, order: int = 2, window: int = 2) -> torch.Tensor:
    """Kaldi ``add-deltas``: ``(T, D) -> (T, D * (order + 1))`` = [x, delta, delta-delta, ...].

    Each order is one FIR filter over the *original* frames with out-of-range frames replaced
    by the first/last frame, exactly as Kaldi's ``DeltaFeatures::Process``.
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"add_deltas expects a non-empty (T, D) matrix, got {tuple(x.shape)}")
    T = x.shape[0]
    xd = x.to(torch.float64)
    outs = []
    for sc in delta_scales(order, window):
        m = (sc.numel() - 1) // 2
        idx = _edge_index(T, torch.arange(-m, m + 1))
        outs.append(torch.einsum("tkd,k->td", xd[idx], sc))
    return torch.cat(outs, dim=1).to(x.dtype)


def splice(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Kaldi ``splice-feats``: ``(T, D) -> (T, D * (left + right + 1))``; output row ``t`` is
    frames ``[t-left, ..., t+right]`` concatenated, out-of-range frames replaced by the edge
    frame."""
    if left < 0 or right < 0:
        raise ValueError(f"splice context must be non-negative, got left={left} right={right}")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"splice expects a non-empty (T, D) matrix, got {tuple(x.shape)}")
    T, D = x.shape
    idx = _edge_index(T, torch.arange(-left, right + 1))
    return x[idx].reshape(T, D * (left + right + 1))
