"""Data sources, metrics, and the ``asr gen`` CLI (tiny fixtures in tmp_path)."""
from __future__ import annotations

import gzip
import json
import math
import struct

import numpy as np
import pytest
import torch

from asr.cli.main import main as asr_main
from asr.generative import GAN, RBM, load
from asr.generative.data import load_digits16, load_source, load_speech_patches, read_idx
from asr.generative.metrics import frechet_distance, parzen_log_likelihood

torch.set_num_threads(1)


def _write_idx(path, arr: np.ndarray, gz: bool = False) -> None:
    code = {np.uint8: 0x08}[arr.dtype.type]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = head + arr.astype(">u1").tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.fixture
def mnist_dir(tmp_path):
    """60 8x8 'MNIST' images of 3 classes (bars at different rows), IDX format, gzipped."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20).astype(np.uint8)
    x = (rng.random((60, 8, 8)) * 40).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 2 * c: 2 * c + 3] = 250
    d = tmp_path / "mnist"
    d.mkdir()
    _write_idx(d / "train-images-idx3-ubyte.gz", x, gz=True)
    _write_idx(d / "train-labels-idx1-ubyte.gz", y, gz=True)
    return d, x, y


def test_idx_reader_and_mnist_source(mnist_dir, tmp_path):
    d, x, y = mnist_dir
    data = load_source(f"mnist:{d}")
    assert data.images.shape == (60, 8, 8) and data.labels.tolist() == y.tolist()
    assert torch.allclose(data.images, torch.from_numpy(x / 255.0).float())
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    _write_idx(tmp_path / "short", x)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-5])
    with pytest.raises(ValueError, match="payload"):
        read_idx(tmp_path / "short")
    with pytest.raises(ValueError, match="unknown data source"):
        load_source("cifar")


def test_digits16():
    d = load_digits16()
    assert d.images.shape == (1797, 16, 16) and d.images.min() >= 0 and d.images.max() <= 1
    tr, te = d.split(0.2, 0)
    tr2, te2 = d.split(0.2, 0)
    assert torch.equal(te.images, te2.images) and tr.images.shape[0] + te.images.shape[0] == 1797


def test_speech_patches(tmp_path):
    import kaldiio
    rng = np.random.default_rng(0)
    mats = {"u1": rng.normal(size=(50, 40)).astype(np.float32),
            "u2": rng.normal(size=(10, 40)).astype(np.float32)}
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/feats.ark,{tmp_path}/feats.scp") as w:
        for k, v in mats.items():
            w(k, v)
    d = load_speech_patches(tmp_path, width=16, hop=8)
    assert d.images.shape == (5, 40, 16)                      # (50 - 16) // 8 + 1 from u1
    assert d.meta["skipped_short"] == 1 and d.images.min() >= 0 and d.images.max() <= 1
    lo, hi = d.meta["lo"], d.meta["hi"]
    ref = ((torch.from_numpy(mats["u1"][:16].T) - lo) / (hi - lo)).clamp(0, 1)
    assert any(torch.allclose(p, ref) for p in d.images)     # orientation: (mel, time)
    with pytest.raises(FileNotFoundError, match="feats.scp"):
        load_speech_patches(tmp_path / "nowhere")


def test_frechet_distance_against_scipy():
    from scipy.linalg import sqrtm
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 5, generator=g, dtype=torch.float64)
    b = torch.randn(200, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g,
                                                                            dtype=torch.float64) + 1
    sa, sb = np.cov(a.numpy().T), np.cov(b.numpy().T)
    ref = (((a.mean(0) - b.mean(0)) ** 2).sum().item()
           + np.trace(sa + sb - 2 * np.real(sqrtm(sa @ sb))))
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_parzen_against_direct_formula():
    g = torch.Generator().manual_seed(0)
    s, x = torch.randn(7, 3, generator=g), torch.randn(4, 3, generator=g)
    sigma = 0.7
    ref = []
    for xi in x.double():
        dens = sum(math.exp(-((xi - sj.double()) ** 2).sum().item() / (2 * sigma ** 2)) for sj in s)
        ref.append(math.log(dens / 7 / (2 * math.pi * sigma ** 2) ** 1.5))
    assert torch.allclose(parzen_log_likelihood(s, x, sigma), torch.tensor(ref, dtype=torch.float64))


def test_cli_train_sample_roundtrip(mnist_dir, tmp_path, capsys):
    d, _, _ = mnist_dir
    out = tmp_path / "rbm"
    assert asr_main(["gen", "train", "rbm", "--data", f"mnist:{d}", "--out", str(out),
                     "--epochs", "2", "--hidden", "5", "--gibbs-steps", "5"]) == 0
    assert (out / "model.pt").is_file() and (out / ".done").is_file() and (out / "samples.png").is_file()
    hist = json.loads((out / "history.json").read_text())
    assert hist["n_train"] == 48 and len(hist["ais"]) == 2 and len(hist["history"]) == 2
    assert isinstance(load(out), RBM)
    # an identical re-run is skipped
    assert asr_main(["gen", "train", "rbm", "--data", f"mnist:{d}", "--out", str(out),
                     "--epochs", "2", "--hidden", "5", "--gibbs-steps", "5"]) == 0
    assert "up to date" in capsys.readouterr().out
    npy = tmp_path / "s.npy"
    assert asr_main(["gen", "sample", str(out), "--n", "6", "--out", str(npy),
                     "--gibbs-steps", "3"]) == 0
    arr = np.load(npy)
    assert arr.shape == (6, 8, 8) and arr.min() >= 0 and arr.max() <= 1
    assert asr_main(["gen", "sample", str(out), "--n", "3", "--label", "1", "--out",
                     str(tmp_path / "x.png")]) == 1            # label needs a cGAN


def test_cli_cgan_labels_and_errors(mnist_dir, tmp_path):
    d, _, _ = mnist_dir
    out = tmp_path / "cgan"
    assert asr_main(["gen", "train", "cgan", "--data", f"mnist:{d}", "--out", str(out),
                     "--epochs", "1", "--hidden", "16", "--batch-size", "16"]) == 0
    gan = load(out / "model.pt")
    assert isinstance(gan, GAN) and gan.n_classes == 3
    png = tmp_path / "c.png"
    assert asr_main(["gen", "sample", str(out), "--n", "4", "--label", "2", "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert asr_main(["gen", "sample", str(out), "--n", "4", "--out", str(tmp_path / "c.txt")]) == 1
    assert asr_main(["gen", "train", "dbn", "--data", "mnist:/nonexistent", "--out",
                     str(tmp_path / "x")]) == 1
    assert asr_main(["gen", "train", "rbm", "--data", f"mnist:{d}", "--digit", "7", "--out",
                     str(tmp_path / "y")]) == 1
