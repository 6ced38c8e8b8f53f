"""HCLG decoding graphs, following Kaldi's ``utils/mkgraph.sh`` (Mohri, Pereira & Riley 2002,
"Weighted finite-state transducers in speech recognition"; Povey et al. 2011, the Kaldi toolkit).

1. ``LG = min(det*(L o G))`` in the log semiring (``fsttablecompose | fstdeterminizestar
   --use-log=true | fstminimizeencoded``).
2. ``CLG = C o LG`` with ``kaldifst.compose_context`` (context width / central position of the
   ``ContextDependency``; monophone = width 1), which also returns the ``ilabel_info`` windows.
3. ``H`` (without self-loops) maps every window to its phone's left-to-right HMM whose input labels
   are ``pdf + 1`` read from ``ctx.table[left, centre, right, state]``; disambiguation windows map
   to auxiliary input symbols (Kaldi's ``GetHTransducer``).
4. ``HCLG = min(rmsymbols(det*(H o CLG)))``: determinise with the disambiguation symbols, then
   replace them by epsilon and minimise (``fstminimizeencoded``).
5. Self-loops are added last (Kaldi's ``add-self-loops``): states are split so every state's
   incoming arcs carry one pdf (``MakePrecedingInputSymbolsSame``), then each state entered by
   pdf ``p`` gets a loop of cost ``-self_loop_scale * log P(loop | p)`` and its exits (arcs and
   final weight) get ``-self_loop_scale * log(1 - P(loop | p)) - transition_scale *
   log(P(next | p) / (1 - P(loop | p)))``.

Output: ``HCLG.fst`` with input labels ``pdf_id + 1`` and output labels word ids (``words.txt``).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from asr.lang.fstarrays import FstArrays, arrays_to_fst, fst_to_arrays, read_fst, write_fst
from asr.lang.langdir import load_lang_info
from asr.jobs.atomic import write_text_atomic


def make_h_arrays(ilabels: list[list[int]], table: Tensor, num_states: Tensor,
                  context_width: int, central_position: int, num_pdfs: int) -> tuple[FstArrays, int]:
    """H transducer (no self-loops) over the ``ilabel_info`` windows of ``compose_context``.

    Args:
        ilabels: window per CLG input label (``[]`` epsilon, ``[-d]`` disambiguation symbol d,
            otherwise ``context_width`` phone ids with 0 = no context).
        table: LongTensor (P+1, P+1, P+1, S) pdf ids (``ContextDependency.table``).
        num_states: LongTensor (P+1,) states per phone (``Topology.num_states``).
    Returns:
        (H as arrays: input ``pdf+1`` or an auxiliary symbol ``> num_pdfs``, output the window
        index; the number of auxiliary symbols, numbered ``num_pdfs+1 ..``).
    """
    J = len(ilabels)
    lens = np.fromiter((len(w) for w in ilabels), dtype=np.int64, count=J)
    W = context_width
    phone_idx = np.nonzero(lens == W)[0] if W > 1 else np.nonzero(
        (lens == 1) & np.fromiter(((w[0] > 0) if w else False for w in ilabels), bool, count=J))[0]
    aux_idx = np.setdiff1d(np.nonzero(lens >= 1)[0], phone_idx)
    win = torch.from_numpy(np.array([ilabels[j] for j in phone_idx], dtype=np.int64).reshape(-1, W))
    c = win[:, central_position]
    if bool((c <= 0).any()):
        # windows whose centre is "no phone" carry no HMM: treat them like auxiliary symbols
        extra = torch.from_numpy(phone_idx)[c <= 0].numpy()
        aux_idx = np.sort(np.concatenate([aux_idx, extra]))
        keep = c > 0
        phone_idx, win, c = phone_idx[keep.numpy()], win[keep], c[keep]
    if W == 3:
        left, right = win[:, 0], win[:, 2]
    else:
        left = right = torch.zeros_like(c)
    S = table.shape[3]
    pdfs = table[left, c, right]  # (N, S)
    n = num_states[c]  # (N,)
    valid = torch.arange(S).view(1, -1) < n.view(-1, 1)
    if bool((pdfs[valid] < 0).any()) or bool((pdfs[valid] >= num_pdfs).any()):
        raise ValueError("context dependency table has no pdf for a state of some phone window")
    N = c.numel()
    # interior states: window i has n_i - 1 of them, numbered after the hub state 0
    inner = torch.cumsum(n - 1, 0) - (n - 1) + 1  # first interior id per window
    k = torch.arange(S).view(1, -1).expand(N, S)
    src = torch.where(k == 0, torch.zeros_like(k), inner.view(-1, 1) + k - 1)
    dst = torch.where(k == n.view(-1, 1) - 1, torch.zeros_like(k), inner.view(-1, 1) + k)
    olab = torch.where(k == 0, torch.from_numpy(phone_idx).view(-1, 1).expand(N, S), torch.zeros_like(k))
    src, dst, ilab, olab = src[valid], dst[valid], pdfs[valid] + 1, olab[valid]
    naux = len(aux_idx)
    aux = torch.from_numpy(aux_idx.astype(np.int64))
    src = torch.cat([src, torch.zeros(naux, dtype=torch.long)])
    dst = torch.cat([dst, torch.zeros(naux, dtype=torch.long)])
    ilab = torch.cat([ilab, num_pdfs + 1 + torch.arange(naux)])
    olab = torch.cat([olab, aux])
    num = int(1 + (n - 1).sum())
    final = torch.full((num,), float("inf"), dtype=torch.float64)
    final[0] = 0.0
    return FstArrays(num, 0, src, dst, ilab, olab, torch.zeros(src.numel(), dtype=torch.float64),
                     final), naux


def add_self_loops(fa: FstArrays, loop_logprob: Tensor, next_logprob: Tensor,
                   self_loop_scale: float = 0.1, transition_scale: float = 1.0) -> FstArrays:
    """Add HMM self-loops and exit costs to a graph whose arcs mean "enter the state with pdf
    ``ilabel - 1``" (see module docstring, step 5). Vectorised over arcs.

    Args:
        fa: graph arrays (input labels ``pdf + 1``, 0 = epsilon).
        loop_logprob, next_logprob: Tensor (num_pdfs,), natural log (``TransitionModel``).
    """
    cls = fa.ilabel.clone()  # class of the state an arc enters = its input label (0 = epsilon)
    pair_state = torch.cat([fa.dst, torch.tensor([fa.start])])
    pair_cls = torch.cat([cls, torch.tensor([0])])
    K = int(cls.max()) + 1 if cls.numel() else 1
    key = pair_state * K + pair_cls
    ukey, inv = torch.unique(key, return_inverse=True)  # new state id = index in ukey
    new_state = ukey // K
    new_cls = ukey % K
    arc_newdst = inv[:-1]
    new_start = int(inv[-1])
    # copies per original state: CSR over new states sorted by original state (ukey is sorted)
    counts = torch.bincount(new_state, minlength=fa.num_states)
    first = torch.cumsum(counts, 0) - counts
    reps = counts[fa.src]  # each arc is duplicated once per copy of its source state
    arc_idx = torch.repeat_interleave(torch.arange(fa.num_arcs), reps)
    offs = torch.arange(arc_idx.numel()) - torch.repeat_interleave(torch.cumsum(reps, 0) - reps, reps)
    new_src = first[fa.src[arc_idx]] + offs
    pdf = new_cls - 1
    has_loop = new_cls > 0
    lp = loop_logprob.to(torch.float64)
    npr = next_logprob.to(torch.float64)
    log1m_loop = torch.log1p(-torch.exp(lp))
    exit_cost_pdf = -(self_loop_scale * log1m_loop + transition_scale * (npr - log1m_loop))
    exit_cost = torch.zeros(ukey.numel(), dtype=torch.float64)
    exit_cost[has_loop] = exit_cost_pdf[pdf[has_loop]]
    w = fa.weight[arc_idx] + exit_cost[new_src]
    final = fa.final[new_state] + exit_cost
    loops = torch.nonzero(has_loop).flatten()
    src = torch.cat([new_src, loops])
    dst = torch.cat([arc_newdst[arc_idx], loops])
    il = torch.cat([fa.ilabel[arc_idx], new_cls[loops]])
    ol = torch.cat([fa.olabel[arc_idx], torch.zeros_like(loops)])
    w = torch.cat([w, -self_loop_scale * lp[pdf[loops]]])
    return FstArrays(ukey.numel(), new_start, src, dst, il, ol, w, final)


def make_hclg(lang_dir: str | Path, ctx, topo, trans, out_dir: str | Path,
              self_loop_scale: float = 0.1, transition_scale: float = 1.0) -> Path:
    """Build ``out_dir/HCLG.fst`` (+ ``words.txt``, ``phones.txt``, ``graph.json``).

    Args:
        lang_dir: lang dir from ``make_phone_lang`` / ``make_word_lang``.
        ctx: ``asr.hmm.ContextDependency`` (``table``, ``context_width``, ``central_position``).
        topo: ``asr.hmm.Topology`` (``num_states``).
        trans: ``asr.hmm.TransitionModel`` (``loop_logprob``, ``next_logprob``).
        self_loop_scale / transition_scale: as Kaldi ``mkgraph.sh`` (0.1 / 1.0).
    Returns:
        path of ``HCLG.fst``: input labels ``pdf + 1``, output labels word ids.
    """
    import kaldifst

    lang = Path(lang_dir)
    info = load_lang_info(lang)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if int(topo.num_states.numel()) - 1 != info["num_phones"]:
        raise ValueError(f"topology has {topo.num_states.numel() - 1} phones, lang {lang} has "
                         f"{info['num_phones']}")
    if ctx.table.shape[0] - 1 != info["num_phones"]:
        raise ValueError(f"context dependency has {ctx.table.shape[0] - 1} phones, lang {lang} has "
                         f"{info['num_phones']}")
    num_pdfs = int(ctx.num_pdfs)
    if int(trans.loop_logprob.numel()) != num_pdfs:
        raise ValueError(f"transition model has {trans.loop_logprob.numel()} pdfs, "
                         f"context dependency {num_pdfs}")
    t0 = time.time()
    L = read_fst(lang / "L.fst")
    G = read_fst(lang / "G.fst")
    kaldifst.arcsort(L, "olabel")
    kaldifst.arcsort(G, "ilabel")
    LG = kaldifst.compose(L, G)
    kaldifst.determinize_star(LG, use_log=True)
    kaldifst.minimize_encoded(LG)
    kaldifst.arcsort(LG, "ilabel")
    CLG, ilabels = kaldifst.compose_context(info["disambig_phone_ids"], ctx.context_width,
                                            ctx.central_position, LG)
    kaldifst.arcsort(CLG, "ilabel")
    H, _ = make_h_arrays(ilabels, ctx.table, topo.num_states, ctx.context_width,
                         ctx.central_position, num_pdfs)
    Hf = arrays_to_fst(H)
    kaldifst.arcsort(Hf, "olabel")
    HCLG = kaldifst.compose(Hf, CLG)
    kaldifst.determinize_star(HCLG, use_log=True)
    fa = fst_to_arrays(HCLG)
    fa.ilabel = torch.where(fa.ilabel > num_pdfs, torch.zeros_like(fa.ilabel), fa.ilabel)
    HCLG = arrays_to_fst(fa)
    kaldifst.minimize_encoded(HCLG)
    fa = add_self_loops(fst_to_arrays(HCLG), trans.loop_logprob, trans.next_logprob,
                        self_loop_scale, transition_scale)
    HCLG = arrays_to_fst(fa)
    kaldifst.arcsort(HCLG, "ilabel")
    write_fst(HCLG, out / "HCLG.fst")
    shutil.copyfile(lang / "words.txt", out / "words.txt.tmp")
    (out / "words.txt.tmp").replace(out / "words.txt")
    shutil.copyfile(lang / "phones.txt", out / "phones.txt.tmp")
    (out / "phones.txt.tmp").replace(out / "phones.txt")
    meta = {"lang_dir": str(lang), "mode": info["mode"], "num_pdfs": num_pdfs,
            "context_width": ctx.context_width, "central_position": ctx.central_position,
            "self_loop_scale": self_loop_scale, "transition_scale": transition_scale,
            "num_states": HCLG.num_states, "num_arcs": int(fa.num_arcs),
            "build_seconds": round(time.time() - t0, 3)}
    write_text_atomic(out / "graph.json", json.dumps(meta, indent=2) + "\n")
    return out / "HCLG.fst"
