"""An independent NumPy implementation of Kaldi's MFCC and log-mel filterbank features, written
from Kaldi's documentation and sources (``feat/feature-window.cc`` ``ProcessWindow``,
``feat/mel-computations.cc`` ``MelBanks``, ``feat/feature-mfcc.cc``, ``feat/feature-fbank.cc``,
``matrix/matrix-functions.cc`` ``ComputeDctMatrix``, ``feat/feature-functions.cc``
``ComputeLifterCoeffs``), in float64, as the reference the toolkit's features are tested against.

Per frame (``snip_edges=true``: frame ``t`` is samples ``[t*shift, t*shift + length)``, frames
that would run past the end are dropped):
  1. remove the DC offset (subtract the frame mean);
  2. raw log energy ``log(max(sum x^2, FLT_EPSILON))`` here, before pre-emphasis and window
     (``raw_energy=true``), floored at ``log(energy_floor)`` when ``energy_floor > 0``;
  3. pre-emphasis ``x[i] -= 0.97 x[i-1]`` for ``i > 0``, ``x[0] -= 0.97 x[0]``;
  4. Povey window ``(0.5 - 0.5 cos(2 pi i / (N-1)))^0.85``;
  5. zero-pad to the next power of two, |FFT|^2 (power spectrum);
  6. triangular mel filters, mel(f) = 1127 ln(1 + f / 700), ``num_bins`` filters equally spaced
     in mel between ``low_freq`` = 20 Hz and the Nyquist frequency, each spanning two spacings,
     evaluated at the FFT bin centres ``i * fs / N_fft`` for ``i < N_fft / 2``;
  7. ``log(max(energy, FLT_EPSILON))``.
fbank stops there (``use_energy=false``). MFCC: orthonormal DCT-II rows 0..num_ceps-1 of the log
mel energies (row 0 scaled sqrt(1/N), others sqrt(2/N)), cepstral lifter
``1 + L/2 sin(pi i / L)`` (L = 22), and with ``use_energy=true`` C0 replaced by the raw log
energy of step 2.
"""
from __future__ import annotations

import numpy as np

FLT_EPSILON = float(np.finfo(np.float32).eps)


def _frames(wave: np.ndarray, fs: int, length_ms: float = 25.0, shift_ms: float = 10.0) -> np.ndarray:
    n, s = int(fs * length_ms / 1000), int(fs * shift_ms / 1000)
    t = 0 if wave.size < n else 1 + (wave.size - n) // s
    return np.stack([wave[i * s:i * s + n] for i in range(t)]).astype(np.float64)


def _mel(f: np.ndarray | float) -> np.ndarray | float:
    return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)


def mel_banks(num_bins: int, fs: int, n_fft: int, low_freq: float = 20.0) -> np.ndarray:
    """(num_bins, n_fft // 2 + 1) triangular weights on the power-spectrum bins (Nyquist bin 0)."""
    lo, hi = _mel(low_freq), _mel(fs / 2.0)
    delta = (hi - lo) / (num_bins + 1)
    freqs = np.arange(n_fft // 2) * fs / n_fft
    mel = _mel(freqs)
    w = np.zeros((num_bins, n_fft // 2 + 1))
    for b in range(num_bins):
        left, centre, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
        inside = (mel > left) & (mel < right)
        up = (mel - left) / (centre - left)
        down = (right - mel) / (right - centre)
        w[b, :n_fft // 2] = np.where(inside, np.where(mel <= centre, up, down), 0.0)
    return w


def _log_mel(wave: np.ndarray, fs: int, num_bins: int, energy_floor: float) -> tuple[np.ndarray, np.ndarray]:
    x = _frames(wave, fs)
    x = x - x.mean(axis=1, keepdims=True)
    log_e = np.log(np.maximum((x * x).sum(axis=1), FLT_EPSILON))
    if energy_floor > 0:
        log_e = np.maximum(log_e, np.log(energy_floor))
    y = x.copy()
    y[:, 1:] -= 0.97 * x[:, :-1]
    y[:, 0] -= 0.97 * x[:, 0]
    n = x.shape[1]
    y *= (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / (n - 1))) ** 0.85
    n_fft = 1 << (n - 1).bit_length()
    power = np.abs(np.fft.rfft(y, n=n_fft, axis=1)) ** 2
    mel = power @ mel_banks(num_bins, fs, n_fft).T
    return np.log(np.maximum(mel, FLT_EPSILON)), log_e


def fbank(wave: np.ndarray, fs: int = 16000, num_bins: int = 40, use_energy: bool = False,
          energy_floor: float = 1.0) -> np.ndarray:
    """(T, num_bins [+1]) log-mel energies; with ``use_energy`` the raw log energy is column 0."""
    logmel, log_e = _log_mel(wave, fs, num_bins, energy_floor)
    return np.concatenate([log_e[:, None], logmel], axis=1) if use_energy else logmel


def mfcc(wave: np.ndarray, fs: int = 16000, num_bins: int = 23, num_ceps: int = 13, use_energy: bool = True,
         energy_floor: float = 1.0, lifter: float = 22.0) -> np.ndarray:
    """(T, num_ceps) MFCCs as Kaldi's ``compute-mfcc-feats`` (dither 0)."""
    logmel, log_e = _log_mel(wave, fs, num_bins, energy_floor)
    k = np.arange(num_bins)
    dct = np.sqrt(2.0 / num_bins) * np.cos(np.pi / num_bins * np.outer(np.arange(num_ceps), k + 0.5))
    dct[0] = np.sqrt(1.0 / num_bins)
    c = logmel @ dct.T
    c *= 1.0 + 0.5 * lifter * np.sin(np.pi * np.arange(num_ceps) / lifter)
    if use_energy:
        c[:, 0] = log_e
    return c
