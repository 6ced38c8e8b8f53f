"""Context dependency: map (left, centre, right, hmm-state) to a tied pdf id.

Kaldi's ``ContextDependency`` evaluates a decision tree on the phone context window at
run time; here the tree is compiled into a dense lookup table over all ``(P+1)^3`` phone
windows (P = 48 gives ~0.6 M entries), which makes building a chain's pdf sequence one
gather. Monophone systems (context width 1) have a table that is constant over left/right.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from asr.hmm.topology import Topology


class ContextDependency:
    """Dense (left, centre, right, state) -> pdf table.

    Args:
        table: LongTensor (P+1, P+1, P+1, S): ``table[l, c, r, s]`` = pdf id (>= 0) of hmm-state
            ``s`` of phone ``c`` between left ``l`` and right ``r`` (0 = utterance edge);
            -1 where ``s >= num_states[c]`` and for ``c = 0``.
        context_width: 1 (monophone) or 3 (triphone).
        central_position: 0 (monophone) or 1 (triphone).
    """

    def __init__(self, table: Tensor, context_width: int, central_position: int) -> None:
        table = torch.as_tensor(table, dtype=torch.long)
        if table.dim() != 4 or not table.shape[0] == table.shape[1] == table.shape[2]:
            raise ValueError(f"table must have shape (P+1, P+1, P+1, S), got {tuple(table.shape)}")
        if (context_width, central_position) not in ((1, 0), (3, 1)):
            raise ValueError(f"unsupported context_width/central_position {context_width}/{central_position}")
        if int(table.min()) < -1:
            raise ValueError("table entries must be pdf ids >= 0 or -1")
        if context_width == 1 and not bool((table == table[:1, :, :1, :]).all()):
            raise ValueError("monophone table must not depend on left/right context")
        self.table = table
        self.context_width = int(context_width)
        self.central_position = int(central_position)
        self.num_pdfs = int(table.max()) + 1
        valid = table >= 0
        c_idx = torch.arange(table.shape[1]).view(1, -1, 1, 1).expand_as(table)
        s_idx = torch.arange(table.shape[3]).view(1, 1, 1, -1).expand_as(table)
        self.pdf2phone: Tensor = torch.full((self.num_pdfs,), -1, dtype=torch.long)
        self.pdf2state: Tensor = torch.full((self.num_pdfs,), -1, dtype=torch.long)
        self.pdf2phone[table[valid]] = c_idx[valid]
        self.pdf2state[table[valid]] = s_idx[valid]
        if bool((self.pdf2phone < 0).any()):
            missing = torch.nonzero(self.pdf2phone < 0).flatten()[:5].tolist()
            raise ValueError(f"pdf ids {missing}... never occur in the table (ids must be contiguous)")

    @property
    def num_phones(self) -> int:
        return self.table.shape[0] - 1

    @property
    def max_states(self) -> int:
        return self.table.shape[3]

    def check_topology(self, topo: Topology) -> None:
        """Raise ValueError if the table does not cover exactly the states of ``topo``."""
        if topo.num_phones != self.num_phones:
            raise ValueError(f"context dependency has {self.num_phones} phones, topology {topo.num_phones}")
        s = torch.arange(self.max_states)
        need = s.view(1, -1) < topo.num_states.view(-1, 1)  # (P+1, S)
        if topo.max_states > self.max_states or not torch.equal(self.table[0, :, 0, :] >= 0, need):
            raise ValueError("context dependency table does not match the topology's state counts")

    def pdf_sequence(self, phones: Tensor, topo: Topology) -> Tensor:
        """Pdf ids of the left-to-right state chain of an utterance.

        Args:
            phones: LongTensor (N,) of phone ids 1..P; context 0 at both edges.
        Returns:
            LongTensor (sum_i num_states[phones[i]],).
        """
        phones = torch.as_tensor(phones, dtype=torch.long).reshape(-1)
        topo.check_phones(phones)
        if phones.numel() == 0:
            return torch.zeros(0, dtype=torch.long)
        zero = phones.new_zeros(1)
        left = torch.cat([zero, phones[:-1]])
        right = torch.cat([phones[1:], zero])
        rows = self.table[left, phones, right]  # (N, S)
        mask = torch.arange(self.max_states).view(1, -1) < topo.num_states[phones].view(-1, 1)
        pdfs = rows[mask]
        if bool((pdfs < 0).any()):
            raise ValueError("context dependency has no pdf for some state of this phone sequence "
                             "(table and topology disagree)")
        return pdfs

    @classmethod
    def monophone(cls, topo: Topology) -> "ContextDependency":
        """One pdf per (phone, state), numbered phone-major, state-minor."""
        n = topo.num_states
        p1, s = n.numel(), topo.max_states
        offset = torch.cumsum(n, 0) - n
        st = torch.arange(s).view(1, -1)
        row = torch.where(st < n.view(-1, 1), offset.view(-1, 1) + st, torch.full_like(st, -1))  # (P+1, S)
        table = row.view(1, p1, 1, s).expand(p1, p1, p1, s).contiguous()
        return cls(table, 1, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table.clone(), "context_width": self.context_width,
                "central_position": self.central_position}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ContextDependency":
        return cls(torch.as_tensor(d["table"]), int(d["context_width"]), int(d["central_position"]))

    def __repr__(self) -> str:
        return (f"ContextDependency(num_phones={self.num_phones}, num_pdfs={self.num_pdfs}, "
                f"context_width={self.context_width}, central_position={self.central_position})")
