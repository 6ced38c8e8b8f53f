"""Viterbi, forward-backward and batched forced alignment.

* :func:`forward_backward` / :func:`viterbi`: a general HMM with initial log-probs
  ``log_pi (S,)``, transition log-probs ``log_A (S, S)`` and per-frame emission
  log-likelihoods ``(T, S)`` (Rabiner 1989, eqs. 19-27 and 30-35, in the log domain).
* :func:`viterbi_align`: forced alignment of utterances to left-to-right state chains with
  self-loops (the training alignment of Kaldi's ``align-equal-compiled`` /
  ``gmm-align-compiled``, without a beam: the chain is exact Viterbi, so no beam failure),
  batched over utterances (padded to the longest T and chain), the time recursion
  vectorised over chain states. The path must start in chain state 0 and end in the last
  state; its score includes the exit transition of the last state.
  :func:`viterbi_align_states` does the same from each chain state's emissions ``(T, S)``
  instead of per-pdf log-likelihoods ``(T, num_pdfs)`` (far less memory with a large tree).
* :func:`equal_align`: flat-start equal segmentation (Kaldi ``align-equal``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from asr.hmm.topology import Topology, chain_phones, chain_states
from asr.hmm.transition import TransitionModel

NEG_INF = float("-inf")


@dataclass
class AlignResult:
    """One utterance's forced alignment.

    states: LongTensor (T,) index into the chain (non-decreasing, 0 .. S-1).
    pdfs: LongTensor (T,) pdf id per frame (``chain[states]``).
    score: total log-probability of the best path (emissions + transitions), float.
    """

    states: Tensor
    pdfs: Tensor
    score: float


def equal_align(num_frames: int, chain_len: int) -> Tensor:
    """Flat-start alignment: each chain state gets an (almost) equal share of the frames.

    Returns:
        LongTensor (num_frames,) of chain-state indices, non-decreasing, every state used.
    Raises:
        ValueError when ``num_frames < chain_len`` (cannot be aligned) or ``chain_len < 1``.
    """
    if chain_len < 1:
        raise ValueError(f"chain_len must be >= 1, got {chain_len}")
    if num_frames < chain_len:
        raise ValueError(f"cannot align {num_frames} frames to a chain of {chain_len} states")
    return torch.div(torch.arange(num_frames) * chain_len, num_frames, rounding_mode="floor")


def frame_labels(states: Tensor, phones: Tensor, topo: Topology) -> tuple[Tensor, Tensor]:
    """Per-frame phone ids and hmm-state indices of a chain alignment.

    Args:
        states: LongTensor (T,) chain-state index per frame (:attr:`AlignResult.states`).
        phones: LongTensor (N,) the utterance's phone sequence the chain was built from.
        topo: its topology.
    Returns:
        (phone_ali LongTensor (T,), hmm_state_ali LongTensor (T,)).
    """
    cp, cs = chain_phones(phones, topo), chain_states(phones, topo)
    if states.numel() and int(states.max()) >= cp.numel():
        raise ValueError(f"alignment uses chain state {int(states.max())} but the chain has {cp.numel()}")
    return cp[states], cs[states]


def _logsumexp_matvec(alpha: Tensor, log_A: Tensor) -> Tensor:
    """log sum_i exp(alpha[..., i] + log_A[i, j]) -> (..., S)."""
    return torch.logsumexp(alpha.unsqueeze(-1) + log_A, dim=-2)


def _hmm_inputs(log_pi: Tensor, log_A: Tensor, loglik: Tensor, name: str) -> tuple[Tensor, Tensor, Tensor]:
    """Check the shapes of a general HMM's parameters against ``loglik`` (T, S) and return all
    three as float64; ``name`` is the calling function, for the error message."""
    log_pi, log_A, loglik = (x.to(torch.float64) for x in (log_pi, log_A, loglik))
    T, S = loglik.shape
    if log_pi.shape != (S,) or log_A.shape != (S, S):
        raise ValueError(f"shape mismatch: log_pi {tuple(log_pi.shape)}, log_A {tuple(log_A.shape)}, "
                         f"loglik {tuple(loglik.shape)}")
    if T == 0:
        raise ValueError(f"{name} needs at least one frame")
    return log_pi, log_A, loglik


def forward_backward(log_pi: Tensor, log_A: Tensor, loglik: Tensor) -> tuple[Tensor, float]:
    """State posteriors of an HMM (log domain).

    Args:
        log_pi: (S,) initial state log-probabilities.
        log_A: (S, S) transition log-probabilities, ``log_A[i, j] = log P(j at t+1 | i at t)``.
        loglik: (T, S) emission log-likelihoods.
    Returns:
        (log_gamma (T, S) float64 log-posteriors ``log P(state_t = j | obs)``,
         log_likelihood ``log P(obs)``; -inf if no path exists).
    """
    log_pi, log_A, loglik = _hmm_inputs(log_pi, log_A, loglik, "forward_backward")
    T, S = loglik.shape
    alpha = torch.empty(T, S, dtype=torch.float64)
    beta = torch.zeros(T, S, dtype=torch.float64)
    alpha[0] = log_pi + loglik[0]
    for t in range(1, T):
        alpha[t] = _logsumexp_matvec(alpha[t - 1], log_A) + loglik[t]
    for t in range(T - 2, -1, -1):
        beta[t] = torch.logsumexp(log_A + (loglik[t + 1] + beta[t + 1]).unsqueeze(0), dim=1)
    ll = torch.logsumexp(alpha[-1], dim=0)
    log_gamma = alpha + beta - ll
    return log_gamma, float(ll)


def viterbi(log_pi: Tensor, log_A: Tensor, loglik: Tensor) -> tuple[Tensor, float]:
    """Most likely state sequence of an HMM.

    Args: as :func:`forward_backward`.
    Returns:
        (path LongTensor (T,), score = log P(obs, path) of the best path; -inf if none).
        Ties are broken towards the lower predecessor index.
    """
    log_pi, log_A, loglik = _hmm_inputs(log_pi, log_A, loglik, "viterbi")
    T, S = loglik.shape
    back = torch.zeros(T, S, dtype=torch.long)
    delta = log_pi + loglik[0]
    for t in range(1, T):
        cand = delta.unsqueeze(1) + log_A  # (S_prev, S)
        delta, back[t] = cand.max(dim=0)
        delta = delta + loglik[t]
    score, last = delta.max(dim=0)
    path = torch.empty(T, dtype=torch.long)
    path[-1] = last
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path, float(score)


def _align_batch(emissions: Sequence[Tensor], chains: Sequence[Tensor],
                 loop_lp: Tensor, next_lp: Tensor) -> list[AlignResult | None]:
    B = len(emissions)
    dev = emissions[0].device
    T_len = torch.tensor([x.shape[0] for x in emissions], device=dev)
    S_len = torch.tensor([c.numel() for c in chains], device=dev)
    Tm, Sm = int(T_len.max()), int(S_len.max())
    chain = torch.zeros(B, Sm, dtype=torch.long, device=dev)
    s_valid = torch.arange(Sm, device=dev).view(1, -1) < S_len.view(-1, 1)  # (B, Sm)
    em = torch.full((B, Tm, Sm), NEG_INF, dtype=torch.float64, device=dev)
    for b, (x, c) in enumerate(zip(emissions, chains)):
        chain[b, : c.numel()] = c
        em[b, : x.shape[0], : c.numel()] = x.to(torch.float64)
    em.masked_fill_(~s_valid.unsqueeze(1), NEG_INF)
    loop = torch.where(s_valid, loop_lp[chain], torch.full_like(chain, 0, dtype=torch.float64))
    adv = torch.where(s_valid, next_lp[chain], torch.full_like(chain, 0, dtype=torch.float64))
    from_prev_cost = torch.cat([torch.full((B, 1), NEG_INF, dtype=torch.float64, device=dev), adv[:, :-1]], 1)

    came_from_prev = torch.zeros(B, Tm, Sm, dtype=torch.bool, device=dev)
    delta = torch.full((B, Sm), NEG_INF, dtype=torch.float64, device=dev)
    delta[:, 0] = em[:, 0, 0]
    final = delta.clone()
    ar = torch.arange(B, device=dev)
    last_t = T_len - 1
    for t in range(1, Tm):
        stay = delta + loop
        move = torch.cat([delta.new_full((B, 1), NEG_INF), delta[:, :-1]], 1) + from_prev_cost
        take = move > stay
        came_from_prev[:, t] = take
        delta = torch.where(take, move, stay) + em[:, t]
        final = torch.where((last_t == t).view(-1, 1), delta, final)
    score = final[ar, S_len - 1] + adv[ar, S_len - 1]

    cur = S_len - 1
    path = torch.empty(B, Tm, dtype=torch.long, device=dev)
    for t in range(Tm - 1, 0, -1):
        path[:, t] = cur
        step = came_from_prev[ar, t, cur] & (t <= last_t)
        cur = cur - step.long()
    path[:, 0] = cur
    out: list[AlignResult | None] = []
    for b in range(B):
        sc = float(score[b])
        if sc == NEG_INF or int(path[b, 0]) != 0:
            out.append(None)
            continue
        st = path[b, : int(T_len[b])].cpu()
        out.append(AlignResult(states=st, pdfs=chains[b].cpu()[st], score=sc))
    return out


def viterbi_align(loglikes: Sequence[Tensor], chains: Sequence[Tensor], trans: TransitionModel,
                  batch_size: int = 64) -> list[AlignResult | None]:
    """Batched forced alignment of utterances to left-to-right chains with self-loops.

    Args:
        loglikes: per utterance Tensor (T_i, num_pdfs) of acoustic log-likelihoods.
        chains: per utterance LongTensor (S_i,) pdf id of each chain state (e.g. from
            :meth:`ContextDependency.pdf_sequence`).
        trans: per-pdf self-loop / forward log-probabilities.
        batch_size: utterances per padded batch (sorted by length to limit padding).
    Returns:
        per utterance an :class:`AlignResult`, or None when it cannot be aligned
        (``T_i < S_i``, or no finite-score path); the caller reports those by id.
    """
    if len(loglikes) != len(chains):
        raise ValueError(f"{len(loglikes)} log-likelihood matrices but {len(chains)} chains")
    for i, (x, c) in enumerate(zip(loglikes, chains)):
        if x.dim() != 2:
            raise ValueError(f"utterance {i}: log-likelihoods must be (T, num_pdfs), got {tuple(x.shape)}")
        if c.dim() != 1:
            raise ValueError(f"utterance {i}: chain must be 1-D, got {tuple(c.shape)}")
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= x.shape[1]):
            raise ValueError(f"utterance {i}: chain has pdf ids outside 0..{x.shape[1] - 1}")
    return viterbi_align_states([x[:, c.to(x.device)] for x, c in zip(loglikes, chains)], chains, trans,
                                batch_size)


def viterbi_align_states(emissions: Sequence[Tensor], chains: Sequence[Tensor], trans: TransitionModel,
                         batch_size: int = 64) -> list[AlignResult | None]:
    """:func:`viterbi_align` from the emissions of each chain state: ``emissions[i] (T_i, S_i)``
    holds at column ``s`` the log-likelihood of pdf ``chains[i][s]`` (what ``loglikes[:, chain]``
    would give), so a caller never builds the ``(T, num_pdfs)`` matrix of pdfs absent from the
    chain. Same arguments and results otherwise."""
    if len(emissions) != len(chains):
        raise ValueError(f"{len(emissions)} emission matrices but {len(chains)} chains")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    results: list[AlignResult | None] = [None] * len(emissions)
    ok = []
    for i, (x, c) in enumerate(zip(emissions, chains)):
        if c.dim() != 1:
            raise ValueError(f"utterance {i}: chain must be 1-D, got {tuple(c.shape)}")
        if x.dim() != 2 or x.shape[1] != c.numel():
            raise ValueError(f"utterance {i}: emissions must be (T, {c.numel()}) for its chain, got {tuple(x.shape)}")
        if c.numel() and int(c.min()) < 0:
            raise ValueError(f"utterance {i}: chain has negative pdf ids")
        if c.numel() and int(c.max()) >= trans.num_pdfs:
            raise ValueError(f"utterance {i}: chain pdf {int(c.max())} >= transition model's {trans.num_pdfs} pdfs")
        if 0 < c.numel() <= x.shape[0]:
            ok.append(i)
    ok.sort(key=lambda i: (emissions[i].shape[0], i))
    for k in range(0, len(ok), batch_size):
        idx = ok[k: k + batch_size]
        dev = emissions[idx[0]].device
        res = _align_batch([emissions[i] for i in idx], [chains[i].to(dev) for i in idx],
                           trans.loop_logprob.to(dev), trans.next_logprob.to(dev))
        for i, r in zip(idx, res):
            results[i] = r
    return results
