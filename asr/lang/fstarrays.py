"""Flat array views of kaldifst FSTs, so graph edits are vectorised tensor operations.

An FST is viewed as ``FstArrays``: arc tensors ``src, dst, ilabel, olabel`` (LongTensor (A,)),
``weight`` (DoubleTensor (A,), tropical cost = -ln prob), ``final`` (DoubleTensor (S,), +inf for
non-final states) and ``start``. Conversion goes through the OpenFst text format, which
``kaldifst.compile`` reads and ``to_str`` writes in C++ (no per-arc Python calls into the binding).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import kaldifst

from asr.jobs.atomic import atomic_path


@dataclass
class FstArrays:
    """Arc-list view of a tropical-semiring FST (state 0 need not be the start)."""

    num_states: int
    start: int
    src: Tensor
    dst: Tensor
    ilabel: Tensor
    olabel: Tensor
    weight: Tensor
    final: Tensor

    @property
    def num_arcs(self) -> int:
        return int(self.src.numel())


def parse_fst_text(text: str, num_weights: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Parse OpenFst text output (``to_str``) without a per-line Python loop.

    Args:
        text: lines ``src dst ilabel olabel [weight]`` and ``state [weight]``; a lattice weight is
            ``graph,acoustic`` (``num_weights = 2``).
    Returns:
        (arcs (A, 4 + num_weights) float64, finals (F, 1 + num_weights) float64); an omitted
        weight is One (zeros).
    """
    if num_weights == 2:
        text = text.replace(",", " ")
    if not text.endswith("\n"):
        text += "\n"
    vals = np.fromstring(text, sep=" ") if text.strip() else np.zeros(0)
    b = np.frombuffer(text.encode(), dtype=np.uint8)
    ws = (b == 32) | (b == 9) | (b == 10)
    tok_start = ~ws & np.concatenate([[True], ws[:-1]])
    cum = np.cumsum(tok_start)
    per_line = np.diff(np.concatenate([[0], cum[b == 10]]))
    per_line = per_line[per_line > 0]
    off = np.cumsum(per_line) - per_line
    if vals.size != int(per_line.sum()):
        raise ValueError("could not parse FST text (unexpected token)")
    nw = num_weights
    is_arc = per_line >= 4
    a_off, a_n = off[is_arc], per_line[is_arc]
    arcs = np.zeros((a_off.size, 4 + nw))
    arcs[:, :4] = vals[a_off[:, None] + np.arange(4)]
    has_w = a_n == 4 + nw
    arcs[has_w, 4:] = vals[a_off[has_w, None] + 4 + np.arange(nw)]
    f_off, f_n = off[~is_arc], per_line[~is_arc]
    finals = np.zeros((f_off.size, 1 + nw))
    finals[:, 0] = vals[f_off]
    has_w = f_n == 1 + nw
    finals[has_w, 1:] = vals[f_off[has_w, None] + 1 + np.arange(nw)]
    return arcs, finals


def fst_to_arrays(fst: "kaldifst.StdVectorFst") -> FstArrays:
    """Arc arrays of a ``StdVectorFst`` (state ids unchanged)."""
    arcs, finals = parse_fst_text(fst.to_str(), 1)
    n = fst.num_states
    a = torch.from_numpy(arcs[:, :4].astype(np.int64))
    final = torch.full((n,), float("inf"), dtype=torch.float64)
    final[torch.from_numpy(finals[:, 0].astype(np.int64))] = torch.from_numpy(finals[:, 1])
    return FstArrays(num_states=n, start=int(fst.start), src=a[:, 0].clone(), dst=a[:, 1].clone(),
                     ilabel=a[:, 2].clone(), olabel=a[:, 3].clone(),
                     weight=torch.from_numpy(arcs[:, 4].copy()), final=final)


def arrays_to_fst(fa: FstArrays) -> "kaldifst.StdVectorFst":
    """Build a ``StdVectorFst`` from arc arrays; the start state is written first so the
    compiled FST keeps ``fa.start`` as its start (OpenFst text: first line's source = start)."""
    order = torch.argsort((fa.src != fa.start).to(torch.int8), stable=True)
    src, dst = fa.src[order].tolist(), fa.dst[order].tolist()
    il, ol, w = fa.ilabel[order].tolist(), fa.olabel[order].tolist(), fa.weight[order].tolist()
    lines = [f"{s} {d} {i} {o} {x!r}" for s, d, i, o, x in zip(src, dst, il, ol, w)]
    fin = torch.nonzero(torch.isfinite(fa.final)).flatten().tolist()
    if not lines:
        lines.append(f"{fa.start} {float(fa.final[fa.start])!r}" if fa.start in fin else "")
        fin = [f for f in fin if f != fa.start]
    lines.extend(f"{s} {float(fa.final[s])!r}" for s in fin)
    fst = kaldifst.compile("\n".join(lines) + "\n", keep_state_numbering=True)
    # keep_state_numbering keeps ids; states above the largest mentioned id are dropped, which is
    # fine: they carry no arcs and are not final.
    return fst


def write_fst(fst: "kaldifst.StdVectorFst", path: str | Path) -> Path:
    """Write an FST atomically (``path.tmp`` then rename)."""
    with atomic_path(path) as tmp:
        if not fst.write(str(tmp)):
            raise OSError(f"could not write FST to {tmp}")
    return Path(path)


def read_fst(path: str | Path) -> "kaldifst.StdVectorFst":
    """Read a binary ``StdVectorFst``; a missing/unreadable file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FST {path} does not exist")
    fst = kaldifst.StdVectorFst.read(str(path))
    if fst is None:
        raise ValueError(f"could not read FST {path}")
    return fst
