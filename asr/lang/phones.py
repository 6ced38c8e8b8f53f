"""The TIMIT phone sets and the 61 -> 48 -> 39 folding of Lee & Hon (1989).

The map lives in ``data/timit/phones.60-48-39.map`` (columns: 61-label, 48-label, 39-label;
``q`` has no mapping and is deleted), as in Kaldi's TIMIT recipe. Model phone ids are
1..48 in the sorted order of the 48-set (0 is epsilon / "no context").
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
DEFAULT_MAP = DATA_DIR / "timit" / "phones.60-48-39.map"
SILENCE = "sil"


@dataclass(frozen=True)
class PhoneMap:
    """Foldings between the TIMIT phone sets.

    ``to48[p61]`` / ``to39[p61]`` are None for labels that are deleted (``q``);
    ``fold48to39[p48]`` folds a 48-set phone to the scoring set.
    """

    to48: dict[str, str | None]
    to39: dict[str, str | None]
    fold48to39: dict[str, str]

    @property
    def phones61(self) -> list[str]:
        return sorted(self.to48)

    @property
    def phones48(self) -> list[str]:
        return sorted({p for p in self.to48.values() if p})

    @property
    def phones39(self) -> list[str]:
        return sorted({p for p in self.to39.values() if p})


def load_phone_map(path: str | Path = DEFAULT_MAP) -> PhoneMap:
    """Read the 61/48/39 map; raises ValueError naming the line on a malformed row."""
    path = Path(path)
    to48: dict[str, str | None] = {"h#": SILENCE}
    to39: dict[str, str | None] = {"h#": SILENCE}
    fold: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) == 1:
            to48[cols[0]] = None
            to39[cols[0]] = None
            continue
        if len(cols) != 3:
            raise ValueError(f"{path}:{n}: expected 1 or 3 columns, got {len(cols)}: {line!r}")
        p61, p48, p39 = cols
        to48[p61], to39[p61] = p48, p39
        if fold.get(p48, p39) != p39:
            raise ValueError(f"{path}:{n}: 48-phone {p48!r} folds to both {fold[p48]!r} and {p39!r}")
        fold[p48] = p39
    return PhoneMap(to48=to48, to39=to39, fold48to39=fold)


def load_phone_set(path: str | Path = DEFAULT_MAP) -> list[str]:
    """The 48 model phones in id order: ``phones[i - 1]`` has id ``i``."""
    return load_phone_map(path).phones48
