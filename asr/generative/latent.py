"""Latent-space tools: interpolation and vector arithmetic on group means.

Following Radford et al. 2015 (section 6.3: arithmetic on averaged codes, e.g.
"smiling woman - neutral woman + neutral man") and White 2016 ("Sampling generative
networks": spherical interpolation, since Gaussian codes concentrate near a sphere).
The same functions apply to pixel vectors, for the pixel-space comparison.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _steps(n: int, a: Tensor) -> Tensor:
    if n < 2:
        raise ValueError(f"need at least 2 interpolation steps, got {n}")
    return torch.linspace(0.0, 1.0, n, dtype=a.dtype, device=a.device)


def lerp(a: Tensor, b: Tensor, n: int) -> Tensor:
    """Linear interpolation between codes ``a`` and ``b`` (each ``(d,)``): ``(n, d)`` from a to b."""
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"lerp needs two vectors of the same shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    t = _steps(n, a)[:, None]
    return (1 - t) * a + t * b


def slerp(a: Tensor, b: Tensor, n: int, eps: float = 1e-7) -> Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016), ``(n, d)`` from a to b:
    ``sin((1-t) w)/sin w * a + sin(t w)/sin w * b`` with w the angle between a and b.
    Falls back to :func:`lerp` when a and b are (anti)parallel within ``eps``."""
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"slerp needs two vectors of the same shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(eps)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    so = torch.sin(omega)
    if so.abs() < eps:
        return lerp(a, b, n)
    t = _steps(n, a)[:, None]
    return torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b


def group_arithmetic(plus: Tensor, minus: Tensor, base: Tensor) -> Tensor:
    """``mean(plus) - mean(minus) + mean(base)`` over the first axis.

    Works for latent codes ``(n_i, d)`` or images ``(n_i, H, W)`` (pixel-space arithmetic),
    e.g. "thick 7 - thin 7 + thin 1". Each group needs at least one member.
    """
    for name, g in (("plus", plus), ("minus", minus), ("base", base)):
        if g.shape[0] == 0:
            raise ValueError(f"group {name!r} is empty")
    if not (plus.shape[1:] == minus.shape[1:] == base.shape[1:]):
        raise ValueError("groups must have the same trailing shape")
    return plus.mean(0) - minus.mean(0) + base.mean(0)
