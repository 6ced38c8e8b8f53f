"""Pictures for the generative demos: image grids and training curves (atomic PNG writes)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from torch import Tensor


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 1,
               normalize_each: bool = False) -> np.ndarray:
    """Tile ``images (N, H, W)`` into one ``(rows*(H+pad)+pad, nrow*(W+pad)+pad)`` array.

    Values are clipped to [0, 1] unless ``normalize_each`` (each tile min-max scaled, for
    filters). ``nrow`` is the number of tiles per row (default ~sqrt(N)).
    """
    x = images.detach().cpu().double()
    if x.dim() != 3:
        raise ValueError(f"images must be (N, H, W), got {tuple(x.shape)}")
    n, h, w = x.shape
    if normalize_each:
        lo = x.flatten(1).min(1).values[:, None, None]
        hi = x.flatten(1).max(1).values[:, None, None]
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    x = x.clamp(0, 1)
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / nrow))
    grid = np.ones((rows * (h + pad) + pad, nrow * (w + pad) + pad))
    for i in range(n):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h,
             pad + c * (w + pad): pad + c * (w + pad) + w] = x[i].numpy()
    return grid


def _atomic_savefig(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    os.replace(tmp, path)


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None, title: str | None = None,
              normalize_each: bool = False, row_labels: Sequence[str] | None = None,
              scale: float = 0.35, cmap: str | None = None) -> Path:
    """Write an image grid PNG atomically: ``images (N, H, W)`` in [0, 1], black ink on white
    (``cmap`` default ``gray_r``; filters with ``normalize_each`` use ``gray``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path = Path(path)
    grid = image_grid(images, nrow, normalize_each=normalize_each)
    h, w = grid.shape
    fig, ax = plt.subplots(figsize=(max(2.0, w * scale / 10), max(1.0, h * scale / 10)))
    ax.imshow(grid, cmap=cmap or ("gray_r" if not normalize_each else "gray"), vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    if row_labels:
        th = images.shape[1] + 1
        ax.set_yticks([1 + th * i + th / 2 - 1 for i in range(len(row_labels))])
        ax.set_yticklabels(row_labels, fontsize=7)
    else:
        ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    _atomic_savefig(fig, path)
    plt.close(fig)
    return path


def save_curves(curves: Mapping[str, Sequence[float]], path: str | Path, title: str = "",
                xlabel: str = "epoch", ylabel: str = "") -> Path:
    """Line plot of named series (one per key) to a PNG, atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path = Path(path)
    fig, ax = plt.subplots(figsize=(5, 3))
    for name, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), list(ys), label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _atomic_savefig(fig, path)
    plt.close(fig)
    return path


def save_array(images: Tensor, path: str | Path) -> Path:
    """Write ``images (N, H, W)`` clipped to [0, 1] as float32 .npy, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, images.detach().cpu().float().clamp(0, 1).numpy())
    os.replace(tmp, path)
    return path
