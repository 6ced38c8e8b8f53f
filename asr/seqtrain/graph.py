"""Building the lattice-free denominator graph from a decoding graph.

The phone-recognition HCLG (phone-bigram LM, input labels pdf+1, tropical costs) is read with
kaldifst, turned into arrays, and its epsilon-input arcs (disambiguation/backoff arcs) are
removed in torch: with C(s, q) = log Σ over ε-paths s ⇝ q (the ε-closure, in the log semiring),
every emitting arc q→r becomes arcs s→r of weight C(s,q)+w, and final'(s) = log Σ_q C(s,q)+final(q)
(Mohri 2002, generic ε-removal). Weights become natural-log scores (−cost), the log semiring
sums over paths, which is what the forward-backward needs.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from asr.decode.lattice import connected_states
from asr.seqtrain.fb import DenGraph


def csr_index(arc_src: Tensor, num_states: int) -> tuple[Tensor, Tensor, Tensor]:
    """Arcs grouped by source state: (arc order sorted by source, first position of each state
    in that order, arc count per state)."""
    order = torch.argsort(arc_src, stable=True)
    counts = torch.bincount(arc_src, minlength=num_states)
    return order, torch.cumsum(counts, 0) - counts, counts


def out_arcs(nodes: Tensor, first: Tensor, counts: Tensor, order: Tensor) -> tuple[Tensor, Tensor]:
    """(index into ``nodes``, arc id) for every arc leaving each of ``nodes`` (a ``csr_index`` gather)."""
    n_per = counts[nodes]
    li = torch.repeat_interleave(torch.arange(nodes.numel()), n_per)
    offs = torch.arange(int(n_per.sum())) - torch.repeat_interleave(torch.cumsum(n_per, 0) - n_per, n_per)
    return li, order[first[nodes][li] + offs]


def group_logsumexp(values: Tensor, keys: Tensor, extra: Tensor | None = None
                    ) -> tuple[Tensor, Tensor, Tensor | None]:
    """Log-sum-exp of ``values`` over equal ``keys``: (unique keys, log sums, and with ``extra``
    its mean weighted by exp(values) per key, else None). A key whose values are all −inf sums to −inf."""
    u, inv = torch.unique(keys, return_inverse=True)
    m = torch.full((u.numel(),), float("-inf"), dtype=values.dtype, device=values.device)
    m = m.scatter_reduce(0, inv, values, "amax")
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(values - m[inv])
    s = torch.zeros(u.numel(), dtype=values.dtype, device=values.device).index_add_(0, inv, p)
    mean = None
    if extra is not None:
        mean = torch.zeros_like(s).index_add_(0, inv, p * extra) / s.clamp_min(1e-300)
    return u, torch.log(s) + m, mean


def _expand_join(left_q: Tensor, arc_src: Tensor, num_states: int) -> tuple[Tensor, Tensor]:
    """Pairs (i, j) with arc_src[j] == left_q[i], as index tensors (vectorised join)."""
    order, first, counts = csr_index(arc_src, num_states)
    return out_arcs(left_q, first, counts, order)


def _merge(keys: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Log-sum the weights of equal keys: returns (unique keys, merged log weights)."""
    uk, lw, _ = group_logsumexp(w, keys)
    return uk, lw


def remove_epsilons(num_states: int, start: int, src: Tensor, dst: Tensor, ilabel: Tensor, weight: Tensor,
                    final: Tensor, max_eps_path: int = 64) -> DenGraph:
    """ε-removal of an acceptor given as arrays (ilabel 0 = ε, others = pdf+1; weights natural-log
    scores, final (S,) log weights), trimmed. Raises ValueError on an ε-cycle (longer than
    ``max_eps_path``)."""
    return trim(epsilon_free(num_states, start, src, dst, ilabel, weight, final, max_eps_path))


def epsilon_free(num_states: int, start: int, src: Tensor, dst: Tensor, ilabel: Tensor, weight: Tensor,
                 final: Tensor, max_eps_path: int = 64) -> DenGraph:
    """``remove_epsilons`` without the trimming: state ids are kept, so states entered by ε-arcs
    only are left without in-arcs (see ``connected_after_epsilon_removal``)."""
    eps = ilabel == 0
    es, ed, ew = src[eps], dst[eps], weight[eps].double()
    # ε-closure, starting with the empty path of every state
    cs, cq = torch.arange(num_states), torch.arange(num_states)
    cw = torch.zeros(num_states, dtype=torch.float64)
    fs, fq, fw = cs, cq, cw
    for _ in range(max_eps_path):
        li, aj = _expand_join(fq, es, num_states)
        if len(li) == 0:
            break
        keys, w = _merge(fs[li] * num_states + ed[aj], fw[li] + ew[aj])
        fs, fq, fw = keys // num_states, keys % num_states, w
        cs, cq, cw = torch.cat([cs, fs]), torch.cat([cq, fq]), torch.cat([cw, fw])
    else:
        raise ValueError(f"decoding graph has an epsilon cycle (epsilon paths longer than {max_eps_path})")
    keys, cw = _merge(cs * num_states + cq, cw)
    cs, cq = keys // num_states, keys % num_states
    # emitting arcs out of each closure entry
    ms, md, ml, mw = src[~eps], dst[~eps], ilabel[~eps], weight[~eps].double()
    li, aj = _expand_join(cq, ms, num_states)
    n_lab = int(ml.max()) + 1 if len(ml) else 1
    key = (cs[li] * num_states + md[aj]) * n_lab + ml[aj]
    uk, w = _merge(key, cw[li] + mw[aj])
    lab = uk % n_lab
    sd = uk // n_lab
    fin = torch.full((num_states,), float("-inf"), dtype=torch.float64)
    fk = final.double()[cq] + cw
    fin = fin.scatter_reduce(0, cs, fk, "amax")
    tot = torch.zeros(num_states, dtype=torch.float64).index_add_(0, cs, torch.exp(fk - fin[cs]).nan_to_num(0.0))
    fin = torch.where(torch.isfinite(fin), torch.log(tot) + fin, fin)
    st = torch.full((num_states,), float("-inf"), dtype=torch.float64)
    st[start] = 0.0
    return DenGraph(num_states=num_states, src=sd // num_states, dst=sd % num_states, pdf=lab - 1,
                    weight=w, start=st, final=fin)


def connected_after_epsilon_removal(num_states: int, start: int, src: Tensor, dst: Tensor, ilabel: Tensor,
                                    final: Tensor) -> Tensor | None:
    """(S,) bool: the states ``trim`` keeps after ``epsilon_free``, found in one step when the
    input acceptor is trimmed and topologically sorted (every arc ``src < dst``, every state but
    the start entered by an arc, every non-final state left by one — together these make every
    state reachable and co-reachable, as in a decoder's lattice); None when it is not.

    Then the start and every state entered by an emitting arc stay reachable (through the
    ε-closure of that arc's source) and none loses co-reachability (a state inherits the arcs and
    final weight of its ε-closure): only the states entered by ε-arcs alone drop out. This saves
    the reachability search, which takes as many steps as the lattice has frames."""
    n_in = torch.bincount(dst, minlength=num_states)
    n_out = torch.bincount(src, minlength=num_states)
    not_start = torch.arange(num_states) != start
    if not (bool((src < dst).all()) and bool((n_in[not_start] > 0).all())
            and bool((n_out[~torch.isfinite(final)] > 0).all()) and int(n_in[start]) == 0):
        return None
    keep = torch.zeros(num_states, dtype=torch.bool)
    keep[start] = True
    keep[dst[ilabel != 0]] = True
    return keep


def trim(g: DenGraph) -> DenGraph:
    """Keep only states both reachable from a start state and co-reachable to a final state, renumbered."""
    return keep_states(g, trim_mask(g))


def trim_mask(g: DenGraph) -> Tensor:
    """(S,) bool: the states both reachable from a start state and co-reachable to a final state."""
    keep = connected_states(g.num_states, g.src.numpy(), g.dst.numpy(), torch.isfinite(g.start).numpy(),
                            torch.isfinite(g.final).numpy())
    return torch.from_numpy(keep)


def keep_states(g: DenGraph, keep: Tensor) -> DenGraph:
    """The sub-graph on the states where ``keep`` (S,) is true, renumbered in their order."""
    new_id = torch.cumsum(keep.long(), 0) - 1
    ka = keep[g.src] & keep[g.dst]
    return DenGraph(num_states=int(keep.sum()), src=new_id[g.src[ka]], dst=new_id[g.dst[ka]], pdf=g.pdf[ka],
                    weight=g.weight[ka], start=g.start[keep], final=g.final[keep])


def den_graph_from_fst(path: str | Path) -> DenGraph:
    """Read an HCLG-style FST (kaldifst; input labels pdf+1, 0 = ε; tropical costs) into an
    ε-free ``DenGraph`` with log-semiring scores (−cost)."""
    import kaldifst

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"decoding graph {path} not found")
    fst = kaldifst.StdVectorFst.read(str(path))
    n = fst.num_states
    src, dst, lab, w = [], [], [], []
    final = torch.full((n,), float("-inf"), dtype=torch.float64)
    for s in kaldifst.StateIterator(fst):
        fv = fst.final(s).value
        if fv != float("inf"):
            final[s] = -fv
        for a in kaldifst.ArcIterator(fst, s):
            src.append(s)
            dst.append(a.nextstate)
            lab.append(a.ilabel)
            w.append(-a.weight.value)
    return remove_epsilons(n, fst.start, torch.tensor(src, dtype=torch.long), torch.tensor(dst, dtype=torch.long),
                           torch.tensor(lab, dtype=torch.long), torch.tensor(w, dtype=torch.float64), final)


def pdf_loop_graph(num_pdfs: int, loop_logprob: float = math.log(0.75)) -> DenGraph:
    """The smallest lattice-free hypothesis space: any pdf sequence. State 0 is the start; state
    j+1 = "in pdf j" with a self-loop (``loop_logprob``) and arcs to every other pdf
    (uniform); every pdf state is final. Useful as a weak (unigram-like) denominator and in tests."""
    p = num_pdfs
    nxt = math.log1p(-math.exp(loop_logprob)) - math.log(max(p - 1, 1))
    j = torch.arange(p)
    src = torch.cat([torch.zeros(p, dtype=torch.long), (j + 1).repeat_interleave(p)])
    dst = torch.cat([j + 1, (j + 1).repeat(p)])
    pdf = torch.cat([j, j.repeat(p)])
    same = torch.cat([torch.zeros(p, dtype=torch.bool), j.repeat_interleave(p) == j.repeat(p)])
    w = torch.where(same, torch.tensor(loop_logprob, dtype=torch.float64), torch.tensor(nxt, dtype=torch.float64))
    w[:p] = -math.log(p)
    start = torch.full((p + 1,), float("-inf"), dtype=torch.float64)
    start[0] = 0.0
    final = torch.zeros(p + 1, dtype=torch.float64)
    final[0] = float("-inf")
    return DenGraph(num_states=p + 1, src=src, dst=dst, pdf=pdf, weight=w, start=start, final=final)
