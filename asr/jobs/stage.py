"""Skip-if-done markers for stage directories (Kaldi-style recipes, made trustworthy).

A stage writes ``OUT/.done`` as its very last action, holding a hash of the configuration
it ran with. A re-run skips the stage only when the marker exists *and* the hash matches;
a directory without a marker is an interrupted run: the stage resumes from its own
checkpoints (if it keeps any) or starts again from scratch.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from asr.jobs.atomic import write_json_atomic


def config_hash(config: dict[str, Any]) -> str:
    """Stable short hash of a JSON-serialisable config (keys sorted)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def is_done(out_dir: str | Path, config: dict[str, Any]) -> bool:
    """True when ``out_dir/.done`` exists and records the same config hash."""
    marker = Path(out_dir) / ".done"
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("hash") == config_hash(config)
    except (json.JSONDecodeError, OSError):
        return False


def mark_done(out_dir: str | Path, config: dict[str, Any]) -> None:
    """Atomically write the ``.done`` marker for ``config``."""
    write_json_atomic(Path(out_dir) / ".done", {"hash": config_hash(config), "config": config},
                      sort_keys=True, default=str, indent=1)


def clear_done(out_dir: str | Path) -> None:
    """Remove the marker (a stage about to rewrite its directory calls this first)."""
    try:
        (Path(out_dir) / ".done").unlink()
    except FileNotFoundError:
        pass


class StageFailed(RuntimeError):
    """A stage could not do what it was asked (diverged training, nothing decoded, ...).

    The message names the cause (utterance, epoch, file); the CLI prints it and exits 1, and the
    stage leaves no ``.done`` marker (it raises before ``mark_done``)."""


COUNTS_SHOWN = 20


def write_counts(out_dir: str | Path, counts: dict[str, list[str]]) -> dict[str, dict]:
    """Record what a stage skipped or worked around in ``out_dir/log/counts.json``.

    ``counts``: kind (``retry_beam``, ``partial_lattice``, ``not_decoded``,
    ``nonfinite_lattices``, ``skipped_utts``, ...) -> the ids concerned (utterances; speakers for
    speaker-level kinds). Stored as ``{kind: {"count": n, "utts": [first 20 ids]}}``; kinds
    already in the file and not in ``counts`` are kept (several steps of a stage may write), a
    kind given again is replaced (a rerun writes its own count, 0 included). Atomic (tmp + rename).
    Returns the whole file's content.
    """
    log_dir = Path(out_dir) / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "counts.json"
    old: dict[str, dict] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = {}
    for kind, ids in counts.items():
        ids = list(ids)
        old[kind] = {"count": len(ids), "utts": ids[:COUNTS_SHOWN]}
    write_json_atomic(path, old, indent=1, sort_keys=True)
    return old


def describe_ids(ids: list[str], shown: int = 5) -> str:
    """``"3: a, b, c"`` / ``"12: a, b, c, d, e ..."`` — a count and the first ids, for log lines."""
    ids = list(ids)
    return f"{len(ids)}: {', '.join(ids[:shown])}{' ...' if len(ids) > shown else ''}"


class StageLog:
    """A stage's log: print each message and append it to ``OUT/log/<name>.log`` (Kaldi's
    ``log/<task>.log``); ``enabled=False`` silences it (ranks other than 0 under DDP)."""

    def __init__(self, out: str | Path, name: str, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(out) / "log" / f"{name}.log"
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        print(msg, flush=True)
        with open(self.path, "a") as f:
            f.write(msg + "\n")
