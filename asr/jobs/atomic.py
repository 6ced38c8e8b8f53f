"""Atomic writes: a reader never sees a half-written file, a failed write leaves no temporary.

Every file the speech side writes goes to ``NAME.tmp`` first and is renamed over ``NAME``
(``os.replace``: atomic on POSIX) only once it is complete; on any failure the temporary is
removed. A job killed mid-write leaves the previous version (or nothing), which is what
resuming after ``kill -9`` relies on. (``asr.generative`` keeps its own copy of this pattern: it
imports nothing from the speech side.)
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path`` to write; on success it replaces ``path``, on any
    failure it is removed. ``suffix`` is appended to the name (writers that infer the format
    from the extension, e.g. ``savefig``, want ``".tmp.png"``-style names)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any, **dumps_kwargs: Any) -> Path:
    """``json.dumps(obj, **dumps_kwargs)`` plus a final newline, written atomically."""
    return write_text_atomic(path, json.dumps(obj, **dumps_kwargs) + "\n")


def copy_file_atomic(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` to ``dst`` atomically (a model or transform carried into a new stage's dir)."""
    import shutil

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def copy_tree_atomic(src: str | Path, dst: str | Path, ignore: tuple[str, ...] = (),
                     edit: Callable[[Path], None] | None = None) -> Path:
    """Copy the directory ``src`` to ``dst`` (replacing it) through ``dst.tmp`` and a rename, so a
    reader finds the old tree or the whole new one; names in ``ignore`` are left out, and
    ``edit(tmp_dir)`` may change the copy before it takes ``dst``'s name."""
    import shutil

    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(*ignore) if ignore else None)
        if edit is not None:
            edit(tmp)
        old = dst.with_name(dst.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if dst.exists():
            os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst
