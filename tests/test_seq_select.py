"""``asr.seqtrain.select``: the sequence-trained epoch chosen on dev, the CE model included.

The dev decodes are replaced by a stand-in that scores each candidate from its weights (a
network whose output bias was set to k scores ``errors[k]``), so the test checks the choice, the
files written and the refusals, not the decoder (tested elsewhere)."""
from __future__ import annotations

import json

import pytest
import torch

import asr.nnet.stages as stages
from asr.jobs.safeio import save_data
from asr.nnet import HybridDNN, NetConfig, load_model, save_model
from asr.decode.pipeline import read_scoring_errors as read_errors
from asr.seqtrain.select import select_seq_epoch

REF = 1000


def _scoring(d, errors: int, ref: int = REF) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "scoring").write_text(f"%WER {100 * errors / ref:.2f} [ {errors} / {ref}, 1 ins, 2 del, 3 sub ] {d}\n")


def _setup(tmp_path, monkeypatch, errors: list[int], ref_of=lambda k: REF):
    """CE model (output bias 0, dev errors errors[0]) and epoch checkpoints 1..n (bias k)."""
    torch.manual_seed(0)
    model = HybridDNN(NetConfig(input_dim=3, num_pdfs=4, hidden=(5,), left=1, right=1))
    with torch.no_grad():
        model.body[-1].bias.fill_(0.0)
    ce, out = tmp_path / "dnn", tmp_path / "dnn_mpe"
    save_model(model, ce / "final.pt")
    _scoring(ce / "decode_dev", errors[0])
    for k in range(1, len(errors)):
        with torch.no_grad():
            model.body[-1].bias.fill_(float(k))
        save_data({"model": model.state_dict(), "epoch": k}, out / "ckpt" / f"epoch{k:03d}.pt")
    save_model(model, out / "final.pt", extra={"history": [], "config": {"lr": 1.0}})
    calls = []

    def fake_decode(model_dir, graph_dir, data_dir, out_dir, nj=1, mode="phone", mbr=True, **kw):
        k = int(round(load_model(model_dir).body[-1].bias[0].item()))
        calls.append((k, str(graph_dir), str(data_dir), nj, mode, mbr))
        _scoring(out_dir, errors[k], ref_of(k))

    monkeypatch.setattr(stages, "run_decode", fake_decode)
    return ce, out, calls


def _bias(path) -> float:
    return load_model(path).body[-1].bias[0].item()


def test_best_epoch_becomes_final(tmp_path, monkeypatch):
    ce, out, calls = _setup(tmp_path, monkeypatch, [500, 480, 470, 470, 490])
    rec = select_seq_epoch(ce, out, tmp_path / "graph", tmp_path / "dev", nj=2, mode="phone", log=lambda m: None)
    assert rec["chosen"]["epoch"] == 2 and rec["improved_on_dev"]          # tie 2 vs 3 -> the earlier
    assert [c["dev_errors"] for c in rec["candidates"]] == [500, 480, 470, 470, 490]
    assert _bias(out / "final.pt") == 2.0
    assert torch.load(out / "final.pt", weights_only=True)["extra"]["config"] == {"lr": 1.0}
    assert [c[0] for c in calls] == [1, 2, 3, 4] and calls[0][1:] == (str(tmp_path / "graph"), str(tmp_path / "dev"),
                                                                     2, "phone", False)
    assert json.loads((out / "selection.json").read_text())["chosen"]["epoch"] == 2
    assert not list((out / "select").glob("*/final.pt"))                     # candidates' networks not kept
    # the chosen epoch's dev decoding is the stage's (the recipe does not decode dev again)
    assert read_errors(out / "decode_dev") == (470, REF)
    assert (out / "decode_dev" / "scoring").read_text().split()[-1] == str(out / "decode_dev")   # relabelled
    assert rec["decode_dev"] == str(out / "select" / "epoch2" / "decode_dev")
    # resumed: every candidate already scored, nothing is decoded again, same choice
    calls.clear()
    assert select_seq_epoch(ce, out, tmp_path / "graph", tmp_path / "dev", log=lambda m: None)["chosen"]["epoch"] == 2
    assert calls == []
    # a retrained epoch 3 (another checkpoint) is decoded again, the others not
    ck = torch.load(out / "ckpt" / "epoch003.pt", weights_only=True)
    ck["model"]["body.2.bias"] = ck["model"]["body.2.bias"] - 2.0       # now scores as epoch 1
    save_data(ck, out / "ckpt" / "epoch003.pt")
    rec = select_seq_epoch(ce, out, tmp_path / "graph", tmp_path / "dev", log=lambda m: None)
    assert [c[0] for c in calls] == [1] and rec["candidates"][3]["dev_errors"] == 480


def test_ce_model_kept_when_no_epoch_beats_it(tmp_path, monkeypatch):
    ce, out, _ = _setup(tmp_path, monkeypatch, [450, 460, 455])
    msgs = []
    rec = select_seq_epoch(ce, out, tmp_path / "graph", tmp_path / "dev", log=msgs.append)
    assert rec["chosen"]["epoch"] == 0 and not rec["improved_on_dev"]
    assert _bias(out / "final.pt") == 0.0                                   # the CE network, not the last epoch's
    assert read_errors(out / "decode_dev") == (450, REF) and rec["decode_dev"] == str(ce / "decode_dev")
    assert any("keeps" in m for m in msgs)


def test_refusals(tmp_path, monkeypatch):
    ce, out, _ = _setup(tmp_path, monkeypatch, [500, 480], ref_of=lambda k: REF + k)
    with pytest.raises(ValueError, match="not the same dev set"):
        select_seq_epoch(ce, out, tmp_path / "graph", tmp_path / "dev", log=lambda m: None)
    (ce / "decode_dev" / "scoring").unlink()
    with pytest.raises(FileNotFoundError, match="decode the dev set first"):
        select_seq_epoch(ce, out, tmp_path / "graph", tmp_path / "dev", log=lambda m: None)
    _scoring(ce / "decode_dev", 3)
    assert read_errors(ce / "decode_dev") == (3, REF)
    (ce / "decode_dev" / "scoring").write_text("nonsense\n")
    with pytest.raises(ValueError, match="not a scoring line"):
        read_errors(ce / "decode_dev")


def test_report_lists_the_dev_choices(tmp_path, monkeypatch):
    from asr.report.markdown import selection_lines

    assert "No stage of this run chose" in selection_lines(tmp_path)[-1]
    ce, out, _ = _setup(tmp_path, monkeypatch, [450, 460, 455])
    select_seq_epoch(ce, out, tmp_path / "graph", tmp_path / "dev", log=lambda m: None)
    gmm = tmp_path / "tri3_bmmi"
    gmm.mkdir()
    (gmm / "selection.json").write_text(json.dumps({
        "candidates": [{"tau": None, "iter": 0, "dev_errors": 900, "dev_ref": REF},
                       {"tau": 100.0, "iter": 1, "dev_errors": 880, "dev_ref": REF}],
        "chosen": {"tau": 100.0, "iter": 1, "dev_errors": 880, "dev_ref": REF}, "improved_on_dev": True}))
    lines = "\n".join(selection_lines(tmp_path))
    assert "| `dnn_mpe` | CE model: 450, epoch 1: 460, epoch 2: 455 | CE model (450 / 1000) | **no** |" in lines
    assert "| `tri3_bmmi` | starting system: 900, tau 100 iteration 1: 880 | tau 100 iteration 1 (880 / 1000) | yes |" in lines
