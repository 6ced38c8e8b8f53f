"""Speed perturbation (``asr data perturb``) and the DNN trainer's extra (perturbed) training data."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import soundfile as sf
import torch

from asr.cli.main import main
from asr.datadir import DataDir, read_data_dir, write_data_dir
from asr.datadir.perturb import perturb_data_dir, read_utt2orig, speed_perturb
from feat_dirs import write_feature_dir


def _peak_hz(x: torch.Tensor, sr: int) -> float:
    spec = torch.fft.rfft(x.double() * torch.hann_window(x.numel(), dtype=torch.float64)).abs()
    return float(spec.argmax()) * sr / x.numel()


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_scales_duration_and_pitch(factor):
    sr, hz = 16000, 440.0
    t = torch.arange(sr) / sr
    x = 8000 * torch.sin(2 * math.pi * hz * t)
    y = speed_perturb(x, factor, sr)
    assert abs(y.numel() - sr / factor) <= 1                     # duration / factor
    assert _peak_hz(y, sr) == pytest.approx(hz * factor, abs=1.5)  # pitch x factor (1 Hz bins)
    assert y.abs().max() == pytest.approx(8000, rel=0.02)        # level kept
    assert torch.equal(speed_perturb(x, 1.0, sr), x)
    with pytest.raises(ValueError, match="outside"):
        speed_perturb(x, 3.0, sr)


def _data_dir(root: Path) -> Path:
    sr = 16000
    wav, utt2spk = {}, {}
    g = torch.Generator().manual_seed(0)
    for u, s in (("fa0_si1", "fa0"), ("fa0_sx2", "fa0"), ("mb0_si3", "mb0")):
        p = root / "wav" / f"{u}.wav"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, (torch.randn(sr // 2, generator=g) * 3000).to(torch.int16).numpy(), sr, subtype="PCM_16")
        wav[u], utt2spk[u] = str(p), s
    dd = DataDir(wav=wav, text={u: ["sil", "ix", "sil"] for u in wav}, utt2spk=utt2spk,
                 text39={u: ["sil", "ih", "sil"] for u in wav},
                 phone_times={u: [(0.0, 0.1, "h#"), (0.1, 0.4, "ix"), (0.4, 0.5, "h#")] for u in wav},
                 spk2gender={"fa0": "f", "mb0": "m"}, utt2dur={u: 0.5 for u in wav})
    write_data_dir(dd, root / "train")
    return root / "train"


def test_perturb_data_dir_renames_rescales_and_maps_back(tmp_path):
    src = _data_dir(tmp_path)
    assert main(["data", "perturb", str(src), str(tmp_path / "sp"), "--speed", "0.9"]) == 0
    dd = read_data_dir(tmp_path / "sp")
    assert dd.utts == ["sp0.9-fa0_si1", "sp0.9-fa0_sx2", "sp0.9-mb0_si3"]
    assert dd.utt2spk["sp0.9-mb0_si3"] == "sp0.9-mb0" and dd.spk2gender == {"sp0.9-fa0": "f", "sp0.9-mb0": "m"}
    assert read_utt2orig(tmp_path / "sp") == {"sp0.9-fa0_si1": "fa0_si1", "sp0.9-fa0_sx2": "fa0_sx2",
                                               "sp0.9-mb0_si3": "mb0_si3"}
    for u in dd.utts:
        audio, sr = sf.read(dd.wav[u], dtype="int16")
        assert sr == 16000 and audio.shape[0] == round(8000 / 0.9)
        assert dd.utt2dur[u] == pytest.approx(0.5 / 0.9, abs=1e-4)
        assert [round(e, 4) for _, e, _ in dd.phone_times[u]] == [round(v / 0.9, 4) for v in (0.1, 0.4, 0.5)]
        assert dd.text[u] == ["sil", "ix", "sil"]
    assert not (tmp_path / "sp.new").exists() and not (tmp_path / "sp.new.wav").exists()
    bad = tmp_path / "bad"
    write_data_dir(DataDir(wav={"fa0_si1": str(tmp_path / "none.wav")}, text={"fa0_si1": ["sil"]},
                           utt2spk={"fa0_si1": "fa0"}), bad)
    with pytest.raises(ValueError, match="fa0_si1"):
        perturb_data_dir(bad, tmp_path / "sp_bad", 1.1)
    assert not (tmp_path / "sp_bad").exists()


def _cv_utts(alis: dict) -> list[str]:
    """The CV utterances of ``asr dnn train``'s default split (seed 777, 10 % of the speakers)."""
    from asr.nnet.frames import split_cv_speakers

    return split_cv_speakers({u: u.rsplit("_", 1)[0] for u in alis}, 0.1, 777)[1]


def _data_with_copies(tmp_path: Path) -> dict:
    """24 synthetic utterances (``data``, ``ali.ark``) and a "perturbed" copy of each (``sp``, with
    ``utt2orig``; ``ali_sp/ali_pdf.ark``): every second frame, shifted. Returns the alignments."""
    from asr.nnet.io import write_alignments
    from asr.nnet.synthetic import synth_corpus

    feats, alis = synth_corpus(24, 5, 6, seed=3, noise=1.0, n_speakers=8)
    write_feature_dir(tmp_path / "data", feats)
    write_alignments(alis, tmp_path / "ali.ark")
    pre = "sp0.9-"
    copies = {pre + u: x[::2] + 0.1 for u, x in feats.items()}
    write_feature_dir(tmp_path / "sp", copies, {pre + u: u for u in feats})
    (tmp_path / "ali_sp").mkdir()
    write_alignments({pre + u: a[::2] for u, a in alis.items()}, tmp_path / "ali_sp" / "ali_pdf.ark")
    return alis


def test_extra_training_data_joins_the_training_side_only(tmp_path, capsys):
    """Copies of the training utterances are trained on; copies of the CV speakers' utterances are
    not (the CV set stays unseen), so the CV frames are those of the run without extra data."""
    alis = _data_with_copies(tmp_path)
    common = ["dnn", "train", "--data", str(tmp_path / "data"), "--ali", str(tmp_path / "ali.ark"), "--random-init",
              "--layers", "1", "--units", "8", "--context", "1", "--epochs", "1", "--device", "cpu"]
    assert main(common + ["--out", str(tmp_path / "plain")]) == 0
    plain = capsys.readouterr().out
    assert main(common + ["--out", str(tmp_path / "sp_run"), "--extra-data", str(tmp_path / "sp"),
                          "--extra-ali", str(tmp_path / "ali_sp")]) == 0
    both = capsys.readouterr().out

    def sizes(out: str) -> tuple[int, int, int, int]:
        line = next(ln for ln in out.splitlines() if "utts; cv: " in ln)
        tr, cv = line.split("train: ")[1].split("; cv: ")
        return (int(tr.split()[0]), int(tr.split()[3]), int(cv.split()[0]), int(cv.split()[3]))

    tr_f, tr_u, cv_f, cv_u = sizes(plain)
    cv_utts = set(_cv_utts(alis))
    assert len(cv_utts) == cv_u
    copy_frames = sum(a[::2].numel() for u, a in alis.items() if u not in cv_utts)
    assert sizes(both) == (tr_f + copy_frames, 2 * tr_u, cv_f, cv_u)
    assert f"extra training data {tmp_path / 'sp'}: {tr_u} of 24 utterances" in both
    assert f"{cv_u} of cross-validation utterances left out" in both
    cfg = json.loads((tmp_path / "sp_run" / "config.json").read_text())
    assert cfg["extra"] == [[str(tmp_path / "sp"), str(tmp_path / "ali_sp")]]
    # refused: unpaired options, copies without utt2orig, alignments from another tree
    assert main(common + ["--out", str(tmp_path / "x1"), "--extra-data", str(tmp_path / "sp")]) != 0
    (tmp_path / "sp" / "utt2orig").rename(tmp_path / "utt2orig.bak")
    assert main(common + ["--out", str(tmp_path / "x2"), "--extra-data", str(tmp_path / "sp"),
                          "--extra-ali", str(tmp_path / "ali_sp")]) != 0
    assert "no utt2orig" in capsys.readouterr().err


def test_sequence_training_takes_the_copies_on_its_training_side(tmp_path, capsys):
    """``asr seq train --extra-data/--extra-ali`` trains on the copies of the training utterances as
    CE training does (CV copies left out); lattice dirs go with ``--den lattice`` only."""
    alis = _data_with_copies(tmp_path)
    assert main(["dnn", "train", "--data", str(tmp_path / "data"), "--ali", str(tmp_path / "ali.ark"), "--random-init",
                 "--layers", "1", "--units", "8", "--context", "1", "--epochs", "1", "--device", "cpu",
                 "--out", str(tmp_path / "ce")]) == 0
    common = ["seq", "train", "--criterion", "mmi", "--model", str(tmp_path / "ce"), "--data", str(tmp_path / "data"),
              "--ali", str(tmp_path / "ali.ark"), "--epochs", "1", "--lr", "0.5", "--device", "cpu"]
    extra = ["--extra-data", str(tmp_path / "sp"), "--extra-ali", str(tmp_path / "ali_sp")]
    assert main(common + ["--out", str(tmp_path / "plain")]) == 0
    assert main(common + ["--out", str(tmp_path / "both"), *extra]) == 0
    n_tr = 24 - len(_cv_utts(alis))
    assert f"extra training data {tmp_path / 'sp'}: {n_tr} of 24 utterances" in capsys.readouterr().out

    def utts(run: str) -> int:
        return json.loads((tmp_path / run / "log" / "train_curve.json").read_text())[-1]["utterances"]

    assert (utts("plain"), utts("both")) == (n_tr, 2 * n_tr)
    assert json.loads((tmp_path / "both" / "config.json").read_text())["extra"] == [
        [str(tmp_path / "sp"), str(tmp_path / "ali_sp"), None]]
    assert main(common + ["--out", str(tmp_path / "x1"), "--extra-data", str(tmp_path / "sp")]) != 0
    assert main(common + ["--out", str(tmp_path / "x2"), *extra, "--extra-lattices", str(tmp_path)]) != 0
    assert "--extra-lattices 1" in capsys.readouterr().err
