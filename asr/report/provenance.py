"""From what run a report comes: ``EXP/run_info.json`` (written by the recipe at the start of
every run), the corpus identity, per-stage wall time and peak memory (``EXP/stage_times.tsv``)
and the skip / failure counts of every stage (``log/counts.json``).

Formats (``/work/notes/CONTRACTS.md`` items 1-3):

* ``stage_times.tsv``: ``<num>\\t<name>\\t<wall s>[\\t<peak RSS MiB>]`` per finished stage,
  no header; a stage run twice keeps its last line.
* ``log/counts.json`` in a stage, decode or ``decode_*/si`` directory:
  ``{"<what>": {"count": int, "utts": [first <= 20 ids]}}``.
* ``run_info.json``: ``commit`` (or null), ``dirty`` (tracked files modified), ``untracked``
  (first 20 untracked paths), ``config`` (path), ``config_text``,
  ``seed``, ``corpus``, ``command``, ``machine`` {``cores``, ``gpu``, ``torch``}, ``started``;
  ``earlier_runs`` keeps the commit / dirty flag / start / command of earlier runs into the
  same directory (a resumed run may mix stages of two code versions).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from asr.datadir.table import read_table
from asr.jobs.atomic import write_json_atomic

RUN_INFO = "run_info.json"
CODE_DIR = Path(__file__).resolve().parents[2]


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, object]:
    """Cores, CPU model and the vector instruction set torch's CPU kernels dispatch to (float
    results can differ in the last bits between e.g. AVX2 and AVX512 machines, so runs compare
    bit for bit only on the same kind), GPU name (None without CUDA), torch and Python versions."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older torch
        isa = None
    return {"cores": os.cpu_count(), "cpu": _cpu_model(), "cpu_isa": isa, "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version()}


def write_run_info(exp: str | Path, config: str | Path, seed: int, corpus: str | Path, command: str,
                   code_dir: Path = CODE_DIR) -> Path:
    """Write ``EXP/run_info.json`` (temporary name + rename) for a run starting now, with the
    commit of the code in ``code_dir`` (the checkout this ``asr`` package was loaded from)."""
    exp = Path(exp)
    config = Path(config)
    out = exp / RUN_INFO
    earlier: list[dict] = []
    if out.is_file():
        try:
            old = json.loads(out.read_text())
            earlier = old.get("earlier_runs", []) + [{k: old.get(k) for k in ("commit", "dirty", "started",
                                                                             "command")}]
        except (json.JSONDecodeError, AttributeError):
            earlier = []
    head = _git(["rev-parse", "HEAD"], code_dir)
    status = _git(["status", "--porcelain"], code_dir)
    lines = status.splitlines() if status is not None else []
    info = {
        "commit": head.strip() if head else None,
        # tracked files changed since the commit; untracked ones listed apart (a worktree's
        # .venv symlink is untracked and would make every run "dirty")
        "dirty": any(not ln.startswith("??") for ln in lines) if status is not None else None,
        "untracked": [ln[3:] for ln in lines if ln.startswith("??")][:20],
        "config": str(config.resolve()),
        "config_text": config.read_text(encoding="utf-8"),
        "seed": seed,
        "corpus": str(Path(corpus).resolve()) if corpus else None,
        "command": command,
        "machine": machine_info(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "earlier_runs": earlier,
    }
    exp.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, info, indent=1)
    return out


def read_run_info(exp: Path) -> dict | None:
    """``EXP/run_info.json`` or None (absent or unreadable)."""
    try:
        data = json.loads((exp / RUN_INFO).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class SetFacts:
    speakers: int
    utts: int
    hours: float | None


CORPUS_SUFFIXES = (".wav", ".phn", ".wrd", ".txt", ".tsv")


def data_dir_hours(d: Path) -> float | None:
    """Hours of audio of data dir ``d`` from its ``utt2dur`` (None when it has none)."""
    if not (d / "utt2dur").is_file():
        return None
    return sum(float(v) for v in read_table(d / "utt2dur", what="utterance", columns=2).values()) / 3600.0


def corpus_identity(exp: Path, corpus: Path | None) -> tuple[str, str, dict[str, SetFacts]]:
    """(hash, what was hashed, facts per set) of the corpus of ``exp``: the SHA-256 (first 16
    hex digits) of every audio and label file of the corpus directory (``*.WAV``, ``*.PHN``,
    ``*.WRD``, ``*.TXT``, ``DOC/SPEAKERS.TSV``: relative path and bytes, in path order), so two
    runs compare equal only on the same audio, not just the same plan; else of the ``text``
    files of ``EXP/data/{train,dev,test}``; speakers, utterances and hours per set from the
    data directories (hours from ``utt2dur``)."""
    corpus = corpus or exp / "corpus"
    h = hashlib.sha256()
    files = sorted(p for p in corpus.rglob("*") if p.suffix.lower() in CORPUS_SUFFIXES and p.is_file()) \
        if corpus.is_dir() else []
    if files:
        for p in files:
            h.update(str(p.relative_to(corpus)).encode() + b"\0")
            h.update(p.read_bytes())
        what = f"the {len(files)} audio and label files of `{corpus}`"
    else:
        for s in ("train", "dev", "test"):
            f = exp / "data" / s / "text"
            if f.is_file():
                h.update(f.read_bytes())
        what = "`data/{train,dev,test}/text` (corpus directory not found)"
    facts = {}
    for s in ("train", "dev", "test"):
        d = exp / "data" / s
        if not (d / "utt2spk").is_file():
            continue
        utt2spk = read_table(d / "utt2spk", what="utterance", columns=2)
        facts[s] = SetFacts(len(set(utt2spk.values())), len(utt2spk), data_dir_hours(d))
    return h.hexdigest()[:16], what, facts


@dataclass
class StageTime:
    num: int
    name: str
    seconds: int
    peak_mb: int | None


def read_stage_times(exp: Path) -> list[StageTime]:
    """The last line of every stage of ``EXP/stage_times.tsv`` (3 or 4 columns), by stage
    number; a malformed line is a ValueError naming it."""
    f = exp / "stage_times.tsv"
    if not f.is_file():
        return []
    last: dict[str, StageTime] = {}
    for n, line in enumerate(f.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            if len(parts) not in (3, 4):
                raise ValueError
            st = StageTime(int(parts[0]), parts[1], int(parts[2]), int(parts[3]) if len(parts) == 4 else None)
        except ValueError:
            raise ValueError(f"{f}:{n}: expected num<TAB>name<TAB>seconds[<TAB>peak MiB], got {line!r}") from None
        last[st.name] = st
    return sorted(last.values(), key=lambda s: s.num)


@dataclass
class CountEntry:
    where: str
    what: str
    count: int
    ids: list[str]


def read_counts(exp: Path) -> tuple[list[CountEntry], list[str]]:
    """Every entry of ``EXP/*/log/counts.json``, ``EXP/*/decode_*/log/counts.json`` and
    ``EXP/*/decode_*/si/log/counts.json`` (path relative to EXP), and the files that could not
    be read (named, not fatal: the report says so)."""
    files = sorted({*exp.glob("*/log/counts.json"), *exp.glob("*/decode_*/log/counts.json"),
                    *exp.glob("*/decode_*/si/log/counts.json"), *exp.glob("data/*/log/counts.json")})
    out, bad = [], []
    for f in files:
        where = str(f.parent.parent.relative_to(exp))
        try:
            data = json.loads(f.read_text())
            for what, v in data.items():
                out.append(CountEntry(where, what, int(v["count"]), [str(u) for u in v.get("utts", [])]))
        except (OSError, json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
            bad.append(f"{f.relative_to(exp)} ({type(e).__name__}: {e})")
    return out, bad
