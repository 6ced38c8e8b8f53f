"""The recipe's side of the one ``OUT/.done`` marker (``asr.jobs.stage``), for ``run.sh``.

``python -m asr.recipe.markers``:

- ``begin OUT DEP... < TEXT``: prints ``HASH PREV``: the stage's hash, the first 16 hex digits of
  the SHA-1 of one line per DEP (the stage hash it records, ``recipe.stage``, or ``DEP: not
  done``) followed by TEXT (the stage's command and function body, from ``run.sh``), so a
  stage's hash covers the markers of the stages whose output it reads; and the hash OUT records
  (empty when none).
- ``step OUT NAME HASH``: ``skip`` when OUT records HASH for step NAME, else ``run`` (and the
  stale mark is dropped).
- ``get DIR [STEP]``: the hash recorded for the stage (or one step of it); empty when none.
- ``set DIR HASH [STEP]`` / ``drop DIR [STEP]``: record / forget it (atomically, keeping the
  entry the stage's command wrote).
"""
from __future__ import annotations

import hashlib
import sys

from asr.jobs.stage import recipe_mark, set_recipe_mark

USAGE = ("usage: python -m asr.recipe.markers {begin OUT DEP... < TEXT | step OUT NAME HASH | "
         "get DIR [STEP] | set DIR HASH [STEP] | drop DIR [STEP]}")


def stage_hash(deps: list[str], text: bytes) -> str:
    """The recipe's stage hash: SHA-1 over the deps' marker lines, then ``text``; 16 hex digits."""
    lines = "".join((recipe_mark(d) or f"{d}: not done") + "\n" for d in deps)
    return hashlib.sha1(lines.encode() + text).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(USAGE, file=sys.stderr)
        return 2
    cmd, rest = args[0], args[1:]
    if cmd == "begin" and rest:
        print(stage_hash(rest[1:], sys.stdin.buffer.read()), recipe_mark(rest[0]) or "")
    elif cmd == "step" and len(rest) == 3:
        out, name, value = rest
        if recipe_mark(out, name) == value:
            print("skip")
        else:
            set_recipe_mark(out, None, name)
            print("run")
    elif cmd == "get" and len(rest) in (1, 2):
        print(recipe_mark(rest[0], *rest[1:]) or "")
    elif cmd == "set" and len(rest) in (2, 3):
        set_recipe_mark(rest[0], rest[1], *rest[2:])
    elif cmd == "drop" and len(rest) in (1, 2):
        set_recipe_mark(rest[0], None, *rest[1:])
    else:
        print(USAGE, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
