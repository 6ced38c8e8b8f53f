"""Speed perturbation of a data directory (Ko, Peddinti, Povey & Khudanpur 2015, "Audio augmentation
for speech recognition"; Kaldi ``utils/data/perturb_data_dir_speed.sh``).

A speed factor ``f`` plays the audio ``f`` times faster: tempo and pitch both scale by ``f`` and the
duration by ``1 / f`` — what ``sox ... speed f`` does, done here as a band-limited resampling
(``torchaudio.functional.resample``) so no external tool and no randomness is involved. Each
perturbed copy is a new speaker (``sp<f>-<spk>``) with new utterance ids (``sp<f>-<utt>``), as in
Kaldi, and ``utt2orig`` maps every copy back to its source utterance (the DNN trainer keeps a
cross-validation speaker's copies out of training).
"""
from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from asr.datadir.io import DataDir, read_data_dir, write_data_dir

UTT2ORIG = "utt2orig"


def speed_prefix(factor: float) -> str:
    """``sp0.9-``: the id prefix of a copy at ``factor`` (Kaldi's naming)."""
    return f"sp{factor:g}-"


def speed_perturb(wave: Tensor, factor: float, sample_rate: int = 16000) -> Tensor:
    """``wave`` (N,) played ``factor`` times faster, at the same sample rate: about ``N / factor``
    samples. The signal is read as if sampled at ``factor * sample_rate`` and resampled to
    ``sample_rate`` (windowed-sinc, the ratio reduced to small integers)."""
    import torchaudio.functional as F

    if not 0.5 <= factor <= 2.0:
        raise ValueError(f"speed factor {factor} outside [0.5, 2]")
    if factor == 1.0:
        return wave.clone()
    ratio = Fraction(factor).limit_denominator(1000)
    return F.resample(wave.double().unsqueeze(0), ratio.numerator, ratio.denominator)[0].to(wave.dtype)


def perturb_data_dir(src: str | Path, dst: str | Path, factor: float, sample_rate: int = 16000) -> DataDir:
    """Write ``dst``: ``src``'s utterances played ``factor`` times faster (16-bit WAV files under
    ``dst/wav``), with renamed utterances and speakers, durations and phone times divided by
    ``factor``, and ``utt2orig``. Built under ``dst.new`` and renamed, so an interrupted run
    leaves no half-written ``dst``. Errors name the utterance whose audio cannot be read."""
    from asr.features.io import read_wav

    src, dst = Path(src), Path(dst).resolve()
    dd = read_data_dir(src)
    pre = speed_prefix(factor)
    new = dst.with_name(dst.name + ".new")
    shutil.rmtree(new, ignore_errors=True)
    wav_tmp = new.with_name(new.name + ".wav")
    shutil.rmtree(wav_tmp, ignore_errors=True)
    wav_tmp.mkdir(parents=True)
    wav, utt2dur = {}, {}
    for u in dd.utts:
        x, sr = read_wav(u, dd.wav[u], sample_rate)
        y = speed_perturb(x, factor, sr).round().clamp(-32768, 32767).to(torch.int16).numpy()
        name = f"{pre}{u}.wav"
        sf.write(wav_tmp / name, np.ascontiguousarray(y), sr, subtype="PCM_16")
        wav[pre + u] = str(dst / "wav" / name)
        utt2dur[pre + u] = len(y) / sr
    out = DataDir(
        wav=wav,
        text={pre + u: t for u, t in dd.text.items()},
        utt2spk={pre + u: pre + s for u, s in dd.utt2spk.items()},
        text39={pre + u: t for u, t in dd.text39.items()},
        text_wrd={pre + u: t for u, t in dd.text_wrd.items()},
        phone_times={pre + u: [(s / factor, e / factor, p) for s, e, p in segs] for u, segs in dd.phone_times.items()},
        spk2gender={pre + s: g for s, g in dd.spk2gender.items()},
        utt2dur=utt2dur,
    )
    write_data_dir(out, new)
    (new / UTT2ORIG).write_text("".join(f"{pre}{u} {u}\n" for u in dd.utts), encoding="utf-8")
    wav_tmp.rename(new / "wav")
    shutil.rmtree(dst, ignore_errors=True)
    new.rename(dst)
    return out


def read_utt2orig(data_dir: str | Path) -> dict[str, str]:
    """``DATA_DIR/utt2orig`` as {perturbed utterance: source utterance}; {} when absent."""
    from asr.datadir.table import read_table

    p = Path(data_dir) / UTT2ORIG
    return read_table(p, what="utterance", columns=2) if p.is_file() else {}
