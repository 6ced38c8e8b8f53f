"""HMM topology: one left-to-right HMM per phone.

Every phone ``p`` (ids ``1..P``; 0 is epsilon / utterance edge) has ``num_states[p]``
emitting states in a left-to-right chain; each state has a self-loop and a forward
transition (the Bakis topology of Kaldi's default ``topo``, Povey et al. 2011).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class Topology:
    """Number of emitting states per phone.

    Args:
        num_phones: P, the number of real phones (ids 1..P).
        default_states: states of every phone not listed in ``states``.
        states: optional ``{phone_id: num_states}`` overrides (e.g. 5 for silence).
    """

    def __init__(self, num_phones: int, default_states: int = 3, states: dict[int, int] | None = None) -> None:
        if num_phones < 1:
            raise ValueError(f"num_phones must be >= 1, got {num_phones}")
        if default_states < 1:
            raise ValueError(f"default_states must be >= 1, got {default_states}")
        n = torch.full((num_phones + 1,), default_states, dtype=torch.long)
        n[0] = 0
        for p, s in (states or {}).items():
            if not 1 <= int(p) <= num_phones:
                raise ValueError(f"phone id {p} outside 1..{num_phones}")
            if int(s) < 1:
                raise ValueError(f"phone {p}: number of states must be >= 1, got {s}")
            n[int(p)] = int(s)
        self.num_phones = int(num_phones)
        self.default_states = int(default_states)
        self.states = {int(p): int(s) for p, s in (states or {}).items()}
        self.num_states: Tensor = n

    @property
    def max_states(self) -> int:
        """Largest number of states of any phone."""
        return int(self.num_states.max())

    def check_phones(self, phones: Tensor, what: str = "phone sequence") -> None:
        """Raise ValueError if ``phones`` holds ids outside ``1..P``."""
        if phones.numel() and (int(phones.min()) < 1 or int(phones.max()) > self.num_phones):
            raise ValueError(f"{what}: phone ids must lie in 1..{self.num_phones}, got "
                             f"min {int(phones.min())}, max {int(phones.max())}")

    def to_dict(self) -> dict[str, Any]:
        return {"num_phones": self.num_phones, "default_states": self.default_states,
                "states": dict(self.states)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Topology":
        return cls(int(d["num_phones"]), int(d["default_states"]),
                   {int(k): int(v) for k, v in d.get("states", {}).items()})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Topology) and torch.equal(self.num_states, other.num_states)

    def __repr__(self) -> str:
        return f"Topology(num_phones={self.num_phones}, default_states={self.default_states}, states={self.states})"


def chain_phones(phones: Tensor, topo: Topology) -> Tensor:
    """Phone id of every state of the left-to-right chain of a phone sequence.

    Args:
        phones: LongTensor (N,) of phone ids 1..P.
    Returns:
        LongTensor (sum_i num_states[phones[i]],).
    """
    phones = torch.as_tensor(phones, dtype=torch.long)
    topo.check_phones(phones)
    return torch.repeat_interleave(phones, topo.num_states[phones])


def chain_states(phones: Tensor, topo: Topology) -> Tensor:
    """HMM-state index (0..num_states[p]-1) of every state of the chain of ``phones``.

    Returns:
        LongTensor (sum_i num_states[phones[i]],), aligned with :func:`chain_phones`.
    """
    phones = torch.as_tensor(phones, dtype=torch.long)
    topo.check_phones(phones)
    n = topo.num_states[phones]
    total = int(n.sum())
    starts = torch.cumsum(n, 0) - n
    return torch.arange(total) - torch.repeat_interleave(starts, n)


def chain_phone_index(phones: Tensor, topo: Topology) -> Tensor:
    """Position (0..N-1) in ``phones`` of the phone that owns every chain state."""
    phones = torch.as_tensor(phones, dtype=torch.long)
    topo.check_phones(phones)
    return torch.repeat_interleave(torch.arange(phones.numel()), topo.num_states[phones])
