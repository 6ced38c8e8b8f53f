"""Speakers of the generated corpus: a speaker is a fixed voice configuration (engine, voice,
rate, pitch, vocal-tract warp, channel condition) with a TIMIT-like id and dialect region."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from asr.corpus.synth.config import Difficulty, SynthConfig
from asr.corpus.synth.degrade import Condition
from asr.corpus.synth.text import DATA_DIR

VOICES = DATA_DIR / "tts_voices.tsv"
TIMIT_LISTS = DATA_DIR / "timit"


@dataclass(frozen=True)
class Voice:
    engine: str  # "espeak" | "flite" | "festival"
    name: str
    gender: str  # "m" | "f"
    use: str  # "train" | "test"


@dataclass(frozen=True)
class Speaker:
    """One generated speaker. ``rate`` is wpm (espeak) or duration stretch (flite, festival);
    ``pitch`` is espeak's 0..100 or the mean F0 target in Hz (None: voice default)."""

    spk_id: str  # upper case, e.g. MABC0
    gender: str
    split: str  # TRAIN | TEST (LDC part); dev/test membership comes from the speaker lists
    dr: int
    voice: Voice
    rate: float
    pitch: float | None
    pitch_range: float
    vtl_warp: float
    condition: Condition

    def config_key(self) -> tuple:
        """Everything but the identity: two speakers with equal keys would sound the same."""
        return (self.voice, self.rate, self.pitch, self.pitch_range, self.vtl_warp,
                self.condition)

    def as_row(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("voice"), d.pop("condition")
        d.update(engine=self.voice.engine, voice=self.voice.name,
                 condition=self.condition.describe())
        return d


def load_voices(path: str | Path = VOICES) -> list[Voice]:
    """Voice identities from ``data/tts_voices.tsv``; ValueError names a malformed line."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 4 or cols[2] not in ("m", "f") or cols[3] not in ("train", "test"):
            raise ValueError(f"{path}:{n}: expected engine<TAB>voice<TAB>m|f<TAB>train|test")
        out.append(Voice(*cols))
    return out


def load_speaker_list(name: str) -> list[str]:
    """``dev_spk.list`` / ``core_test_spk.list`` of ``data/timit`` (lower-case ids)."""
    return [ln.strip().lower() for ln in (TIMIT_LISTS / name).read_text().splitlines()
            if ln.strip()]


def _uniform(g: torch.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return round(lo + (hi - lo) * torch.rand(1, generator=g).item(), 3)


def _choice(g: torch.Generator, items: list):  # noqa: ANN202 - generic
    return items[int(torch.randint(len(items), (1,), generator=g).item())]


def _pick_eval_ids(ids: list[str], n: int) -> list[str]:
    """``n`` ids from a TIMIT list, about one female in three (TIMIT's ratio), list order."""
    males = [s for s in ids if s[0] == "m"]
    females = [s for s in ids if s[0] == "f"]
    out: list[str] = []
    for i in range(n):
        want_f = i % 3 == 1
        pool = females if (want_f and females) or not males else males
        out.append(pool.pop(0))
    return out


def _condition(g: torch.Generator, d: Difficulty) -> Condition:
    noisy = torch.rand(1, generator=g).item() < d.p_noise
    noise = _choice(g, list(d.noise_types)) if noisy else None
    snr = _uniform(g, d.snr_db)
    reverb = torch.rand(1, generator=g).item() < d.p_reverb
    rt60 = _uniform(g, d.rt60_s)
    tel = torch.rand(1, generator=g).item() < d.p_telephone
    level = _uniform(g, d.level_dbfs)
    return Condition(noise=noise, snr_db=snr if noisy else math.inf,
                     rt60_s=rt60 if reverb else None, telephone=tel, level_dbfs=level)


def _speaker(g: torch.Generator, spk_id: str, split: str, dr: int, voices: list[Voice],
             d: Difficulty) -> Speaker:
    gender = spk_id[0].lower()
    pool = [v for v in voices if v.gender == gender] or voices
    voice = _choice(g, pool)
    if voice.engine == "espeak":
        rate, pitch = _uniform(g, d.espeak_rate_wpm), _uniform(g, d.espeak_pitch)
        prange = _uniform(g, d.espeak_range)
    else:
        rate = _uniform(g, d.flite_stretch)
        f0 = d.flite_f0_female_hz if voice.gender == "f" else d.flite_f0_male_hz
        pitch = None if voice.name == "rms" else _uniform(g, f0)  # rms ignores the F0 target
        # festival diphone voices: same knobs (Duration_Stretch, int_lr_params target mean)
        prange = 0.0
    return Speaker(spk_id=spk_id, gender=gender, split=split, dr=dr, voice=voice, rate=rate,
                   pitch=pitch, pitch_range=prange, vtl_warp=_uniform(g, d.vtl_warp),
                   condition=_condition(g, d))


def make_speakers(cfg: SynthConfig) -> dict[str, list[Speaker]]:
    """Speakers per split ``{"train", "dev", "test"}``, deterministic in ``cfg.seed``.

    dev/test ids come from ``data/timit/dev_spk.list`` / ``core_test_spk.list`` (so the
    TIMIT reader assigns them exactly as on LDC TIMIT); train ids are random TIMIT-like ids
    (gender letter, three initials, digit) that collide with neither list. Held-out voices
    (``use == test``) are given to every fourth test speaker and never to train or dev.
    """
    counts = cfg.counts
    d = cfg.difficulty
    voices = load_voices()
    if cfg.engines is not None:
        unknown = sorted(set(cfg.engines) - {v.engine for v in voices})
        if unknown:
            raise ValueError(f"unknown TTS engine(s) {unknown}; choose from "
                             f"{sorted({v.engine for v in voices})}")
        voices = [v for v in voices if v.engine in cfg.engines]
    train_voices = [v for v in voices if v.use == "train"]
    test_voices = [v for v in voices if v.use == "test"]
    dev_all, test_all = load_speaker_list("dev_spk.list"), load_speaker_list("core_test_spk.list")
    if counts.dev > len(dev_all) or counts.test > len(test_all):
        raise ValueError(f"{counts.dev} dev / {counts.test} test speakers asked for; the TIMIT lists "
                         f"hold {len(dev_all)} / {len(test_all)}")
    g = torch.Generator().manual_seed(cfg.seed)
    taken = set(dev_all) | set(test_all)
    letters = "abcdefghijklmnopqrstuvwxyz"
    train: list[Speaker] = []
    for i in range(counts.train):
        gender = "f" if i % 3 == 1 else "m"
        while True:
            ids = torch.randint(26, (3,), generator=g).tolist()
            spk = gender + "".join(letters[k] for k in ids) + "0"
            if spk not in taken:
                break
        taken.add(spk)
        train.append(_speaker(g, spk.upper(), "TRAIN", i % 8 + 1, train_voices, d))
    dev = [_speaker(g, s.upper(), "TEST", i % 8 + 1, train_voices, d)
           for i, s in enumerate(_pick_eval_ids(dev_all, counts.dev))]
    test = []
    for i, s in enumerate(_pick_eval_ids(test_all, counts.test)):
        pool = test_voices if i % 4 == 0 else train_voices
        test.append(_speaker(g, s.upper(), "TEST", test_all.index(s) // 3 + 1, pool, d))
    seen = {s.config_key() for s in train}
    for s in dev + test:
        if s.config_key() in seen:
            raise AssertionError(f"eval speaker {s.spk_id} repeats a training configuration")
    return {"train": train, "dev": dev, "test": test}
