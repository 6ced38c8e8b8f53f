"""Reading Kaldi-style text files and folding phone sequences for scoring."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from asr.datadir.table import read_table, read_token_table
from asr.lang.phones import PhoneMap


def read_text(path: str | Path) -> dict[str, list[str]]:
    """Read ``utt-id tok tok ...`` lines (Kaldi ``text``) in file order.

    A line with only an id is an empty transcript. Blank lines are ignored. A repeated id is a
    ``ValueError`` naming the file and line.
    """
    return read_token_table(path, what="utterance")


def read_utt2spk(path: str | Path) -> dict[str, str]:
    """Read ``utt-id speaker-id`` lines; ``ValueError`` naming the line on a malformed or repeated one."""
    return read_table(path, what="utterance", columns=2)


def fold39(tokens: Sequence[str], phone_map: PhoneMap) -> list[str]:
    """Fold 48-set phones (or already-39-set phones) to the 39-phone scoring set of
    Lee & Hon (1989); an unknown token is a ``ValueError`` naming it."""
    fold = phone_map.fold48to39
    keep = set(phone_map.phones39)
    out = []
    for t in tokens:
        if t in fold:
            out.append(fold[t])
        elif t in keep:
            out.append(t)
        else:
            raise ValueError(f"token {t!r} is not a phone of the 48 or 39 set")
    return out
