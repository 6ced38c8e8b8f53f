"""Skip-if-done markers for stage directories (Kaldi-style recipes, made trustworthy).

A stage writes ``OUT/.done`` as its very last action, holding a hash of the configuration
it ran with. A re-run skips the stage only when the marker exists *and* the hash matches;
a directory without a marker is an interrupted run: the stage resumes from its own
checkpoints (if it keeps any) or starts again from scratch.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


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
    out_dir = Path(out_dir)
    tmp = out_dir / ".done.tmp"
    tmp.write_text(json.dumps({"hash": config_hash(config), "config": config}, sort_keys=True,
                              default=str, indent=1))
    os.replace(tmp, out_dir / ".done")


def clear_done(out_dir: str | Path) -> None:
    """Remove the marker (a stage about to rewrite its directory calls this first)."""
    try:
        (Path(out_dir) / ".done").unlink()
    except FileNotFoundError:
        pass
