"""Topology, transition model, context dependency: structure and round trips."""
from __future__ import annotations

import pytest
import torch

from asr.hmm import (ContextDependency, Topology, TransitionModel, chain_phone_index, chain_phones,
                     chain_states)


def test_topology():
    t = Topology(48, 3, {37: 5})
    assert t.num_states.shape == (49,) and int(t.num_states[0]) == 0
    assert int(t.num_states[37]) == 5 and int(t.num_states[1]) == 3 and t.max_states == 5
    assert Topology.from_dict(t.to_dict()) == t
    with pytest.raises(ValueError):
        Topology(48, 3, {49: 3})
    with pytest.raises(ValueError):
        Topology(48, 0)


def test_chain_helpers():
    t = Topology(5, 3, {1: 1, 4: 2})
    ph = torch.tensor([1, 2, 4, 2, 1])
    assert chain_phones(ph, t).tolist() == [1, 2, 2, 2, 4, 4, 2, 2, 2, 1]
    assert chain_states(ph, t).tolist() == [0, 0, 1, 2, 0, 1, 0, 1, 2, 0]
    assert chain_phone_index(ph, t).tolist() == [0, 1, 1, 1, 2, 2, 3, 3, 3, 4]
    with pytest.raises(ValueError, match="1..5"):
        chain_phones(torch.tensor([0, 2]), t)


def test_monophone_numbering_and_pdf_sequence():
    t = Topology(5, 3, {1: 1, 4: 2})
    cd = ContextDependency.monophone(t)
    assert cd.num_pdfs == 1 + 3 + 3 + 2 + 3
    assert cd.context_width == 1 and cd.central_position == 0
    # phone-major, state-minor
    expect = {}
    k = 0
    for p in range(1, 6):
        for s in range(int(t.num_states[p])):
            expect[(p, s)] = k
            k += 1
    ph = torch.tensor([1, 2, 4, 2, 1])
    seq = cd.pdf_sequence(ph, t)
    ref = [expect[(int(p), int(s))] for p, s in zip(chain_phones(ph, t), chain_states(ph, t))]
    assert seq.tolist() == ref
    assert cd.pdf2phone.tolist() == [p for (p, s) in sorted(expect, key=expect.get)]
    assert cd.pdf2state.tolist() == [s for (p, s) in sorted(expect, key=expect.get)]
    cd.check_topology(t)
    with pytest.raises(ValueError):
        cd.check_topology(Topology(5, 3))
    cd2 = ContextDependency.from_dict(cd.to_dict())
    assert torch.equal(cd2.table, cd.table)


def test_triphone_pdf_sequence_uses_contexts():
    t = Topology(3, 2)
    P1 = 4
    # a distinct pdf for every (l, c, r, s) with c >= 1
    table = torch.full((P1, P1, P1, 2), -1, dtype=torch.long)
    ids = torch.arange(P1 * 3 * P1 * 2).view(P1, 3, P1, 2)
    table[:, 1:] = ids
    cd = ContextDependency(table, 3, 1)
    ph = torch.tensor([2, 3, 3, 1])
    seq = cd.pdf_sequence(ph, t).tolist()
    ctx = [(0, 2, 3), (2, 3, 3), (3, 3, 1), (3, 1, 0)]
    assert seq == [int(table[l, c, r, s]) for (l, c, r) in ctx for s in range(2)]
    with pytest.raises(ValueError):
        ContextDependency(table[:, :, :3], 3, 1)
    with pytest.raises(ValueError, match="left/right"):
        ContextDependency(table, 1, 0)


def test_transition_model_defaults():
    tm = TransitionModel(4, loop_prob=0.75)
    assert torch.allclose(tm.loop_logprob, torch.full((4,), 0.75, dtype=torch.float64).log())
    assert torch.allclose(tm.next_logprob, torch.full((4,), 0.25, dtype=torch.float64).log())
    tm.update([torch.tensor([0, 0, 0, 1])])  # unseen pdfs 2, 3 keep 0.75
    assert tm.loop_prob.tolist() == pytest.approx([2 / 3, 0.01, 0.75, 0.75])
    with pytest.raises(ValueError):
        tm.update([torch.tensor([0, 9])])
