"""Kaldi text tables: the one reader of every ``key value...`` file the toolkit reads.

A Kaldi text table (``wav.scp``, ``utt2spk``, ``spk2utt``, ``text``, ``feats.scp``, ``cmvn.scp``,
``utt2dur``, ...) holds one entry per line: a key, white space, and the rest of the line (which
may be empty: an utterance with an empty transcript). Every reader goes through this module, so a
file means the same thing wherever it is read: a key that appears twice is an error naming the file,
the line and the key (Kaldi's table readers refuse it too), never "the last one wins" in one place
and an error in another.
"""
from __future__ import annotations

from pathlib import Path


def read_table_rows(path: str | Path, *, blank_lines: bool = True) -> list[tuple[int, str, str]]:
    """``(line number, key, rest of the line)`` of every entry, in file order, keys not checked.

    ``rest`` is stripped and may be empty. ``blank_lines=False`` makes an empty line an error (a data
    directory's files must have none); otherwise blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split(maxsplit=1)
            if not parts:
                if not blank_lines:
                    raise ValueError(f"{path}:{n}: empty line")
                continue
            rows.append((n, parts[0], parts[1].strip() if len(parts) > 1 else ""))
    return rows


def read_table(path: str | Path, *, what: str = "key", columns: int | None = None,
               min_columns: int = 1, blank_lines: bool = True) -> dict[str, str]:
    """``{key: rest of the line}`` of a Kaldi text table, in file order.

    ``what`` names a key in messages ("utterance", "speaker"). ``columns`` asks for exactly that
    many white-space separated columns on every line (2 for ``utt2spk``); ``min_columns`` for at
    least that many (2: the value may not be empty). A repeated key or a line of the wrong shape is
    a ``ValueError`` naming the file and line.
    """
    out: dict[str, str] = {}
    first: dict[str, int] = {}
    for n, key, rest in read_table_rows(path, blank_lines=blank_lines):
        ncols = 1 + len(rest.split())
        if (columns is not None and ncols != columns) or ncols < min_columns:
            want = f"{columns} columns" if columns is not None else f"at least {min_columns} columns"
            raise ValueError(f"{path}:{n}: expected {want} ('<{what}> <value>'), got {ncols}: "
                             f"{(key + ' ' + rest).strip()!r}")
        if key in out:
            raise ValueError(f"{path}:{n}: {what} {key!r} appears twice (first on line {first[key]})")
        out[key] = rest
        first[key] = n
    return out


def read_token_table(path: str | Path, *, what: str = "utterance",
                     blank_lines: bool = True) -> dict[str, list[str]]:
    """``{key: tokens}`` of a table such as ``text`` or ``spk2utt`` (a key alone: no tokens)."""
    return {k: v.split() for k, v in read_table(path, what=what, blank_lines=blank_lines).items()}
