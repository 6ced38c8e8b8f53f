"""Feature pipeline of a GMM system: per-speaker-CMN'd MFCC -> deltas | splice + LDA(+MLLT) -> fMLLR.

The spec is saved in ``final.pt`` so that alignment and decoding work out from the model
directory what features the model was trained on (as Kaldi's ``decode.sh`` does from
``final.mat`` / ``splice_opts``). Per-speaker fMLLR transforms are not part of the spec; they
are passed to :meth:`FeaturePipeline.apply` (training speakers: ``trans.pt``; test speakers:
estimated by two-pass decoding).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def add_deltas_local(x: Tensor, order: int = 2, window: int = 2) -> Tensor:
    """Kaldi ``add-deltas`` (regression over +-``window`` frames, edges replicated).
    Used only when ``asr.features.add_deltas`` is unavailable."""
    feats = [x]
    cur = x
    denom = 2.0 * sum(k * k for k in range(1, window + 1))
    for _ in range(order):
        pad = torch.cat([cur[:1].expand(window, -1), cur, cur[-1:].expand(window, -1)])
        T = cur.shape[0]
        d = sum(k * (pad[window + k:window + k + T] - pad[window - k:window - k + T])
                for k in range(1, window + 1)) / denom
        feats.append(d)
        cur = d
    return torch.cat(feats, 1)


def splice_local(x: Tensor, left: int, right: int) -> Tensor:
    """Kaldi ``splice-feats`` (frames t-left..t+right, edges replicated)."""
    T = x.shape[0]
    idx = (torch.arange(T)[:, None] + torch.arange(-left, right + 1)[None, :]).clamp(0, T - 1)
    return x[idx].reshape(T, -1)


def _deltas(x: Tensor) -> Tensor:
    try:
        from asr.features import add_deltas
    except ImportError:
        return add_deltas_local(x)
    return add_deltas(x)


def _splice(x: Tensor, left: int, right: int) -> Tensor:
    try:
        from asr.features import splice
    except ImportError:
        return splice_local(x, left, right)
    return splice(x, left, right)


@dataclass
class FeaturePipeline:
    """How model features are made from raw CMN'd features ``(T, raw_dim)``.

    kind ``"delta"``: ``[x, delta, delta-delta]`` (``3 * raw_dim``).
    kind ``"lda"``: splice ``+-context`` frames then ``y = matrix @ x`` (``matrix (out, raw_dim*(2c+1))``,
    LDA with MLLT composed in, Kaldi ``final.mat``).
    """

    kind: str = "delta"
    raw_dim: int = 13
    context: int = 4
    matrix: Tensor | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("delta", "lda"):
            raise ValueError(f"unknown feature pipeline kind {self.kind!r}")
        if self.kind == "lda":
            if self.matrix is None:
                raise ValueError("an LDA pipeline needs its matrix")
            want = self.raw_dim * (2 * self.context + 1)
            if self.matrix.shape[1] != want:
                raise ValueError(f"LDA matrix has {self.matrix.shape[1]} inputs, expected {want}")

    @property
    def dim(self) -> int:
        """Model feature dimension."""
        return 3 * self.raw_dim if self.kind == "delta" else int(self.matrix.shape[0])

    def spliced(self, x: Tensor) -> Tensor:
        """Spliced raw features ``(T, raw_dim * (2c+1))`` (the LDA input)."""
        return _splice(x, self.context, self.context)

    def apply(self, x: Tensor, fmllr: Tensor | None = None) -> Tensor:
        """``x (T, raw_dim)`` -> model features ``(T, dim)``; ``fmllr (dim, dim+1)`` applied last."""
        if x.dim() != 2 or x.shape[1] != self.raw_dim:
            raise ValueError(f"features have shape {tuple(x.shape)}, the model expects (T, {self.raw_dim})")
        if self.kind == "delta":
            y = _deltas(x)
        else:
            y = self.spliced(x) @ self.matrix.to(x.dtype).T
        if fmllr is not None:
            from asr.transforms import apply_fmllr

            y = apply_fmllr(y, fmllr)
        return y

    def with_matrix(self, matrix: Tensor) -> "FeaturePipeline":
        return FeaturePipeline("lda", self.raw_dim, self.context, matrix.float())

    def to_dict(self) -> dict:
        return {"kind": self.kind, "raw_dim": self.raw_dim, "context": self.context,
                "matrix": None if self.matrix is None else self.matrix.cpu()}

    @classmethod
    def from_dict(cls, d: dict) -> "FeaturePipeline":
        return cls(d["kind"], int(d["raw_dim"]), int(d["context"]), d.get("matrix"))
