"""Edit-distance alignment of token sequences, batched over utterances.

Two cost schemes, each with the tie-breaking of the tool it reproduces:

* ``"sclite"`` — NIST sclite (SCTK ``sclite -o sum/rsum/pralign``): correct 0, substitution 4,
  insertion 3, deletion 3. Among minimum-cost alignments sclite's counts are those of a
  trace-back from the end that prefers the diagonal (correct/substitution), then an insertion,
  then a deletion (established by comparison with ``sctk sclite`` on thousands of random
  pairs; see ``tests/test_score.py``). Like sclite (without ``-s``) tokens compare
  case-insensitively.
* ``"levenshtein"`` — Kaldi's ``compute-wer`` (``LevenshteinEditDistance``, also
  ``kaldialign.edit_distance``): every error costs 1; trace-back prefers an insertion, then a
  deletion, then the diagonal.

The DP is vectorised: the recursion runs over reference positions only; within a row the
insertion chain is a cumulative minimum, ``D[i, j] = I*j + cummin_k(A[i, k] - I*k)`` with
``A`` the best of the diagonal and deletion moves, and every row is computed for a whole batch
of utterances at once. The trace-back is also batched (one step for all utterances at a time).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence

METHODS = ("sclite", "levenshtein")
# (correct, substitution, insertion, deletion) costs and the trace-back preference order.
_COSTS = {"sclite": (0, 4, 3, 3), "levenshtein": (0, 1, 1, 1)}
_ORDER = {"sclite": ("diag", "ins", "del"), "levenshtein": ("ins", "del", "diag")}


@dataclass(frozen=True)
class Counts:
    """Alignment counts of one utterance (or a sum): ``nref = corr + sub + dels``."""

    corr: int
    sub: int
    ins: int
    dels: int
    nref: int

    @property
    def errors(self) -> int:
        return self.sub + self.ins + self.dels

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.corr + other.corr, self.sub + other.sub, self.ins + other.ins,
                      self.dels + other.dels, self.nref + other.nref)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown alignment method {method!r}; expected one of {METHODS}")


def align_counts_batch(
    refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]], method: str = "sclite",
    max_batch: int = 256,
) -> torch.Tensor:
    """Align many (ref, hyp) pairs; returns a LongTensor ``(B, 4)`` of ``corr, sub, ins, dels``.

    Pairs are grouped by length into batches of at most ``max_batch`` utterances so padding
    stays small; results come back in input order.
    """
    _check_method(method)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if method == "sclite":  # sclite compares case-insensitively unless run with -s
        refs = [[t.lower() for t in r] for r in refs]
        hyps = [[t.lower() for t in h] for h in hyps]
    vocab: dict[str, int] = {}
    r_ids = [torch.tensor([vocab.setdefault(t, len(vocab)) for t in r], dtype=torch.long) for r in refs]
    h_ids = [torch.tensor([vocab.setdefault(t, len(vocab)) for t in h], dtype=torch.long) for h in hyps]
    out = torch.zeros(len(refs), 4, dtype=torch.long)
    order = sorted(range(len(refs)), key=lambda k: (len(r_ids[k]), len(h_ids[k])))
    for s in range(0, len(order), max_batch):
        idx = order[s:s + max_batch]
        out[idx] = _align_ids([r_ids[k] for k in idx], [h_ids[k] for k in idx], method)
    return out


def _align_ids(refs: list[torch.Tensor], hyps: list[torch.Tensor], method: str) -> torch.Tensor:
    """Batched DP + trace-back on integer token ids; returns ``(B, 4)`` corr, sub, ins, dels."""
    c_cor, c_sub, c_ins, c_del = _COSTS[method]
    B = len(refs)
    rlen = torch.tensor([len(r) for r in refs], dtype=torch.long)
    hlen = torch.tensor([len(h) for h in hyps], dtype=torch.long)
    R, H = int(rlen.max()), int(hlen.max())
    # Distinct negative pads never match anything (only prefixes inside the lengths matter).
    ref = pad_sequence(refs, batch_first=True, padding_value=-1) if R else torch.full((B, 0), -1)
    hyp = pad_sequence(hyps, batch_first=True, padding_value=-2) if H else torch.full((B, 0), -2)
    # sub_cost[b, i, j]: cost of aligning ref[i] with hyp[j] on the diagonal.
    sub_cost = torch.where(ref[:, :, None] == hyp[:, None, :], c_cor, c_sub)  # (B, R, H)
    jj = torch.arange(H + 1, dtype=torch.long)
    D = torch.empty(B, R + 1, H + 1, dtype=torch.long)
    D[:, 0] = c_ins * jj
    for i in range(1, R + 1):
        A = torch.empty(B, H + 1, dtype=torch.long)
        A[:, 0] = D[:, i - 1, 0] + c_del
        A[:, 1:] = torch.minimum(D[:, i - 1, :-1] + sub_cost[:, i - 1], D[:, i - 1, 1:] + c_del)
        D[:, i] = torch.cummin(A - c_ins * jj, dim=1).values + c_ins * jj
    # Batched trace-back from (rlen, hlen) to (0, 0).
    i, j = rlen.clone(), hlen.clone()
    counts = torch.zeros(B, 4, dtype=torch.long)
    bidx = torch.arange(B)
    for _ in range(R + H):
        active = (i > 0) | (j > 0)
        if not bool(active.any()):
            break
        cur = D[bidx, i, j]
        im1, jm1 = (i - 1).clamp(min=0), (j - 1).clamp(min=0)
        diag_c = sub_cost[bidx, im1.clamp(max=max(R - 1, 0)), jm1.clamp(max=max(H - 1, 0))] \
            if R > 0 and H > 0 else torch.zeros(B, dtype=torch.long)
        ok = {
            "diag": (i > 0) & (j > 0) & (cur == D[bidx, im1, jm1] + diag_c),
            "ins": (j > 0) & (cur == D[bidx, i, jm1] + c_ins),
            "del": (i > 0) & (cur == D[bidx, im1, j] + c_del),
        }
        taken = ~active
        for move in _ORDER[method]:
            step = ok[move] & ~taken
            taken = taken | step
            if move == "diag":
                counts[:, 0] += (step & (diag_c == c_cor)).long()
                counts[:, 1] += (step & (diag_c != c_cor)).long()
                i = i - step.long()
                j = j - step.long()
            elif move == "ins":
                counts[:, 2] += step.long()
                j = j - step.long()
            else:
                counts[:, 3] += step.long()
                i = i - step.long()
    return counts


def align_counts(ref: Sequence[str], hyp: Sequence[str], method: str = "sclite") -> Counts:
    """Counts of the minimum-cost alignment of ``hyp`` against ``ref``.

    method: ``"sclite"`` (NIST sclite weights 0/4/3/3 and its tie-breaking) or
    ``"levenshtein"`` (Kaldi ``compute-wer`` plain edit distance). ``"sclite"`` compares tokens
    case-insensitively as sclite does by default; ``"levenshtein"`` compares them exactly.
    """
    c = align_counts_batch([list(ref)], [list(hyp)], method)[0].tolist()
    return Counts(corr=c[0], sub=c[1], ins=c[2], dels=c[3], nref=len(ref))
