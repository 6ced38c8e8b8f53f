"""Read, validate and atomically write Kaldi-style data directories."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from asr.datadir.table import read_table, read_table_rows
from asr.lang.phones import load_phone_map

REQUIRED = ("wav.scp", "text", "utt2spk", "spk2utt")
KNOWN = REQUIRED + ("text.39", "text.wrd", "phone_times", "spk2gender", "utt2dur")


@dataclass
class DataDir:
    """In-memory data directory. Keys are utterance ids ``<spk>_<sent>`` (lower case).

    ``phone_times[utt]`` is a list of ``(start_s, end_s, timit61_label)``; optional maps may be
    empty (then their file is not written). ``extra`` lists other files found when reading
    (``feats.scp`` ...); ``write_data_dir`` carries them over when rewriting in place.
    """

    wav: dict[str, str]
    text: dict[str, list[str]]
    utt2spk: dict[str, str]
    text39: dict[str, list[str]] = field(default_factory=dict)
    text_wrd: dict[str, list[str]] = field(default_factory=dict)
    phone_times: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict)
    spk2gender: dict[str, str] = field(default_factory=dict)
    utt2dur: dict[str, float] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)

    @property
    def utts(self) -> list[str]:
        return sorted(self.utt2spk)

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for u in sorted(self.utt2spk):
            out.setdefault(self.utt2spk[u], []).append(u)
        return dict(sorted(out.items()))

    def subset(self, utts: list[str]) -> "DataDir":
        """The data directory restricted to ``utts`` (unknown ids raise KeyError)."""
        keep = set(utts)
        missing = keep - set(self.utt2spk)
        if missing:
            raise KeyError(f"utterances not in data dir: {sorted(missing)[:5]}")

        def f(d: dict) -> dict:
            return {k: v for k, v in d.items() if k in keep}

        spks = {self.utt2spk[u] for u in keep}
        return DataDir(wav=f(self.wav), text=f(self.text), utt2spk=f(self.utt2spk),
                       text39=f(self.text39), text_wrd=f(self.text_wrd),
                       phone_times=f(self.phone_times),
                       spk2gender={s: g for s, g in self.spk2gender.items() if s in spks},
                       utt2dur=f(self.utt2dur))


# ------------------------------------------------------------------------------------ reading
def _read_table(path: Path) -> list[tuple[int, str, str]]:
    """``(line_no, key, rest)`` of a data-dir file: no blank lines allowed."""
    return read_table_rows(path, blank_lines=False)


def _read_map(path: Path) -> dict[str, str]:
    return read_table(path, blank_lines=False)


def read_data_dir(path: str | Path) -> DataDir:
    """Read a data directory (``REQUIRED`` files must exist; the others are optional).
    Raises FileNotFoundError / ValueError naming the file and line."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"data directory {p} does not exist")
    for name in REQUIRED:
        if not (p / name).is_file():
            raise FileNotFoundError(f"{p / name} is missing")
    dd = DataDir(
        wav=_read_map(p / "wav.scp"),
        text={k: v.split() for k, v in _read_map(p / "text").items()},
        utt2spk=_read_map(p / "utt2spk"),
    )
    if (p / "text.39").is_file():
        dd.text39 = {k: v.split() for k, v in _read_map(p / "text.39").items()}
    if (p / "text.wrd").is_file():
        dd.text_wrd = {k: v.split() for k, v in _read_map(p / "text.wrd").items()}
    if (p / "spk2gender").is_file():
        dd.spk2gender = _read_map(p / "spk2gender")
    if (p / "utt2dur").is_file():
        dd.utt2dur = {}
        for n, k, v in _read_table(p / "utt2dur"):
            try:
                dd.utt2dur[k] = float(v)
            except ValueError:
                raise ValueError(f"{p / 'utt2dur'}:{n}: bad duration {v!r}") from None
    if (p / "phone_times").is_file():
        for n, k, v in _read_table(p / "phone_times"):
            cols = v.split()
            try:
                seg = (float(cols[0]), float(cols[1]), cols[2])
                if len(cols) != 3:
                    raise IndexError
            except (IndexError, ValueError):
                raise ValueError(f"{p / 'phone_times'}:{n}: expected 'utt start end phone'") from None
            dd.phone_times.setdefault(k, []).append(seg)
    dd.extra = sorted(f.name for f in p.iterdir() if f.name not in KNOWN)
    return dd


# ---------------------------------------------------------------------------------- validation
def _check_sorted(path: Path) -> list[str]:
    keys = [k for _, k, _ in _read_table(path)]
    for i in range(1, len(keys)):
        if keys[i] < keys[i - 1]:
            return [f"{path}:{i + 1}: not sorted (LC_ALL=C): {keys[i - 1]!r} > {keys[i]!r}"]
    return []


def validate_data_dir(path: str | Path, check_wavs: bool = True) -> DataDir:
    """Check a data directory like Kaldi's ``validate_data_dir.sh`` and return it.

    Checks: required files, LC_ALL=C sorting, one utterance set across utterance files,
    ``<spk>_`` utterance prefix, spk2utt/utt2spk agreement, spk2gender m/f, phones of
    ``text`` in the 48-set and of ``text.39`` in the 39-set, ``phone_times`` monotone and
    within ``utt2dur``, wav files present. Raises ValueError listing every problem.
    """
    p = Path(path)
    dd = read_data_dir(p)
    problems: list[str] = []
    for name in KNOWN:
        if (p / name).is_file():
            problems += _check_sorted(p / name)
    utts = set(dd.utt2spk)
    for name, table in (("wav.scp", dd.wav), ("text", dd.text), ("text.39", dd.text39),
                        ("text.wrd", dd.text_wrd), ("utt2dur", dd.utt2dur),
                        ("phone_times", dd.phone_times)):
        if (p / name).is_file() and set(table) != utts:
            diff = sorted(set(table) ^ utts)
            problems.append(f"{p / name}: utterance set differs from utt2spk ({len(diff)} ids, "
                            f"e.g. {diff[:3]})")
    for u, s in dd.utt2spk.items():
        if not u.startswith(s + "_") and u != s:
            problems.append(f"{p / 'utt2spk'}: utterance {u!r} does not start with speaker {s!r}")
            break
    spk2utt = {k: v.split() for k, v in _read_map(p / "spk2utt").items()}
    if spk2utt != dd.spk2utt:
        problems.append(f"{p / 'spk2utt'}: does not match utt2spk")
    if dd.spk2gender:
        if set(dd.spk2gender) != set(spk2utt):
            problems.append(f"{p / 'spk2gender'}: speaker set differs from spk2utt")
        bad = [s for s, g in dd.spk2gender.items() if g not in ("m", "f")]
        if bad:
            problems.append(f"{p / 'spk2gender'}: gender not m/f for {bad[:3]}")
    pm = load_phone_map()
    p48, p39, p61 = set(pm.phones48), set(pm.phones39), set(pm.to48)
    for name, table, allowed in (("text", dd.text, p48), ("text.39", dd.text39, p39)):
        for u, phones in table.items():
            unknown = set(phones) - allowed
            if unknown or not phones:
                problems.append(f"{p / name}: utterance {u}: "
                                + (f"unknown phones {sorted(unknown)}" if unknown else "empty"))
                break
    for u, segs in dd.phone_times.items():
        dur = dd.utt2dur.get(u)
        prev = 0.0
        for s, e, lab in segs:
            if lab not in p61 or e <= s or s < prev - 1e-6 or (dur is not None and e > dur + 0.011):
                problems.append(f"{p / 'phone_times'}: utterance {u}: bad segment {s} {e} {lab}")
                break
            prev = s
    if check_wavs:
        missing = [w for w in dd.wav.values() if not Path(w.split()[0]).exists()]
        if missing and not any(w.rstrip().endswith("|") for w in dd.wav.values()):
            problems.append(f"{p / 'wav.scp'}: {len(missing)} wav files missing, e.g. {missing[0]}")
    if problems:
        raise ValueError(f"invalid data directory {p}:\n  " + "\n  ".join(problems))
    return dd


# ------------------------------------------------------------------------------------- writing
def _fmt_time(t: float) -> str:
    return f"{t:.7f}".rstrip("0").rstrip(".") if t else "0"


def write_data_dir(dd: DataDir, path: str | Path) -> None:
    """Write ``dd`` to ``path`` atomically: everything goes to ``path.tmp/`` which then
    replaces ``path``. Files of an existing ``path`` that ``dd`` does not define (e.g.
    ``feats.scp``) are carried over. Utterance ids must start with ``<spk>_``."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    for u, s in dd.utt2spk.items():
        if not u.startswith(s + "_") and u != s:
            raise ValueError(f"utterance id {u!r} does not start with its speaker {s!r}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)

    def write(name: str, lines: list[str]) -> None:
        (tmp / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    write("wav.scp", [f"{u} {dd.wav[u]}" for u in sorted(dd.wav)])
    write("text", [f"{u} {' '.join(dd.text[u])}" for u in sorted(dd.text)])
    write("utt2spk", [f"{u} {dd.utt2spk[u]}" for u in sorted(dd.utt2spk)])
    write("spk2utt", [f"{s} {' '.join(us)}" for s, us in dd.spk2utt.items()])
    if dd.text39:
        write("text.39", [f"{u} {' '.join(dd.text39[u])}" for u in sorted(dd.text39)])
    if dd.text_wrd:
        write("text.wrd", [f"{u} {' '.join(dd.text_wrd[u])}" for u in sorted(dd.text_wrd)])
    if dd.phone_times:
        write("phone_times", [f"{u} {_fmt_time(s)} {_fmt_time(e)} {lab}"
                              for u in sorted(dd.phone_times) for s, e, lab in dd.phone_times[u]])
    if dd.spk2gender:
        write("spk2gender", [f"{s} {dd.spk2gender[s]}" for s in sorted(dd.spk2gender)])
    if dd.utt2dur:
        write("utt2dur", [f"{u} {_fmt_time(dd.utt2dur[u])}" for u in sorted(dd.utt2dur)])
    if p.is_dir():
        for f in p.iterdir():
            if f.name not in KNOWN and not (tmp / f.name).exists():
                if f.is_dir():
                    shutil.copytree(f, tmp / f.name)
                else:
                    shutil.copy2(f, tmp / f.name)
        old = p.with_name(p.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(p, old)
        os.replace(tmp, p)
        shutil.rmtree(old)
    else:
        p.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, p)
