"""Sequence training fails loudly (issue 14, items 1-3): a non-finite network output stops it with
the epoch and utterances named and no final model; lattices with a non-finite score are left out,
named and counted; options a criterion would ignore are refused."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from asr.jobs.stage import StageFailed
from asr.seqtrain import SeqTrainConfig, expand_lattice, pdf_loop_graph, train_sequence

from test_seqtrain import _ce_model
from test_seqtrain_lattice import random_lattice

P2P, P2S = torch.tensor([1, 1, 2, 2, 3, 3]), torch.tensor([0, 1, 0, 1, 0, 1])


@pytest.fixture(scope="module")
def ce_model(tmp_path_factory):
    """One CE model for the module; each test gets its own copy."""
    m, train, cv = _ce_model(tmp_path_factory.mktemp("ce"))
    return lambda: (copy.deepcopy(m), train, cv)


def _lattices(train, n_utts: int) -> dict:
    """Random segment-expanded lattices for the first ``n_utts`` training utterances."""
    starts = (torch.cumsum(train.lengths, 0) - train.lengths).tolist()
    return {u: expand_lattice(random_lattice(k, t_len=int(train.lengths[k]), width=3, num_pdfs=6), 6, P2P, P2S,
                              train.targets[starts[k]:starts[k] + int(train.lengths[k])])
            for k, u in enumerate(train.utts[:n_utts])}


def test_non_finite_network_output_fails_naming_epoch_and_utterances(tmp_path, ce_model):
    m, train, cv = ce_model()
    with torch.no_grad():
        next(m.body.parameters()).view(-1)[0] = float("nan")
    msgs: list[str] = []
    with pytest.raises(StageFailed, match=r"non-finite network output at epoch 1 \(utterances \d+: " + train.utts[0][:3]):
        train_sequence(m, train, cv, pdf_loop_graph(6), SeqTrainConfig(criterion="mmi", epochs=2), tmp_path / "s",
                       pdf2phone=P2P, log=msgs.append)
    assert not (tmp_path / "s" / "final.pt").exists()
    assert any("non-finite network output at epoch 1" in x for x in msgs)


def test_lattices_with_non_finite_score_are_dropped_named_and_counted(tmp_path, ce_model):
    m, train, cv = ce_model()
    lats = _lattices(train, 6)                     # utterances 6.. have none: skipped and counted
    broken = train.utts[2]
    lats[broken].weight[:] = float("nan")
    msgs: list[str] = []
    h = train_sequence(m, train, cv, lats, SeqTrainConfig(criterion="mpe", epochs=1, lr=0.5, ce_smoothing=0.0),
                       tmp_path / "mpe", pdf2phone=P2P, log=msgs.append)
    assert h[-1]["no_num_path"] == 1 and h[-1]["utterances"] == 6
    assert any("not finite" in x and broken in x for x in msgs)
    counts = json.loads((tmp_path / "mpe" / "log" / "counts.json").read_text())
    assert counts["nonfinite_lattices"] == {"count": 1, "utts": [broken]}
    assert counts["no_lattice"]["count"] == len(train.utts) - 6 and counts["no_lattice"]["utts"][0] == train.utts[6]
    assert (tmp_path / "mpe" / "final.pt").is_file()


def test_every_lattice_non_finite_is_a_failed_stage(tmp_path, ce_model):
    m, train, cv = ce_model()
    lats = _lattices(train, 3)
    for la in lats.values():
        la.final[:] = float("-inf")
    with pytest.raises(StageFailed, match="epoch 1: no utterance contributed"):
        train_sequence(m, train, cv, lats, SeqTrainConfig(criterion="smbr", epochs=1), tmp_path / "x",
                       pdf2phone=P2P, log=lambda s: None)
    assert not (tmp_path / "x" / "final.pt").exists()


@pytest.mark.parametrize("criterion", ["mmi", "mpe"])
def test_exclude_silence_refused_where_it_would_be_ignored(tmp_path, criterion, ce_model):
    m, train, cv = ce_model()
    with pytest.raises(ValueError, match="exclude-silence"):
        train_sequence(m, train, cv, {}, SeqTrainConfig(criterion=criterion, exclude_silence=True), tmp_path / "x",
                       pdf2phone=P2P, silence_phones=[1], log=lambda s: None)


def test_exclude_silence_changes_the_smbr_objective(tmp_path, ce_model):
    objs = []
    for excl in (False, True):
        m, train, cv = ce_model()
        h = train_sequence(m, train, cv, pdf_loop_graph(6), SeqTrainConfig(criterion="smbr", epochs=1, exclude_silence=excl),
                           tmp_path / f"s{excl}", pdf2phone=P2P, silence_phones=[1], log=lambda s: None)
        objs.append(h[-1]["objective"])
    assert objs[1] < objs[0] - 0.05      # a third of the reference frames now count 0


def test_cli_seq_train_fails_with_exit_1_and_no_done_marker(tmp_path, capsys):
    from test_dnn_cli import make_data

    from asr.cli.main import main
    from asr.nnet import load_model
    from asr.nnet.model import save_model

    data, _ = make_data(tmp_path)
    ali = str(tmp_path / "ali.ark")
    assert main(["dnn", "train", "--data", str(data), "--ali", ali, "--out", str(tmp_path / "dnn"), "--random-init",
                 "--layers", "1", "--units", "8", "--context", "1", "--epochs", "1", "--device", "cpu"]) == 0
    common = ["--model", str(tmp_path / "dnn"), "--data", str(data), "--ali", ali, "--epochs", "1", "--device", "cpu"]
    # an option the criterion would ignore is refused
    assert main(["seq", "train", "--criterion", "mmi", "--boost", "0.3", *common, "--out", str(tmp_path / "b")]) == 1
    assert "--boost applies to --criterion bmmi only" in capsys.readouterr().err
    assert main(["seq", "train", "--criterion", "mmi", "--lattices", str(tmp_path), "--den", "pdf-bigram", *common,
                 "--out", str(tmp_path / "l")]) == 1
    m = load_model(tmp_path / "dnn")
    with torch.no_grad():
        next(m.body.parameters()).fill_(float("inf"))
    save_model(m, tmp_path / "dnn" / "final.pt")
    out = tmp_path / "mmi"
    assert main(["seq", "train", "--criterion", "mmi", *common, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "non-finite network output at epoch 1" in err and "utterances" in err
    assert not (out / ".done").exists() and not (out / "final.pt").exists()


@pytest.mark.slow
def test_gmm_bmmi_counts_non_finite_lattices_and_fails_when_none_is_usable(tmp_path, capsys):
    """`asr seq gmm-train`: lattices with a non-finite score are left out, named and counted (they
    were dropped silently); when none is usable the stage exits 1 without `.done`."""
    from test_gmm_stages import synth_corpus, write_synth_data_dir

    from asr.cli.main import main
    from asr.jobs.safeio import load_data, save_data
    from asr.lang.langdir import make_phone_lang

    raw, phones, utt2spk, _ = synth_corpus(seed=3, num_spk=4, utts_per_spk=6)
    write_synth_data_dir(tmp_path / "train", raw, phones, utt2spk)
    lang = make_phone_lang(tmp_path / "train" / "text", tmp_path / "lang")
    d, exp = str(tmp_path / "train"), tmp_path / "exp"
    assert main(["gmm", "mono", "--data", d, "--lang", str(lang), "--iters", "4", "--gauss", "120",
                 "--out", str(exp / "mono")]) == 0
    assert main(["lang", "graph", "--lang", str(lang), "--model", str(exp / "mono" / "final.pt"),
                 "--out", str(exp / "mono" / "graph")]) == 0
    lat = exp / "lats"
    assert main(["seq", "lattices", "--model", str(exp / "mono"), "--graph", str(exp / "mono" / "graph"),
                 "--data", d, "--ali", str(exp / "mono"), "--out", str(lat), "--no-segments"]) == 0
    assert json.loads((lat / "log" / "counts.json").read_text())["no_lattice"]["count"] == 0
    job = load_data(lat / "lat.0.pt")
    broken = sorted(job)[1]
    job[broken]["weight"][:] = float("nan")
    save_data(job, lat / "lat.0.pt")
    common = ["--model", str(exp / "mono"), "--data", d, "--lattices", str(lat), "--iters", "1"]
    assert main(["seq", "gmm-train", "--criterion", "mmi", "--boost", "0.2", *common, "--out", str(exp / "x")]) == 1
    assert main(["seq", "gmm-train", "--criterion", "mmi", *common, "--out", str(exp / "mmi")]) == 0
    counts = json.loads((exp / "mmi" / "log" / "counts.json").read_text())
    assert counts["nonfinite_lattices"] == {"count": 1, "utts": [broken]}
    assert broken in (exp / "mmi" / "log" / "train.log").read_text()
    for u in job:
        job[u]["weight"][:] = float("nan")
    save_data(job, lat / "lat.0.pt")
    capsys.readouterr()
    assert main(["seq", "gmm-train", "--criterion", "mmi", *common, "--out", str(exp / "none")]) == 1
    assert "no lattice had a finite score" in capsys.readouterr().err
    assert not (exp / "none" / ".done").exists() and not (exp / "none" / "final.pt").exists()
