"""Engine phone segments -> TIMIT 61-label segments, via ``data/tts_phone_map.tsv``."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from asr.corpus.synth.text import DATA_DIR

TTS_PHONE_MAP = DATA_DIR / "tts_phone_map.tsv"

Segment = tuple[str, int, int, int | None]  # (label, start_sample, end_sample, word_index)


@lru_cache(maxsize=4)
def load_tts_phone_map(path: str | Path = TTS_PHONE_MAP) -> dict[tuple[str, str], tuple[str, ...]]:
    """``(engine, engine_phone) -> TIMIT labels``; raises ValueError naming a malformed line."""
    table: dict[tuple[str, str], tuple[str, ...]] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) < 3 or not cols[2].split():
            raise ValueError(f"{path}:{n}: expected engine<TAB>phone<TAB>timit labels: {line!r}")
        table[(cols[0], cols[1])] = tuple(cols[2].split())
    return table


def to_timit(segs: list[Segment], engine: str, n_samples: int,
             table: dict[tuple[str, str], tuple[str, ...]] | None = None) -> list[Segment]:
    """Map engine segments to TIMIT labels.

    Units mapped to several labels are split evenly in time; zero-length segments are
    dropped; adjacent pauses merge; pauses at either edge become ``h#`` and the segments are
    made to cover ``[0, n_samples)`` exactly (gaps join the preceding segment).
    Raises ValueError on an engine phone missing from the map.
    """
    table = table or load_tts_phone_map()
    out: list[Segment] = []
    for sym, start, end, wi in segs:
        labels = table.get((engine, sym))
        if labels is None:
            raise ValueError(f"{engine} phone {sym!r} has no entry in {TTS_PHONE_MAP}")
        k = len(labels)
        for j, lab in enumerate(labels):
            s = start + (end - start) * j // k
            e = start + (end - start) * (j + 1) // k
            if e <= s:
                continue
            if lab == "pau" and out and out[-1][0] == "pau":
                out[-1] = ("pau", out[-1][1], e, -1)
            else:
                out.append((lab, s, e, wi))
    if not out:
        raise ValueError(f"{engine} produced no phone segments")
    # contiguous cover of [0, n_samples)
    fixed: list[Segment] = []
    for i, (lab, s, e, wi) in enumerate(out):
        s = 0 if i == 0 else fixed[-1][2]
        e = n_samples if i == len(out) - 1 else max(e, s)
        if e > s:
            fixed.append((lab, s, e, wi))
    if fixed[0][0] == "pau":
        fixed[0] = ("h#",) + fixed[0][1:]
    if fixed[-1][0] == "pau":
        fixed[-1] = ("h#",) + fixed[-1][1:]
    return fixed


def rescale(segs: list[Segment], n_old: int, n_new: int) -> list[Segment]:
    """Boundaries of audio resampled from ``n_old`` to ``n_new`` samples (kept contiguous)."""
    out: list[Segment] = []
    for lab, s, e, wi in segs:
        s2 = (s * n_new + n_old // 2) // n_old
        e2 = (e * n_new + n_old // 2) // n_old
        if e2 > s2:
            out.append((lab, s2, e2, wi))
    if out:
        out[0] = (out[0][0], 0, out[0][2], out[0][3])
        out[-1] = (out[-1][0], out[-1][1], n_new, out[-1][3])
    return out


def pad_edges(segs: list[Segment], lead: int, trail: int) -> list[Segment]:
    """Boundaries after ``lead``/``trail`` samples of silence are added around the audio:
    the edge ``h#`` segments grow (or are created), as TIMIT starts and ends with ``h#``."""
    out = [(lab, s + lead, e + lead, wi) for lab, s, e, wi in segs]
    if lead:
        if out[0][0] == "h#":
            out[0] = ("h#", 0, out[0][2], -1)
        else:
            out.insert(0, ("h#", 0, lead, -1))
    if trail:
        end = out[-1][2] + trail
        if out[-1][0] == "h#":
            out[-1] = ("h#", out[-1][1], end, -1)
        else:
            out.append(("h#", out[-1][2], end, -1))
    return out
