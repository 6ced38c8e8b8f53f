"""Acoustic degradations of a clean TTS waveform (pure tensor functions, seeded).

All functions take a waveform ``(N,)`` at ``sample_rate`` Hz and return one of the same length
(so phone boundaries stay valid), except ``resample``/``vtl_warp`` which change the length by a
known ratio (boundaries are rescaled by the caller).

Reproducibility across machines: ``apply_condition`` computes in float64, its normal draws
included. Its FFTs (MKL) and vectorised exp/sin/log1p/sigmoid give results that differ in the last
bits between CPU instruction sets (measured: the same speaker rendered with MKL's AVX-512 and
AVX2 code paths differed, in float32, in 1792 of 47365 int16 samples, through one mu-law step of
the telephone channel and the level normalisation that follows; float32 normal draws differ by
an ulp between torch's vectorised and scalar kernels). In float64 those differences
are ~1e-16 relative, far below the float32 / int16 / mu-law steps the result is rounded to, so
the rendered audio no longer depends on the code path (``tests/test_corpus_synth.py`` renders
under MKL's AVX-512, AVX2 and SSE4.2 paths and ATen's vectorised and scalar kernels; other CPUs
were not available to check).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio.functional as AF


@dataclass(frozen=True)
class Condition:
    """A speaker's fixed channel: additive noise (type, SNR dB; None = clean), reverberation
    (RT60 seconds; None = dry), telephone band 300-3400 Hz with mu-law, output level dBFS."""

    noise: str | None
    snr_db: float
    rt60_s: float | None
    telephone: bool
    level_dbfs: float

    def describe(self) -> str:
        parts = [f"{self.noise}@{self.snr_db:.0f}dB" if self.noise else "clean"]
        if self.rt60_s is not None:
            parts.append(f"reverb{self.rt60_s:.2f}s")
        if self.telephone:
            parts.append("telephone")
        return "+".join(parts)


def resample(x: torch.Tensor, orig_hz: int, new_hz: int) -> torch.Tensor:
    """Band-limited polyphase resampling (Kaiser-windowed FIR, scipy ``resample_poly``),
    ``(N,) -> (ceil(N * new_hz / orig_hz),)``."""
    if orig_hz == new_hz:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(orig_hz, new_hz)
    y = resample_poly(x.numpy().astype(np.float64), new_hz // g, orig_hz // g)
    return torch.from_numpy(y.astype(np.float32))


def _fast_len(n: int) -> int:
    return 1 << (n - 1).bit_length()


def vtl_warp(x: torch.Tensor, factor: float, sample_rate: int) -> torch.Tensor:
    """Scale all frequencies by ``factor`` (formants, F0) and durations by ``1/factor``, like
    sox ``speed``: resample to ``sample_rate / factor`` and play back at ``sample_rate``.
    The ratio is rounded to 100 Hz steps to keep the resampling kernel small."""
    target = int(round(sample_rate / factor / 100.0)) * 100
    return resample(x, sample_rate, target)


def _shaped_noise(n: int, kind: str, sample_rate: int, gen: torch.Generator) -> torch.Tensor:
    """Unit-power noise ``(n,)`` float64: white, pink (1/f), brown
    (1/f^2) or babble (speech-shaped noise, amplitude-modulated at syllable rate like a crowd)."""
    m = _fast_len(n)
    white = torch.randn(m, generator=gen, dtype=torch.float64)
    if kind == "white":
        y = white[:n]
    else:
        spec = torch.fft.rfft(white)
        f = torch.fft.rfftfreq(m, 1.0 / sample_rate, dtype=torch.float64).clamp_min(20.0)
        if kind == "pink":
            shape = f.pow(-0.5)
        elif kind == "brown":
            shape = f.reciprocal()
        elif kind == "babble":  # long-term speech spectrum: peak near 500 Hz, -6 dB/oct above
            shape = (f / 500.0) / (1.0 + (f / 500.0) ** 2)
        else:
            raise ValueError(f"unknown noise type {kind!r}")
        y = torch.fft.irfft(spec * shape, n=m)[:n]
        if kind == "babble":
            t = torch.arange(n, dtype=torch.float64) / sample_rate
            env = torch.ones(n, dtype=torch.float64)
            for _ in range(4):  # four talkers' syllabic envelopes (3-6 Hz)
                rate = 3.0 + 3.0 * torch.rand(1, generator=gen).item()
                phase = 2 * math.pi * torch.rand(1, generator=gen).item()
                env = env + 0.5 * (1 + torch.sin(2 * math.pi * rate * t + phase))
            y = y * env
    return y / y.pow(2).mean().sqrt().clamp_min(1e-12)


def add_noise(x: torch.Tensor, kind: str, snr_db: float, sample_rate: int,
              gen: torch.Generator) -> torch.Tensor:
    """Add noise of ``kind`` at ``snr_db`` relative to the power of ``x``'s active part
    (samples above -40 dB of the peak envelope)."""
    active = x[x.abs() > x.abs().max() * 0.01]
    p_sig = active.pow(2).mean() if active.numel() else x.pow(2).mean()
    noise = _shaped_noise(x.numel(), kind, sample_rate, gen)
    return x + noise * torch.sqrt(p_sig / 10.0 ** (snr_db / 10.0))


def synthetic_rir(rt60_s: float, sample_rate: int, gen: torch.Generator) -> torch.Tensor:
    """Room impulse response ``(L,)``: direct path, sparse early reflections (5-50 ms) and an
    exponentially decaying Gaussian tail with the given RT60 (Polack's statistical model)."""
    length = int(rt60_s * sample_rate)
    t = torch.arange(length, dtype=torch.float64) / sample_rate
    decay = torch.exp(-6.9078 * t / rt60_s)  # -60 dB at rt60
    h = torch.randn(length, generator=gen, dtype=torch.float64) * decay * 0.3
    onset = int(0.005 * sample_rate)
    h[:onset] = 0.0
    n_early = 8
    pos = (onset + torch.rand(n_early, generator=gen) * 0.045 * sample_rate).long()
    amp = (torch.rand(n_early, generator=gen).double() * 0.6 + 0.2) * decay[pos]
    h.index_add_(0, pos, amp * torch.sign(torch.randn(n_early, generator=gen, dtype=torch.float64)))
    h[0] = 1.0
    return h / h.norm()


def reverberate(x: torch.Tensor, rir: torch.Tensor) -> torch.Tensor:
    """Convolve with ``rir`` (FFT), keep the first ``len(x)`` samples (direct path at 0, so
    boundaries do not move), rescaled to the input power."""
    n = x.numel() + rir.numel() - 1
    nfft = _fast_len(n)
    y = torch.fft.irfft(torch.fft.rfft(x, nfft) * torch.fft.rfft(rir, nfft), nfft)[: x.numel()]
    return y * (x.pow(2).mean() / y.pow(2).mean().clamp_min(1e-12)).sqrt()


def telephone(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Telephone channel: 300-3400 Hz band-pass (smooth FFT mask) then 8-bit mu-law coding."""
    n = x.numel()
    m = _fast_len(n)
    f = torch.fft.rfftfreq(m, 1.0 / sample_rate, dtype=x.dtype)
    mask = torch.sigmoid((f - 300.0) / 40.0) * torch.sigmoid((3400.0 - f) / 80.0)
    y = torch.fft.irfft(torch.fft.rfft(x, m) * mask, n=m)[:n]
    peak = y.abs().max().clamp_min(1e-9)
    q = AF.mu_law_encoding(y / peak, 256)
    return AF.mu_law_decoding(q.to(y.dtype), 256) * peak      # integer codes would decode in float32


def apply_condition(x: torch.Tensor, cond: Condition, sample_rate: int,
                    gen: torch.Generator) -> torch.Tensor:
    """Reverb -> telephone -> noise -> level, as a far-field talker on a noisy line, computed in
    float64 (see the module docstring). Returns ``(N,)`` float32 scaled to ``cond.level_dbfs`` RMS
    and clipped to [-1, 1)."""
    x = x.to(torch.float64)
    if cond.rt60_s is not None:
        x = reverberate(x, synthetic_rir(cond.rt60_s, sample_rate, gen))
    if cond.telephone:
        x = telephone(x, sample_rate)
    if cond.noise is not None:
        x = add_noise(x, cond.noise, cond.snr_db, sample_rate, gen)
    rms = x.pow(2).mean().sqrt().clamp_min(1e-9)
    x = x * (10.0 ** (cond.level_dbfs / 20.0) / rms)
    return x.clamp(-1.0, 32767.0 / 32768.0).to(torch.float32)


def to_int16(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1) -> int16 by rounding (no dither: deterministic)."""
    return torch.round(x * 32768.0).clamp(-32768, 32767).to(torch.int16)
