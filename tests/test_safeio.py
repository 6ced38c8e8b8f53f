"""Files the toolkit reads are data, never code (issue 14, item 12): a crafted pickle is refused
with an error naming the file before any of its code runs, and failed writes leave no temp file."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from asr.cli.main import main
from asr.jobs.safeio import NotPlainData, atomic_path, load_data, save_data


class _Payload:
    """Unpickling this object creates the file named ``marker`` (what an attacker's code could do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _evil(path: Path, marker: Path, wrap=lambda p: p) -> Path:
    torch.save(wrap(_Payload(marker)), path)
    return path


def test_load_data_refuses_objects_without_running_them(tmp_path):
    marker = tmp_path / "pwned"
    evil = _evil(tmp_path / "final.pt", marker, lambda p: {"topo": p, "w": torch.zeros(2)})
    with pytest.raises(NotPlainData, match=r"final\.pt.*not a plain-data"):
        load_data(evil, what="model")
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(ValueError, match=r"junk\.pt"):
        load_data(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="nothere"):
        load_data(tmp_path / "nothere.pt")
    ok = {"a": torch.arange(3), "b": [1, 2.5, "x", None, (True,)], "sd": torch.nn.Linear(2, 2).state_dict()}
    save_data(ok, tmp_path / "ok.pt")
    back = load_data(tmp_path / "ok.pt")
    assert torch.equal(back["a"], ok["a"]) and back["b"] == [1, 2.5, "x", None, (True,)]


@dataclass
class _Cfg:
    lr: float = 0.1


def test_save_data_refuses_objects_and_leaves_no_temp_file(tmp_path):
    with pytest.raises(NotPlainData, match=r"ck\.pt\['config'\].*_Cfg"):
        save_data({"config": _Cfg(), "w": torch.ones(1)}, tmp_path / "ck.pt")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(tmp_path / "out.ark") as tmp:
            tmp.write_text("half a file")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_cli_lang_graph_refuses_a_crafted_model(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = _evil(tmp_path / "final.pt", marker)
    rc = main(["lang", "graph", "--lang", str(tmp_path / "lang"), "--model", str(evil), "--out", str(tmp_path / "g")])
    assert rc == 1 and not marker.exists()
    assert f"{evil}" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_seq_train_checkpoint_and_graph_cache_are_read_as_data(tmp_path):
    """A crafted epoch checkpoint or denominator-graph cache in an output dir is refused."""
    from asr.nnet import HybridDNN, NetConfig, build_frame_data
    from asr.nnet.synthetic import synth_corpus
    from asr.seqtrain import SeqTrainConfig, pdf_loop_graph, train_sequence
    from asr.seqtrain.stage import load_den_graph

    feats, alis = synth_corpus(6, 6, 4, seed=0)
    train = cv = build_frame_data(feats, alis, 0, 0, num_pdfs=6)
    m = HybridDNN(NetConfig(input_dim=4, num_pdfs=6, hidden=(8,), left=0, right=0))
    marker = tmp_path / "pwned"
    (tmp_path / "s" / "ckpt").mkdir(parents=True)
    ck = _evil(tmp_path / "s" / "ckpt" / "epoch001.pt", marker, lambda p: {"model": p})
    with pytest.raises(ValueError, match=r"epoch001\.pt"):
        train_sequence(m, train, cv, pdf_loop_graph(6), SeqTrainConfig(criterion="mmi", epochs=2), tmp_path / "s",
                       log=lambda s: None)
    assert not marker.exists() and ck.is_file()
    cache = _evil(tmp_path / "den_graph.pt", marker, lambda p: {"source": p})
    with pytest.raises(ValueError, match=r"den_graph\.pt"):
        load_den_graph(tmp_path / "HCLG.fst", cache)
    assert not marker.exists()


def test_atomic_text_and_json_writers_leave_no_temporary(tmp_path):
    import json

    from asr.jobs.atomic import atomic_path, write_json_atomic, write_text_atomic

    p = write_text_atomic(tmp_path / "sub" / "a.txt", "x\n")
    assert p.read_text() == "x\n"
    write_json_atomic(tmp_path / "b.json", {"k": [1, 2]}, indent=1)
    assert json.loads((tmp_path / "b.json").read_text()) == {"k": [1, 2]}
    # a failure mid-write keeps the previous version and removes the temporary
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert p.read_text() == "x\n"
    assert sorted(f.name for f in p.parent.iterdir()) == ["a.txt"]
    with atomic_path(tmp_path / "c.png", suffix=".tmp.png") as tmp:
        assert tmp.name == "c.png.tmp.png"
        tmp.write_bytes(b"png")
    assert (tmp_path / "c.png").read_bytes() == b"png"
