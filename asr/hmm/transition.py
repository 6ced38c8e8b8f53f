"""Transition model: a self-loop and a forward probability per pdf.

Each emitting HMM state either stays (self-loop) or advances to the next state of the
chain (the last state of a phone advances into the first state of the next phone, or
exits at the end of the utterance). Probabilities are tied by pdf, as Kaldi's
``TransitionModel`` ties them by transition-state; ML re-estimation from alignment
counts (Kaldi ``MleUpdate``): ``p_loop = (frames - exits) / frames``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor


class TransitionModel:
    """Per-pdf self-loop / forward log-probabilities (natural log).

    Args:
        num_pdfs: number of pdfs (tied states).
        loop_prob: initial self-loop probability of every pdf (Kaldi's default topo: 0.75).
    """

    def __init__(self, num_pdfs: int, loop_prob: float = 0.75) -> None:
        if num_pdfs < 1:
            raise ValueError(f"num_pdfs must be >= 1, got {num_pdfs}")
        if not 0.0 < loop_prob < 1.0:
            raise ValueError(f"loop_prob must be in (0, 1), got {loop_prob}")
        self.num_pdfs = int(num_pdfs)
        self.loop_prob: Tensor = torch.full((num_pdfs,), float(loop_prob), dtype=torch.float64)

    @property
    def loop_logprob(self) -> Tensor:
        """Tensor (num_pdfs,) float64: log P(stay)."""
        return torch.log(self.loop_prob)

    @property
    def next_logprob(self) -> Tensor:
        """Tensor (num_pdfs,) float64: log P(advance) = log(1 - P(stay))."""
        return torch.log1p(-self.loop_prob)

    @staticmethod
    def count(pdf_alis: Sequence[Tensor], num_pdfs: int,
              state_alis: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Occupancy and exit counts from alignments.

        A frame ``t`` is the last of its chain state when the next frame has a different pdf
        or (if given) a different state index, or when it is the last frame of the utterance.

        Args:
            pdf_alis: per utterance LongTensor (T,) of pdf ids.
            state_alis: optional per utterance LongTensor (T,) of chain-state (or hmm-state)
                indices, which separates consecutive chain states that share a pdf.
        Returns:
            (frames (num_pdfs,), exits (num_pdfs,)) float64 counts.
        """
        if state_alis is not None and len(state_alis) != len(pdf_alis):
            raise ValueError(f"{len(pdf_alis)} pdf alignments but {len(state_alis)} state alignments")
        if not len(pdf_alis):
            z = torch.zeros(num_pdfs, dtype=torch.float64)
            return z, z.clone()
        pdf = torch.cat([torch.as_tensor(a, dtype=torch.long).reshape(-1) for a in pdf_alis])
        lens = torch.tensor([int(torch.as_tensor(a).numel()) for a in pdf_alis])
        if pdf.numel() and (int(pdf.min()) < 0 or int(pdf.max()) >= num_pdfs):
            raise ValueError(f"pdf alignment holds ids outside 0..{num_pdfs - 1}")
        ends = torch.zeros(pdf.numel(), dtype=torch.bool)
        ends[torch.cumsum(lens, 0)[lens > 0] - 1] = True
        change = pdf[1:] != pdf[:-1]
        if state_alis is not None:
            st = torch.cat([torch.as_tensor(a, dtype=torch.long).reshape(-1) for a in state_alis])
            if st.numel() != pdf.numel():
                raise ValueError("state alignments and pdf alignments differ in length")
            change |= st[1:] != st[:-1]
        ends[:-1] |= change
        frames = torch.zeros(num_pdfs, dtype=torch.float64).index_add_(0, pdf, torch.ones(pdf.numel(), dtype=torch.float64))
        exits = torch.zeros(num_pdfs, dtype=torch.float64).index_add_(0, pdf[ends], torch.ones(int(ends.sum()), dtype=torch.float64))
        return frames, exits

    def update(self, pdf_alis: Sequence[Tensor], state_alis: Sequence[Tensor] | None = None,
               floor: float = 0.01) -> None:
        """ML re-estimation from alignment counts; pdfs never seen keep their value.

        Probabilities are clamped to ``[floor, 1 - floor]``.
        """
        if not 0.0 < floor < 0.5:
            raise ValueError(f"floor must be in (0, 0.5), got {floor}")
        frames, exits = self.count(pdf_alis, self.num_pdfs, state_alis)
        seen = frames > 0
        p = torch.where(seen, (frames - exits) / frames.clamp(min=1.0), self.loop_prob)
        self.loop_prob = p.clamp(floor, 1.0 - floor)

    def to_dict(self) -> dict[str, Any]:
        return {"num_pdfs": self.num_pdfs, "loop_prob": self.loop_prob.clone()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransitionModel":
        tm = cls(int(d["num_pdfs"]))
        lp = torch.as_tensor(d["loop_prob"], dtype=torch.float64)
        if lp.shape != (tm.num_pdfs,):
            raise ValueError(f"loop_prob has shape {tuple(lp.shape)}, expected ({tm.num_pdfs},)")
        tm.loop_prob = lp.clone()
        return tm

    def __repr__(self) -> str:
        return f"TransitionModel(num_pdfs={self.num_pdfs}, mean loop_prob={float(self.loop_prob.mean()):.3f})"

