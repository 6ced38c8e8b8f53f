"""Sizes and difficulty knobs of the generated corpus: every tunable lives here."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Difficulty:
    """Spread of voices and acoustic conditions. One condition is drawn per speaker (a
    speaker = a fixed voice configuration), so all utterances of a speaker share it.

    Units: rates in words/minute (espeak) or duration stretch factors (flite, festival);
    pitch in espeak's 0-100 scale or Hz (flite/festival mean F0 target); SNR in dB over the whole utterance; RT60 in
    seconds; vocal-tract warp as a frequency scale factor (resampling, 1.0 = none).
    """

    espeak_rate_wpm: tuple[float, float] = (135.0, 215.0)
    espeak_pitch: tuple[float, float] = (25.0, 75.0)
    espeak_range: tuple[float, float] = (20.0, 90.0)
    flite_stretch: tuple[float, float] = (0.85, 1.3)
    flite_f0_male_hz: tuple[float, float] = (85.0, 135.0)
    flite_f0_female_hz: tuple[float, float] = (170.0, 230.0)
    vtl_warp: tuple[float, float] = (0.9, 1.1)
    p_noise: float = 0.75
    noise_types: tuple[str, ...] = ("white", "pink", "brown", "babble")
    snr_db: tuple[float, float] = (8.0, 25.0)
    p_reverb: float = 0.5
    rt60_s: tuple[float, float] = (0.2, 0.6)
    p_telephone: float = 0.25
    level_dbfs: tuple[float, float] = (-32.0, -18.0)


@dataclass(frozen=True)
class CorpusSize:
    """Speaker counts per split; every speaker reads 2 SA + 3 SI + 5 SX sentences (TIMIT)."""

    train: int
    dev: int
    test: int


SIZES: dict[str, CorpusSize] = {
    "tiny": CorpusSize(train=6, dev=2, test=2),
    "small": CorpusSize(train=30, dev=6, test=6),
    "default": CorpusSize(train=130, dev=20, test=24),
    "full": CorpusSize(train=462, dev=50, test=24),
}

N_SI, N_SX = 3, 5
SX_READERS = 7  # speakers per SX sentence, as in TIMIT


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a generated corpus (same config -> byte-identical files)."""

    size: str = "default"
    seed: int = 0
    difficulty: Difficulty = field(default_factory=Difficulty)
    speakers: CorpusSize | None = None
    """Speaker counts overriding those of ``size`` (e.g. 60/12/24 for a 0.5 h corpus)."""
    engines: tuple[str, ...] | None = None
    """Only voices of these engines (``espeak``, ``flite``, ``festival``); None: all."""

    @property
    def counts(self) -> CorpusSize:
        if self.speakers is not None:
            c = self.speakers
            if min(c.train, c.dev, c.test) < 1:
                raise ValueError(f"speaker counts must be >= 1, got {c.train}/{c.dev}/{c.test}")
            return c
        if self.size not in SIZES:
            raise ValueError(f"unknown corpus size {self.size!r}; choose from {', '.join(SIZES)}")
        return SIZES[self.size]
