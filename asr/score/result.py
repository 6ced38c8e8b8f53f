"""Corpus-level scoring: per-utterance counts, totals, per-speaker aggregation, Kaldi's %WER line."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from asr.score.align import Counts, align_counts_batch

MISSING_SHOWN = 10  # utterance ids named in the missing-hypothesis warning


@dataclass
class ScoreResult:
    """Per-utterance alignment counts of one system on one reference set.

    ``utts`` keeps the reference's utterance order; ``counts`` is a LongTensor ``(U, 5)`` with
    columns ``corr, sub, ins, dels, nref``. ``missing`` counts utterances without a hypothesis
    (scored as all deletions), ``missing_utts`` names them (reference order).
    """

    utts: list[str]
    counts: torch.Tensor
    method: str = "sclite"
    missing: int = 0
    missing_utts: list[str] = field(default_factory=list)

    def _col(self, k: int) -> int:
        return int(self.counts[:, k].sum())

    @property
    def corr(self) -> int:
        return self._col(0)

    @property
    def sub(self) -> int:
        return self._col(1)

    @property
    def ins(self) -> int:
        return self._col(2)

    @property
    def dels(self) -> int:
        return self._col(3)

    @property
    def nref(self) -> int:
        return self._col(4)

    @property
    def errors(self) -> int:
        return self.sub + self.ins + self.dels

    @property
    def wer(self) -> float:
        """Error rate in percent (``100 * errors / nref``; 0 when ``nref == 0`` and no errors)."""
        n = self.nref
        if n == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return 100.0 * self.errors / n

    @property
    def utt_errors(self) -> torch.Tensor:
        """LongTensor ``(U,)``: errors (sub + ins + dels) per utterance."""
        return self.counts[:, 1:4].sum(dim=1)

    def utt_counts(self, utt: str) -> Counts:
        """Counts of one utterance."""
        c = self.counts[self.utts.index(utt)].tolist()
        return Counts(corr=c[0], sub=c[1], ins=c[2], dels=c[3], nref=c[4])

    def total(self) -> Counts:
        c = self.counts.sum(dim=0).tolist()
        return Counts(corr=c[0], sub=c[1], ins=c[2], dels=c[3], nref=c[4])

    def wer_line(self, label: str = "") -> str:
        """Kaldi's line, e.g. ``%WER 18.27 [ 11489 / 62901, 1681 ins, 2810 del, 6998 sub ] label``."""
        line = (f"%WER {self.wer:.2f} [ {self.errors} / {self.nref}, {self.ins} ins, "
                f"{self.dels} del, {self.sub} sub ]")
        return f"{line} {label}" if label else line

    def per_speaker(self, utt2spk: dict[str, str]) -> dict[str, Counts]:
        """Counts summed per speaker (sorted by speaker id); every scored utterance must be in
        ``utt2spk``."""
        missing = [u for u in self.utts if u not in utt2spk]
        if missing:
            raise ValueError(f"{len(missing)} scored utterances are not in utt2spk, e.g. {missing[0]!r}")
        speakers = sorted({utt2spk[u] for u in self.utts})
        index = {s: k for k, s in enumerate(speakers)}
        spk_of_utt = torch.tensor([index[utt2spk[u]] for u in self.utts], dtype=torch.long)
        sums = torch.zeros(len(speakers), 5, dtype=torch.long).index_add_(0, spk_of_utt, self.counts)
        return {s: Counts(*row) for s, row in zip(speakers, sums.tolist())}


def score(ref: dict[str, list[str]], hyp: dict[str, list[str]], method: str = "sclite") -> ScoreResult:
    """Score ``hyp`` against ``ref`` utterance by utterance.

    Utterances in ``ref`` without a hypothesis count as all deletions (a ``UserWarning`` gives
    their number and the first ids); a hypothesis for an utterance not in ``ref`` is a
    ``ValueError`` naming it.
    """
    unknown = [u for u in hyp if u not in ref]
    if unknown:
        raise ValueError(f"hypothesis for utterance {unknown[0]!r} which is not in the reference"
                         f" ({len(unknown)} such utterances)")
    utts = list(ref)
    missing = [u for u in utts if u not in hyp]
    if missing:
        shown = ", ".join(missing[:MISSING_SHOWN]) + (" ..." if len(missing) > MISSING_SHOWN else "")
        warnings.warn(f"{len(missing)} of {len(utts)} reference utterances have no hypothesis "
                      f"(scored as all deletions): {shown}", UserWarning, stacklevel=2)
    refs = [ref[u] for u in utts]
    hyps = [hyp.get(u, []) for u in utts]
    c = align_counts_batch(refs, hyps, method) if utts else torch.zeros(0, 4, dtype=torch.long)
    nref = torch.tensor([len(r) for r in refs], dtype=torch.long)
    return ScoreResult(utts=utts, counts=torch.cat([c, nref[:, None]], dim=1), method=method,
                       missing=len(missing), missing_utts=missing)


def foreign_tokens(ref: dict[str, list[str]], hyp: dict[str, list[str]]) -> dict[str, int]:
    """Hypothesis tokens that occur nowhere in the reference, with their counts (most frequent
    first). Many of them usually mean the two sides use different token sets (e.g. 48-phone
    hypotheses against a 39-phone reference), which scoring would silently count as errors."""
    vocab = {t.lower() for toks in ref.values() for t in toks}   # sclite compares case-insensitively
    counts: dict[str, int] = {}
    for toks in hyp.values():
        for t in toks:
            if t.lower() not in vocab:
                counts[t] = counts.get(t, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
