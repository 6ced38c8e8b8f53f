"""Image data sources for the generative demos: bundled digits, MNIST IDX files, log-mel patches.

``load_source("digits" | "mnist:PATH" | "speech:DATA_DIR")`` returns an :class:`ImageData`
with ``images (N, H, W)`` float32 in [0, 1] and optional integer ``labels (N,)``.
"""
from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F


@dataclass
class ImageData:
    """Images in [0, 1] and (optional) labels, plus how they were made."""

    images: Tensor            # (N, H, W) float32 in [0, 1]
    labels: Tensor | None     # (N,) int64 or None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.images.shape[1]), int(self.images.shape[2]))

    def subset(self, idx: Tensor) -> "ImageData":
        return ImageData(self.images[idx], None if self.labels is None else self.labels[idx],
                         dict(self.meta))

    def split(self, test_fraction: float, seed: int = 0) -> tuple["ImageData", "ImageData"]:
        """Deterministic random split into (train, test)."""
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(self.images.shape[0], generator=g)
        n_test = int(round(test_fraction * len(perm)))
        return self.subset(perm[n_test:]), self.subset(perm[:n_test])


def load_digits16(size: int = 16) -> ImageData:
    """scikit-learn's bundled handwritten digits (1797 8x8 images, values 0..16), scaled to
    [0, 1] and upscaled to ``size x size`` by bilinear interpolation."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return ImageData(x[:, 0].clamp(0, 1).contiguous(), torch.from_numpy(d.target).long(),
                     {"source": "digits", "size": size})


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST format; gzip accepted): magic 0x0000 TT ND, big-endian dims."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX data type 0x{raw[2]:02x}")
    nd = raw[3]
    dims = struct.unpack(">" + "I" * nd, raw[4:4 + 4 * nd])
    data = np.frombuffer(raw, dtype=dtypes[raw[2]], offset=4 + 4 * nd)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: IDX payload has {data.size} values, header says {dims}")
    return data.reshape(dims)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def load_mnist(path: str | Path, split: str = "train") -> ImageData:
    """MNIST from IDX files: ``path`` is a directory holding ``{train,t10k}-images-idx3-ubyte``
    and ``...-labels-idx1-ubyte`` (optionally ``.gz``), or an images file (labels are then
    looked for next to it). Returns 28x28 images in [0, 1]."""
    path = Path(path)
    prefix = "train" if split == "train" else "t10k"
    if path.is_dir():
        img = _find(path, f"{prefix}-images-idx3-ubyte")
        lab = _find(path, f"{prefix}-labels-idx1-ubyte")
        if img is None:
            raise FileNotFoundError(f"no {prefix}-images-idx3-ubyte[.gz] in {path}")
    elif path.is_file():
        img = path
        cand = path.name.replace("images-idx3", "labels-idx1")
        lab = path.with_name(cand) if cand != path.name and path.with_name(cand).is_file() else None
    else:
        raise FileNotFoundError(f"MNIST path {path} does not exist")
    x = read_idx(img)
    if x.ndim != 3:
        raise ValueError(f"{img}: expected a 3-D image array, got shape {x.shape}")
    y = None
    if lab is not None:
        yl = read_idx(lab)
        if yl.shape != (x.shape[0],):
            raise ValueError(f"{lab}: {yl.shape[0]} labels for {x.shape[0]} images")
        y = torch.from_numpy(yl.astype(np.int64))
    return ImageData(torch.from_numpy(x.astype(np.float32) / 255.0), y,
                     {"source": f"mnist:{path}", "size": int(x.shape[1])})


def load_speech_patches(data_dir: str | Path, width: int = 16, hop: int = 8,
                        max_patches: int = 20000, seed: int = 0,
                        clip_percentiles: tuple[float, float] = (1.0, 99.0)) -> ImageData:
    """Log-mel (fbank) patches ``(N, n_mels, width)`` from a Kaldi data dir's ``feats.scp``.

    Patches of ``width`` frames are cut every ``hop`` frames from every utterance (read with
    kaldiio), at most ``max_patches`` kept (random subset, ``seed``), and mapped to [0, 1]
    by clipping at the global ``clip_percentiles`` (stored in ``meta`` as ``lo``/``hi``).
    Image rows are mel bins (low frequencies first), columns are frames.
    """
    import kaldiio
    data_dir = Path(data_dir)
    scp = data_dir / "feats.scp"
    if not scp.is_file():
        raise FileNotFoundError(f"{scp} not found (compute fbank features for {data_dir} first)")
    patches = []
    n_utts = skipped = 0
    dim = None
    for utt, mat in kaldiio.load_scp_sequential(str(scp)):
        m = torch.from_numpy(np.array(mat, dtype=np.float32))  # copy: kaldiio maps read-only
        if m.dim() != 2:
            raise ValueError(f"{scp}: utterance {utt} is not a matrix")
        if dim is None:
            dim = m.shape[1]
        elif m.shape[1] != dim:
            raise ValueError(f"{scp}: utterance {utt} has dim {m.shape[1]}, expected {dim}")
        n_utts += 1
        if m.shape[0] < width:
            skipped += 1
            continue
        patches.append(m.unfold(0, width, hop))  # (n, dim, width)
    if not patches:
        raise ValueError(f"{scp}: no utterance has >= {width} frames")
    x = torch.cat(patches)
    if x.shape[0] > max_patches:
        g = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(x.shape[0], generator=g)[:max_patches]]
    lo, hi = (float(np.percentile(x.numpy(), p)) for p in clip_percentiles)
    x = ((x - lo) / max(hi - lo, 1e-6)).clamp(0, 1)
    if x.shape[1] % 4:  # DCGAN needs H divisible by 4: drop the top mel bins
        x = x[:, : x.shape[1] - x.shape[1] % 4]
    return ImageData(x.contiguous(), None,
                     {"source": f"speech:{data_dir}", "lo": lo, "hi": hi, "utterances": n_utts,
                      "skipped_short": skipped, "width": width, "hop": hop})


def load_source(spec: str, **kw: Any) -> ImageData:
    """Parse a SOURCE spec: ``digits``, ``mnist:PATH`` or ``speech:DATA_DIR``."""
    if spec == "digits":
        return load_digits16(**kw)
    if spec.startswith("mnist:"):
        return load_mnist(spec[len("mnist:"):], **kw)
    if spec.startswith("speech:"):
        return load_speech_patches(spec[len("speech:"):], **kw)
    raise ValueError(f"unknown data source {spec!r} (use digits, mnist:PATH or speech:DATA_DIR)")
