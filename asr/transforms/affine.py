"""Applying and composing linear / affine feature transforms (Kaldi ``transform-feats``,
``compose-transforms``). A transform is a ``(D_out, D)`` linear matrix or a ``(D_out, D+1)``
affine matrix ``[A b]`` acting as ``y = A x + b``."""
from __future__ import annotations

import torch
from torch import Tensor


def apply_transform(x: Tensor, m: Tensor) -> Tensor:
    """Apply a linear ``(D_out, D)`` or affine ``(D_out, D+1)`` transform to ``x (N, D)``
    (Kaldi ``transform-feats``); the result has the dtype of ``x``."""
    d = x.shape[-1]
    if m.shape[1] == d:
        return (x.to(torch.float64) @ m.to(torch.float64).T).to(x.dtype)
    if m.shape[1] == d + 1:
        m = m.to(torch.float64)
        return (x.to(torch.float64) @ m[:, :d].T + m[:, d]).to(x.dtype)
    raise ValueError(f"transform of shape {tuple(m.shape)} does not fit features of dim {d}")


def compose_transforms(outer: Tensor, inner: Tensor, in_dim: int) -> Tensor:
    """Kaldi ``compose-transforms``: one transform equal to applying ``inner`` then ``outer``.

    ``inner`` acts on ``in_dim``-dimensional features and is linear ``(R, in_dim)`` or affine
    ``(R, in_dim+1)``; ``outer`` is ``(S, R)`` or ``(S, R+1)``. The result is ``(S, in_dim)``, or
    ``(S, in_dim+1)`` if either is affine.
    """
    outer, inner = outer.to(torch.float64), inner.to(torch.float64)
    r = inner.shape[0]
    if inner.shape[1] not in (in_dim, in_dim + 1) or outer.shape[1] not in (r, r + 1):
        raise ValueError(f"cannot compose {tuple(outer.shape)} after {tuple(inner.shape)} "
                         f"on {in_dim}-dim features")
    inner_aff = inner if inner.shape[1] == in_dim + 1 else torch.cat(
        [inner, torch.zeros(r, 1, dtype=torch.float64)], dim=1)
    result = outer[:, :r] @ inner_aff
    if outer.shape[1] == r + 1:
        result[:, in_dim] += outer[:, r]
    elif inner.shape[1] == in_dim:
        result = result[:, :in_dim]
    return result.contiguous()
