"""Network size by the amount of training audio (``--units auto``).

Kaldi's TIMIT recipe (3.1 h of training audio) uses 6 x 1024 hidden units. Below 1.5 h the
1024-unit layers over-fit and cost four times the compute of 512-unit ones, which is what
Kaldi's nnet1 was run with on our 0.6 h held-back corpus; so ``auto`` picks 512 below 1.5 h of
training audio and 1024 from there on.
"""
from __future__ import annotations

from pathlib import Path

AUTO_UNITS_MIN_HOURS = 1.5   # from this many training hours on, 1024 units per layer


def units_for_hours(hours: float) -> int:
    """Hidden units per layer for ``hours`` of training audio (rounded to 0.01 h first)."""
    return 1024 if round(hours, 2) >= AUTO_UNITS_MIN_HOURS else 512


def training_hours(data_dir: str | Path) -> float:
    """Hours of audio in ``data_dir/utt2dur`` (seconds per utterance)."""
    from asr.datadir.table import read_table

    path = Path(data_dir) / "utt2dur"
    if not path.is_file():
        raise FileNotFoundError(f"--units auto needs {path} (the durations of the training utterances)")
    return sum(float(v) for v in read_table(path, what="utterance", columns=2).values()) / 3600.0


def units_arg(text: str) -> int | str:
    """argparse type of ``--units``: a positive integer or ``auto``."""
    if text == "auto":
        return text
    value = int(text)
    if value < 1:
        raise ValueError(f"--units must be >= 1 or auto, got {text}")
    return value


def resolve_units(units: int | str | None, data_dir: str | Path) -> int | None:
    """``auto`` -> the size for the hours of ``data_dir``; anything else unchanged."""
    if units != "auto":
        return units
    hours = training_hours(data_dir)
    chosen = units_for_hours(hours)
    print(f"DNN size by data: {hours:.2f} h of training audio -> {chosen} units per layer")
    return chosen
