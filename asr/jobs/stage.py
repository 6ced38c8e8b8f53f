"""Skip-if-done markers for stage directories (Kaldi-style recipes, made trustworthy).

One file per directory, ``OUT/.done`` (JSON), is the only marker:

- ``hash`` / ``config``: written by an ``asr`` command as its very last action, the hash of the
  configuration it ran with. A re-run skips the command only when the hash matches; a directory
  without one is an interrupted run: the command resumes from its own checkpoints (if it keeps
  any) or starts again from scratch.
- ``recipe``: written by the recipe (``recipes/timit/run.sh`` through ``python -m
  asr.recipe.markers``): ``recipe.stage`` is the stage's hash (its command, its settings and the
  ``recipe.stage`` of every stage whose output it reads) once the whole stage finished, and
  ``recipe.steps.<name>`` the same hash once one resumable part of it (training, a decoding)
  finished. A command rewriting or clearing its own marker keeps the ``recipe`` entry, so the
  steps of a stage that share a directory do not erase each other.
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


def finished(out_dir: str | Path) -> bool:
    """True when a command finished in ``out_dir`` (its ``.done`` records a config hash)."""
    return "hash" in _read_marker(out_dir)


def is_done(out_dir: str | Path, config: dict[str, Any]) -> bool:
    """True when ``out_dir/.done`` exists and records the same config hash."""
    return _read_marker(out_dir).get("hash") == config_hash(config)


def _read_marker(out_dir: str | Path) -> dict[str, Any]:
    """The ``.done`` file's content; ``{}`` when absent or unreadable."""
    marker = Path(out_dir) / ".done"
    try:
        content = json.loads(marker.read_text())
    except (OSError, ValueError):       # absent, unreadable, or not JSON (an interrupted write)
        return {}
    return content if isinstance(content, dict) else {}


def _write_marker(out_dir: str | Path, content: dict[str, Any]) -> None:
    marker = Path(out_dir) / ".done"
    if not content:
        marker.unlink(missing_ok=True)
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, content, sort_keys=True, default=str, indent=1)


def mark_done(out_dir: str | Path, config: dict[str, Any]) -> None:
    """Atomically write the ``.done`` marker for ``config`` (keeping the recipe's entry)."""
    recipe = _read_marker(out_dir).get("recipe")
    content: dict[str, Any] = {"hash": config_hash(config), "config": config}
    if recipe:
        content["recipe"] = recipe
    _write_marker(out_dir, content)


def clear_done(out_dir: str | Path) -> None:
    """Forget that the command finished (a stage about to rewrite its directory calls this
    first); the recipe's entry stays."""
    recipe = _read_marker(out_dir).get("recipe")
    _write_marker(out_dir, {"recipe": recipe} if recipe else {})


# Markers of recipes written before the recipe's entry moved into ``.done`` (read, then removed).
_LEGACY_STAGE = ".recipe_done"
_LEGACY_STEP = ".step_{}"


def recipe_mark(out_dir: str | Path, step: str | None = None) -> str | None:
    """The recipe's hash recorded for the whole stage (``step=None``) or one step of it, else
    ``None``. Reads the legacy ``.recipe_done`` / ``.step_<name>`` files of older runs too, so
    their finished stages stay finished."""
    recipe = _read_marker(out_dir).get("recipe") or {}
    value = recipe.get("stage") if step is None else (recipe.get("steps") or {}).get(step)
    if value is None:
        legacy = Path(out_dir) / (_LEGACY_STAGE if step is None else _LEGACY_STEP.format(step))
        if legacy.is_file():
            value = legacy.read_text().strip() or None
    return value


def set_recipe_mark(out_dir: str | Path, value: str | None, step: str | None = None) -> None:
    """Record (``value``) or drop (``None``) the recipe's hash of the stage or of one step,
    atomically, keeping the command's entry; the legacy file of that mark is removed."""
    content = _read_marker(out_dir)
    recipe = dict(content.get("recipe") or {})
    steps = dict(recipe.get("steps") or {})
    if step is None:
        recipe.pop("stage", None)
        if value is not None:
            recipe["stage"] = value
    else:
        steps.pop(step, None)
        if value is not None:
            steps[step] = value
    if steps:
        recipe["steps"] = steps
    else:
        recipe.pop("steps", None)
    if recipe:
        content["recipe"] = recipe
    else:
        content.pop("recipe", None)
    _write_marker(out_dir, content)
    (Path(out_dir) / (_LEGACY_STAGE if step is None else _LEGACY_STEP.format(step))).unlink(missing_ok=True)


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
