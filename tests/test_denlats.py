"""``asr seq lattices`` end to end on a tiny GMM system: jobs keep every worker busy, a killed
run resumes with the jobs not yet written, and every lattice covers its utterance."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_gmm_stages import synth_corpus, write_synth_data_dir


@pytest.mark.slow
def test_den_lattices_split_resume_and_cover_every_utterance(tmp_path: Path):
    from asr.cli.main import main
    from asr.gmm.decode import ensure_graph
    from asr.lang.langdir import make_phone_lang
    from asr.nnet.io import read_alignments
    from asr.seqtrain.denlats import DenLatConfig, load_den_lattices, make_den_lattices

    raw, phones, utt2spk, _ = synth_corpus(seed=2, num_spk=4, utts_per_spk=5)
    write_synth_data_dir(tmp_path / "train", raw, phones, utt2spk)
    make_phone_lang(tmp_path / "train" / "text", tmp_path / "lang")
    mono = tmp_path / "mono"
    assert main(["gmm", "mono", "--data", str(tmp_path / "train"), "--lang", str(tmp_path / "lang"),
                 "--iters", "4", "--gauss", "60", "--nj", "1", "--out", str(mono)]) == 0
    graph = ensure_graph(mono, tmp_path / "lang")
    out = tmp_path / "lats"
    logs: list[str] = []
    stats = make_den_lattices(mono, graph, tmp_path / "train", mono, out, DenLatConfig(), nj=2, log=logs.append)
    assert sorted(p.name for p in out.glob("lat.*.pt")) == ["lat.0.pt", "lat.1.pt"]   # 20 utts, 2 workers
    assert stats["utterances"] == 20 and stats["failed"] == 0
    assert json.loads((out / "meta.json").read_text())["config"]["acwt"] == 0.1   # a GMM's default scale (Kaldi)
    lats = load_den_lattices(out)
    alis = read_alignments(mono / "ali_pdf.ark")
    assert sorted(lats) == sorted(raw)
    assert all(la.num_frames == alis[u].numel() and int(la.frame.max()) == la.num_frames - 1 for u, la in lats.items())
    assert any(bool((la.seg_acc != 0).any()) for la in lats.values())
    # a killed run: one job file missing -> only that job is made again, identically
    before = torch.load(out / "lat.1.pt", weights_only=False)
    (out / "lat.1.pt").unlink()
    make_den_lattices(mono, graph, tmp_path / "train", mono, out, DenLatConfig(), nj=2, log=logs.append)
    assert any("1 of 2 lattice jobs already done" in x for x in logs)
    after = torch.load(out / "lat.1.pt", weights_only=False)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[u][k], after[u][k]) for u in before for k in ("src", "dst", "pdf", "seg_acc"))
    # frame-criteria lattices (GMM bMMI): no segment split, no accuracies
    flat = make_den_lattices(mono, graph, tmp_path / "train", mono, tmp_path / "flat",
                             DenLatConfig(segments=False), nj=1, log=logs.append)
    assert flat["arcs_per_frame"] <= stats["arcs_per_frame"]
    assert all(bool((la.seg_acc == 0).all()) for la in load_den_lattices(tmp_path / "flat").values())
