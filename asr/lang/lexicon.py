"""Lexicons, symbol tables, disambiguation symbols and the lexicon transducer L.

Follows Kaldi's ``utils/prepare_lang.sh``: pronunciations that are a prefix of another or are
shared by several words (homophones) get a distinct ``#1, #2, ...`` appended
(``add_lex_disambig.pl``), ``#0`` is the G backoff symbol, and L (``make_lexicon_fst.py``)
maps phone strings to words with optional silence between words (probability ``sil_prob``).
Phone mode (TIMIT phone recognition, as Kaldi's ``egs/timit``) uses an identity lexicon over
the 48 phones and no optional silence (``sil`` is a word of its own).
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import torch

from asr.jobs.atomic import write_text_atomic
from asr.lang.fstarrays import FstArrays, arrays_to_fst

EPS = "<eps>"
UNK = "<unk>"
BOS = "<s>"
EOS = "</s>"

Lexicon = list[tuple[str, list[str]]]


def read_lexicon(path: str | Path, phones: list[str]) -> Lexicon:
    """Read ``word ph ph ...`` lines; ValueError naming file:line on an unknown phone or empty pron."""
    path = Path(path)
    known = set(phones)
    lex: Lexicon = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            cols = line.split()
            if not cols:
                continue
            if len(cols) < 2:
                raise ValueError(f"{path}:{n}: word {cols[0]!r} has no pronunciation")
            if cols[0] in (EPS, BOS, EOS) or cols[0].startswith("#"):
                raise ValueError(f"{path}:{n}: {cols[0]!r} is a reserved symbol, not a word")
            bad = [p for p in cols[1:] if p not in known]
            if bad:
                raise ValueError(f"{path}:{n}: word {cols[0]!r} uses unknown phone(s) {bad}")
            lex.append((cols[0], cols[1:]))
    if not lex:
        raise ValueError(f"{path}: empty lexicon")
    return lex


def add_disambig(lexicon: Lexicon, reserved: list[list[str]] = ()) -> tuple[Lexicon, int]:
    """Append ``#k`` to pronunciations that are homophones or prefixes of another pronunciation.

    Kaldi's ``add_lex_disambig.pl``: each such pronunciation gets ``#1``, ``#2``, ... in order of
    appearance (per pronunciation). ``reserved`` are pronunciations used elsewhere in L (the
    optional silence) that lexicon entries must be distinguishable from.
    Returns (lexicon with disambig symbols, K = the largest k used (0 if none)).
    """
    counts = Counter(tuple(p) for _, p in lexicon)
    for p in reserved:
        counts[tuple(p)] += 1
    prefixes = {tuple(p[:i]) for _, p in lexicon for i in range(1, len(p))}
    used: dict[tuple[str, ...], int] = {}
    out: Lexicon = []
    for w, p in lexicon:
        key = tuple(p)
        if counts[key] > 1 or key in prefixes:
            used[key] = used.get(key, 0) + 1
            out.append((w, list(p) + [f"#{used[key]}"]))
        else:
            out.append((w, list(p)))
    return out, max(used.values(), default=0)


class SymbolTable:
    """Bidirectional symbol <-> integer map (OpenFst text symbol table)."""

    def __init__(self, symbols: list[str]) -> None:
        if len(set(symbols)) != len(symbols):
            raise ValueError("duplicate symbols in symbol table")
        self.symbols = list(symbols)
        self.ids = {s: i for i, s in enumerate(symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    def __getitem__(self, sym: str) -> int:
        return self.ids[sym]

    def __contains__(self, sym: str) -> bool:
        return sym in self.ids

    def write(self, path: str | Path) -> None:
        write_text_atomic(path, "".join(f"{s} {i}\n" for i, s in enumerate(self.symbols)))

    @classmethod
    def read(cls, path: str | Path) -> "SymbolTable":
        path = Path(path)
        rows = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        syms: list[str] = [""] * len(rows)
        for n, r in enumerate(rows, 1):
            if len(r) != 2 or not r[1].isdigit() or int(r[1]) >= len(rows):
                raise ValueError(f"{path}:{n}: malformed symbol table line {' '.join(r)!r}")
            syms[int(r[1])] = r[0]
        return cls(syms)




def phone_symbols(phones: list[str], num_disambig: int) -> SymbolTable:
    """``<eps>`` 0, the model phones 1..P (``asr.lang.load_phone_set`` order), then ``#0..#K``."""
    return SymbolTable([EPS] + list(phones) + [f"#{k}" for k in range(num_disambig + 1)])


def word_symbols(words: list[str]) -> SymbolTable:
    """``<eps>`` 0, the words (sorted), then ``#0``, ``<s>``, ``</s>`` (Kaldi's words.txt)."""
    return SymbolTable([EPS] + sorted(set(words)) + ["#0", BOS, EOS])


def make_lexicon_fst(lexicon: Lexicon, phone_syms: SymbolTable, word_syms: SymbolTable,
                     sil_phone: str | None = None, sil_prob: float = 0.5) -> "kaldifst.StdVectorFst":
    """Lexicon transducer L (phones with disambig symbols -> words), Kaldi ``make_lexicon_fst.py``.

    With ``sil_phone`` (word mode) silence is optional at the start and after every word with
    probability ``sil_prob``; without it (phone mode) L is one loop state. ``#0:#0`` self-loops
    are added where G's backoff symbol must pass through (``fstaddselfloops``). Weights are -ln.
    Returns an olabel-sorted ``StdVectorFst``.
    """
    import kaldifst

    src: list[int] = []
    dst: list[int] = []
    il: list[int] = []
    ol: list[int] = []
    w: list[float] = []

    def arc(s: int, d: int, i: int, o: int, c: float = 0.0) -> None:
        src.append(s), dst.append(d), il.append(i), ol.append(o), w.append(c)

    if sil_phone is None:
        start = loop = 0
        nstates = 1
        no_sil = sil = 0.0
    else:
        if not 0.0 < sil_prob < 1.0:
            raise ValueError(f"sil_prob must be in (0, 1), got {sil_prob}")
        start, loop, sil_state, nstates = 0, 1, 2, 3
        no_sil, sil = -math.log(1.0 - sil_prob), -math.log(sil_prob)
        arc(start, loop, 0, 0, no_sil)
        arc(start, sil_state, 0, 0, sil)
        arc(sil_state, loop, phone_syms[sil_phone], 0)
    for word, pron in lexicon:
        wid = word_syms[word]
        cur = loop
        for k, ph in enumerate(pron):
            last = k == len(pron) - 1
            o = wid if k == 0 else 0
            if last:
                if sil_phone is None:
                    arc(cur, loop, phone_syms[ph], o)
                else:
                    arc(cur, loop, phone_syms[ph], o, no_sil)
                    arc(cur, sil_state, phone_syms[ph], o, sil)
            else:
                arc(cur, nstates, phone_syms[ph], o)
                cur = nstates
                nstates += 1
    final = torch.full((nstates,), float("inf"), dtype=torch.float64)
    final[loop] = 0.0
    fa = FstArrays(nstates, start, torch.tensor(src), torch.tensor(dst), torch.tensor(il),
                   torch.tensor(ol), torch.tensor(w, dtype=torch.float64), final)
    L = arrays_to_fst(fa)
    kaldifst.add_self_loops(L, [phone_syms["#0"]], [word_syms["#0"]])
    kaldifst.arcsort(L, "olabel")
    return L
