"""Flat array views of kaldifst FSTs, so graph edits are vectorised tensor operations.

An FST is viewed as ``FstArrays``: arc tensors ``src, dst, ilabel, olabel`` (LongTensor (A,)),
``weight`` (DoubleTensor (A,), tropical cost = -ln prob), ``final`` (DoubleTensor (S,), +inf for
non-final states) and ``start``. Conversion goes through the OpenFst text format, which
``kaldifst.compile`` reads and ``to_str`` writes in C++ (no per-arc Python calls into the binding).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import kaldifst


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


def fst_to_arrays(fst: "kaldifst.StdVectorFst") -> FstArrays:
    """Arc arrays of a ``StdVectorFst`` (states renumbered as in the text form: unchanged ids)."""
    rows = [ln.split() for ln in fst.to_str().splitlines() if ln.strip()]
    arcs = [r for r in rows if len(r) >= 4]
    finals = [r for r in rows if len(r) <= 2]
    n = fst.num_states
    start = int(fst.start)
    if arcs:
        a = np.array([r[:4] for r in arcs], dtype=np.int64)
        w = np.array([float(r[4]) if len(r) == 5 else 0.0 for r in arcs], dtype=np.float64)
    else:
        a = np.zeros((0, 4), dtype=np.int64)
        w = np.zeros(0, dtype=np.float64)
    final = torch.full((n,), float("inf"), dtype=torch.float64)
    for r in finals:
        final[int(r[0])] = float(r[1]) if len(r) == 2 else 0.0
    t = torch.from_numpy(a)
    return FstArrays(num_states=n, start=start, src=t[:, 0].clone(), dst=t[:, 1].clone(),
                     ilabel=t[:, 2].clone(), olabel=t[:, 3].clone(), weight=torch.from_numpy(w),
                     final=final)


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
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if not fst.write(str(tmp)):
        raise OSError(f"could not write FST to {tmp}")
    os.replace(tmp, path)
    return path


def read_fst(path: str | Path) -> "kaldifst.StdVectorFst":
    """Read a binary ``StdVectorFst``; a missing/unreadable file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FST {path} does not exist")
    fst = kaldifst.StdVectorFst.read(str(path))
    if fst is None:
        raise ValueError(f"could not read FST {path}")
    return fst
