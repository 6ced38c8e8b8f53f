"""End to end through the CLI on a tiny synthetic data dir: pretrain -> train (DBN and random init)
-> export (Kaldi ark) -> seq train (HCLG-style graph with an epsilon arc). Decode-free checks."""
from __future__ import annotations

import numpy as np
import torch

from asr.cli.main import main
from asr.nnet import load_model
from asr.nnet.io import _kaldi_io, read_matrices, write_alignments
from asr.nnet.synthetic import synth_corpus
from feat_dirs import write_feature_dir

NUM_PDFS = 5


def make_data(root):
    feats, alis = synth_corpus(40, NUM_PDFS, 6, seed=3, noise=1.0, n_speakers=8)
    d = write_feature_dir(root / "data", feats)
    # Kaldi ali-to-pdf style ark; one utterance with a 4-frame mismatch must be skipped
    bad = sorted(alis)[1]
    alis[bad] = torch.cat([alis[bad], torch.zeros(4, dtype=torch.long)])
    write_alignments(alis, root / "ali.ark")
    # an HCLG-like graph: pdf loop (labels pdf+1) entered through an epsilon arc
    lines = ["0 1 0 0 0.0"]
    for j in range(NUM_PDFS):
        lines.append(f"1 {j + 2} {j + 1} {j + 1} 1.6")
        for k in range(NUM_PDFS):
            lines.append(f"{j + 2} {k + 2} {k + 1} {k + 1} {0.3 if j == k else 2.8}")
        lines.append(f"{j + 2} 0.0")
    import kaldifst

    (root / "graph").mkdir()
    kaldifst.compile("\n".join(lines) + "\n", acceptor=False).write(str(root / "graph" / "HCLG.fst"))
    return d, bad


def test_cli_pretrain_train_export_seq(tmp_path, capsys):
    data, bad = make_data(tmp_path)
    ali = str(tmp_path / "ali.ark")
    assert main(["dnn", "pretrain", "--data", str(data), "--out", str(tmp_path / "dbn"), "--layers", "2",
                 "--units", "16", "--context", "2", "--device", "cpu"]) == 0
    assert (tmp_path / "dbn" / "dbn.pt").is_file() and (tmp_path / "dbn" / ".done").is_file()
    common = ["--data", str(data), "--ali", ali, "--epochs", "3", "--device", "cpu", "--batch-size", "64"]
    assert main(["dnn", "train", *common, "--out", str(tmp_path / "bad"), "--dbn", str(tmp_path / "dbn"),
                 "--units", "32"]) == 1                   # contradicts the DBN: refused, not ignored
    assert main(["dnn", "train", *common, "--out", str(tmp_path / "dnn"), "--dbn", str(tmp_path / "dbn"),
                 "--layers", "2", "--units", "16"]) == 0
    assert main(["dnn", "train", *common, "--out", str(tmp_path / "rand"), "--random-init", "--layers", "2",
                 "--units", "16", "--context", "2"]) == 0
    out = capsys.readouterr().out
    assert f"skipped 1 utterance(s): {bad}" in out or bad in (tmp_path / "dnn" / "config.json").read_text()
    for name in ("dnn", "rand"):
        m = load_model(tmp_path / name)
        assert m.cfg.hidden == (16, 16) and m.cfg.left == 2
        curve = (tmp_path / name / "log" / "train_curve.json").read_text()
        import json

        best = max(h["cv_frame_acc"] for h in json.loads(curve)["epochs"])
        assert best > 2.0 / NUM_PDFS, (name, best)       # well above chance (0.2)
    ark = tmp_path / "ll.ark"
    assert main(["dnn", "export", "--model", str(tmp_path / "dnn"), "--data", str(data), "--out", str(ark)]) == 0
    mats = read_matrices(ark)
    assert len(mats) == 40 and all(v.shape[1] == NUM_PDFS for v in mats.values())
    post = read_matrices(tmp_path / "lp.ark") if main(["dnn", "export", "--model", str(tmp_path / "dnn"), "--data",
                                                       str(data), "--out", str(tmp_path / "lp.ark"),
                                                       "--logposts"]) == 0 else None
    u = sorted(mats)[0]
    torch.testing.assert_close(post[u].exp().sum(1), torch.ones(post[u].shape[0]), atol=1e-4, rtol=0)
    prior = load_model(tmp_path / "dnn").log_priors
    torch.testing.assert_close(mats[u], post[u] - prior, atol=1e-5, rtol=0)
    assert main(["seq", "train", "--criterion", "smbr", "--model", str(tmp_path / "dnn"), "--data", str(data),
                 "--ali", ali, "--den", "hclg", "--graph", str(tmp_path / "graph"), "--out", str(tmp_path / "smbr"),
                 "--epochs", "2", "--device", "cpu", "--lr", "0.5"]) == 0
    import json

    curve = json.loads((tmp_path / "smbr" / "log" / "train_curve.json").read_text())
    # expected state accuracy per frame: a probability, raised by training (any model has one > 0)
    assert [c["epoch"] for c in curve] == [0, 1, 2] and 0 < curve[1]["objective"] < curve[2]["objective"] <= 1
    assert load_model(tmp_path / "smbr").cfg.num_pdfs == NUM_PDFS
    assert main(["seq", "train", "--criterion", "mmi", "--model", str(tmp_path / "dnn"), "--data", str(data),
                 "--ali", ali, "--out", str(tmp_path / "mmi"), "--epochs", "2", "--device", "cpu", "--lr", "0.5"]) == 0
    curve = json.loads((tmp_path / "mmi" / "log" / "train_curve.json").read_text())
    # log p(reference | x) is < 0 for any model; training must raise it
    assert curve[1]["no_num_path"] == 0 and curve[1]["objective"] < curve[2]["objective"] < 0


def _write_mats(d, feats):
    kio = _kaldi_io()
    lines = []
    for u in sorted(feats):
        p = d / "mats" / f"{u}.mat"
        with open(p, "wb") as f:
            kio.write_mat(f, feats[u].numpy().astype(np.float32))
        lines.append(f"{u} {p}\n")
    (d / "feats.scp").write_text("".join(lines))


def test_cli_train_fails_loudly(tmp_path, capsys):
    """NaN features are refused naming the utterance; a diverging run exits 1 naming the epoch,
    keeps the last good model and writes no .done (issue 13 "Bad input", issue 14 item 1)."""
    import json

    from asr.nnet.io import read_matrices

    data, _ = make_data(tmp_path)
    ali = str(tmp_path / "ali.ark")
    common = ["--data", str(data), "--ali", ali, "--device", "cpu", "--batch-size", "64", "--random-init",
              "--layers", "1", "--units", "8", "--context", "1"]
    # diverging: an absurd learning rate makes the loss non-finite in epoch 1
    out = tmp_path / "div"
    assert main(["dnn", "train", *common, "--out", str(out), "--lr", "1e38", "--epochs", "3"]) == 1
    err = capsys.readouterr().err
    assert "non-finite loss at epoch 1" in err and not (out / ".done").exists()
    curve = json.loads((out / "log" / "train_curve.json").read_text())
    assert curve["stop_reason"] == "diverged"
    kept = load_model(out)
    assert all(torch.isfinite(v).all() for v in kept.state_dict().values() if v.is_floating_point())
    # NaN in one utterance's features: refused when read, naming it
    feats = read_matrices_from_scp(data)
    u = sorted(feats)[3]
    feats[u][2, 1] = float("nan")
    _write_mats(data, feats)
    out = tmp_path / "nan"
    assert main(["dnn", "train", *common, "--out", str(out), "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert u in err and "non-finite" in err and not (out / ".done").exists()
    assert not (out / "final.pt").exists()
    del read_matrices


def read_matrices_from_scp(data):
    kio = _kaldi_io()
    out = {}
    for line in (data / "feats.scp").read_text().splitlines():
        u, p = line.split()
        out[u] = torch.from_numpy(np.array(kio.read_mat(p)))
    return out


class _Payload:
    """Unpickling this creates a file: the proof that a model file ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_model_and_checkpoint_files_are_loaded_as_data(tmp_path, capsys):
    """A crafted final.pt / training checkpoint runs nothing, fails naming the file and leaves
    no temporary (issue 14 item 12)."""
    from asr.nnet import CETrainConfig, train_ce
    from asr.nnet.model import HybridDNN, NetConfig, save_model

    data, _ = make_data(tmp_path)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save({"type": "HybridDNN", "config": _Payload(marker)}, evil / "final.pt")
    ark = tmp_path / "out.ark"
    assert main(["dnn", "export", "--model", str(evil), "--data", str(data), "--out", str(ark)]) == 1
    err = capsys.readouterr().err
    assert str(evil / "final.pt") in err and not marker.exists()
    assert not ark.exists() and not (tmp_path / "out.ark.tmp").exists()
    # a genuine model still loads with weights_only=True, and so does a training checkpoint
    good = HybridDNN(NetConfig(input_dim=6, num_pdfs=NUM_PDFS, hidden=(4,), left=1, right=1))
    save_model(good, tmp_path / "good" / "final.pt", extra={"history": [{"epoch": 0, "x": None}]})
    assert main(["dnn", "export", "--model", str(tmp_path / "good"), "--data", str(data), "--out", str(ark)]) == 0
    # resuming from a crafted checkpoint
    from asr.nnet.synthetic import synth_corpus
    from asr.nnet import build_frame_data

    f, a = synth_corpus(6, NUM_PDFS, 6, seed=0)
    fd = build_frame_data(f, a, 1, 1, NUM_PDFS)
    ck = tmp_path / "run" / "ckpt" / "epoch001.pt"
    ck.parent.mkdir(parents=True)
    torch.save({"model": _Payload(marker)}, ck)
    import pytest

    with pytest.raises(ValueError, match="epoch001.pt"):
        train_ce(good, fd, fd, CETrainConfig(max_epochs=1), tmp_path / "run", log=lambda s: None)
    assert not marker.exists()
