"""N-gram language models: interpolated Witten-Bell estimation, ARPA writing/reading, scoring.

Estimation follows interpolated Witten-Bell smoothing (Witten & Bell 1991; in the interpolated
form of Chen & Goodman 1998, "An empirical study of smoothing techniques", eq. 16)::

    p(w | h) = (c(h w) + N1+(h .) p(w | h')) / (c(h) + N1+(h .))

where ``h'`` drops the oldest word of ``h``, ``N1+(h .)`` is the number of distinct words seen
after ``h`` and the recursion ends in a unigram interpolated with the uniform distribution over
the vocabulary (so every vocabulary word, seen or not, has non-zero probability). In ARPA
backoff form the stored probability of a seen n-gram is the interpolated one and the backoff
weight of a history is exactly ``bow(h) = N1+(h .) / (c(h) + N1+(h .))``, because the
interpolated probability of an unseen word is ``bow(h) p(w | h')``. ``<s>`` is never predicted
(log10 prob -99 in the ARPA file, as SRILM writes it).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from asr.jobs.atomic import write_text_atomic
from asr.lang.lexicon import BOS, EOS

NgramKey = tuple[str, ...]


@dataclass
class NgramLM:
    """A backoff n-gram model: ``logprob[ngram]`` and ``backoff[history]`` in log10 (ARPA units).

    ``vocab`` are the predictable words (``</s>`` included, ``<s>`` excluded).
    """

    order: int
    vocab: list[str]
    logprob: dict[NgramKey, float] = field(default_factory=dict)
    backoff: dict[NgramKey, float] = field(default_factory=dict)

    def word_log10prob(self, word: str, history: NgramKey) -> float:
        """log10 p(word | history) by the ARPA backoff rule (history truncated to order-1)."""
        history = tuple(history)[-(self.order - 1):] if self.order > 1 else ()
        total = 0.0
        while True:
            key = history + (word,)
            if key in self.logprob:
                return total + self.logprob[key]
            if not history:
                raise KeyError(f"word {word!r} is not in the language model's vocabulary")
            total += self.backoff.get(history, 0.0)
            history = history[1:]

    def sentence_logprob(self, words: list[str]) -> float:
        """Natural-log probability of ``<s> words </s>``."""
        hist: NgramKey = (BOS,)
        lp = 0.0
        for w in list(words) + [EOS]:
            lp += self.word_log10prob(w, hist)
            hist = hist + (w,)
        return lp * math.log(10.0)


def estimate_witten_bell(sentences: list[list[str]], vocab: list[str], order: int = 2) -> NgramLM:
    """Interpolated Witten-Bell n-gram (see module docstring) from tokenised sentences.

    Args:
        sentences: word sequences without ``<s>``/``</s>``; every word must be in ``vocab``.
        vocab: the words the model predicts (``</s>`` is added; ``<s>`` is context only).
        order: n-gram order (>= 1).
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    vset = set(vocab)
    for i, s in enumerate(sentences):
        bad = [w for w in s if w not in vset]
        if bad:
            raise ValueError(f"sentence {i}: words {bad[:5]} are not in the vocabulary")
        if BOS in s or EOS in s:
            raise ValueError(f"sentence {i}: contains {BOS}/{EOS}")
    V = sorted(vset - {BOS, EOS}) + [EOS]
    counts: list[Counter] = [Counter() for _ in range(order + 1)]
    for s in sentences:
        toks = [BOS] + list(s) + [EOS]
        for n in range(1, order + 1):
            for i in range(max(1, n - 1), len(toks)):  # n-grams predicting toks[i], i >= 1
                counts[n][tuple(toks[i - n + 1:i + 1])] += 1
    lm = NgramLM(order=order, vocab=V)
    n_tok = sum(counts[1].values())
    types = len(counts[1])
    if n_tok == 0:
        raise ValueError("no training text for the language model")
    prob: dict[NgramKey, float] = {}
    for w in V:
        prob[(w,)] = (counts[1].get((w,), 0) + types / len(V)) / (n_tok + types)
    for n in range(2, order + 1):
        hist_count: Counter = Counter()
        hist_types: Counter = Counter()
        for key, c in counts[n].items():
            hist_count[key[:-1]] += c
            hist_types[key[:-1]] += 1
        for key, c in counts[n].items():
            h = key[:-1]
            lower = prob[key[1:]]  # every suffix of a seen n-gram was counted too
            prob[key] = (c + hist_types[h] * lower) / (hist_count[h] + hist_types[h])
        for h in hist_count:
            lm.backoff[h] = math.log10(hist_types[h] / (hist_count[h] + hist_types[h]))
    lm.logprob = {k: math.log10(p) for k, p in prob.items()}
    lm.logprob[(BOS,)] = -99.0
    return lm


def write_arpa(lm: NgramLM, path: str | Path) -> None:
    """Write ``lm`` in ARPA format (atomic)."""
    by_order: dict[int, list[NgramKey]] = defaultdict(list)
    for k in lm.logprob:
        by_order[len(k)].append(k)
    lines = ["", "\\data\\"]
    for n in range(1, lm.order + 1):
        lines.append(f"ngram {n}={len(by_order[n])}")
    for n in range(1, lm.order + 1):
        lines += ["", f"\\{n}-grams:"]
        for k in sorted(by_order[n]):
            row = f"{lm.logprob[k]:.7f}\t{' '.join(k)}"
            if n < lm.order and k in lm.backoff:
                row += f"\t{lm.backoff[k]:.7f}"
            lines.append(row)
    lines += ["", "\\end\\", ""]
    write_text_atomic(path, "\n".join(lines))


def read_arpa(path: str | Path) -> NgramLM:
    """Read an ARPA file into an ``NgramLM``; ValueError naming file:line when malformed."""
    path = Path(path)
    logprob: dict[NgramKey, float] = {}
    backoff: dict[NgramKey, float] = {}
    order = 0
    section = 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            s = line.strip()
            if not s or s == "\\data\\" or s.startswith("ngram "):
                if s.startswith("ngram "):
                    order = max(order, int(s.split()[1].split("=")[0]))
                continue
            if s == "\\end\\":
                break
            if s.startswith("\\") and s.endswith("-grams:"):
                section = int(s[1:].split("-")[0])
                continue
            cols = s.split()
            if section == 0 or len(cols) not in (section + 1, section + 2):
                raise ValueError(f"{path}:{n}: malformed ARPA line {s!r}")
            key = tuple(cols[1:section + 1])
            logprob[key] = float(cols[0])
            if len(cols) == section + 2:
                backoff[key] = float(cols[-1])
    if not logprob:
        raise ValueError(f"{path}: no n-grams")
    vocab = sorted(k[0] for k in logprob if len(k) == 1 and k[0] != BOS)
    return NgramLM(order=order, vocab=vocab, logprob=logprob, backoff=backoff)
