"""LDC TIMIT reader on a small TIMIT-layout tree built here (upper and lower case names)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.corpus.timit import BadUtterance, prepare_timit
from asr.datadir import read_data_dir, validate_data_dir

SR = 16000
# 61-label segments (label, n_samples) with their Lee & Hon 48 / 39 foldings written by hand
SEGS = [("h#", 1600), ("sh", 1200), ("ix", 800), ("hv", 600), ("eh", 900), ("dcl", 400),
        ("d", 300), ("q", 200), ("ax-h", 500), ("zh", 700), ("axr", 800), ("pau", 600),
        ("ux", 700), ("h#", 1500)]
EXPECT48 = "sil sh ix hh eh vcl d ax zh er sil uw sil".split()
EXPECT39 = "sil sh ih hh eh sil d ah sh er sil uw sil".split()
WORDS = [(1600, 4500, "she"), (4500, 9900, "had")]
N = sum(n for _, n in SEGS)


def _write_utt(d: Path, stem: str, case: str, segs=SEGS, rate: int = SR, words=WORDS) -> None:
    def name(ext: str) -> Path:
        n = f"{stem}.{ext}"
        return d / (n.upper() if case == "upper" else n.lower())

    rng = np.random.default_rng(0)
    n = sum(k for _, k in segs)
    sf.write(str(name("wav")), (rng.standard_normal(n) * 1000).astype(np.int16), rate,
             format="NIST", subtype="PCM_16")
    t, lines = 0, []
    for lab, k in segs:
        lines.append(f"{t} {t + k} {lab}")
        t += k
    name("phn").write_text("\n".join(lines) + "\n")
    name("wrd").write_text("".join(f"{s} {e} {w}\n" for s, e, w in words))
    name("txt").write_text(f"0 {n} She had.\n")


def _make_tree(root: Path, case: str) -> Path:
    """train: mabc0 (+fxyz0); dev: faks0 (from dev_spk.list); test: mdab0 (core list);
    mzzz9 sits in TEST but in neither list -> unused."""
    up = (lambda s: s.upper()) if case == "upper" else (lambda s: s.lower())
    layout = {("TRAIN", "DR1", "MABC0"): ["SA1", "SA2", "SI1001", "SX11"],
              ("TRAIN", "DR2", "FXYZ0"): ["SA1", "SI1002"],
              ("TEST", "DR1", "MDAB0"): ["SA1", "SI1003", "SX12"],
              ("TEST", "DR2", "FAKS0"): ["SA2", "SX13"],
              ("TEST", "DR3", "MZZZ9"): ["SI1004"]}
    for (part, dr, spk), utts in layout.items():
        d = root / up(part) / up(dr) / up(spk)
        d.mkdir(parents=True)
        for u in utts:
            _write_utt(d, u, case)
    return root


@pytest.mark.parametrize("case", ["upper", "lower"])
def test_reader_splits_and_folding(tmp_path: Path, case: str) -> None:
    corpus = _make_tree(tmp_path / "timit", case)
    out = tmp_path / "data"
    dirs = prepare_timit(corpus, out)
    assert sorted(dirs["train"].utts) == ["fxyz0_si1002", "mabc0_si1001", "mabc0_sx11"]
    assert dirs["dev"].utts == ["faks0_sx13"]
    assert dirs["test"].utts == ["mdab0_si1003", "mdab0_sx12"]
    for split in ("train", "dev", "test"):
        dd = validate_data_dir(out / split)
        assert not any("_sa" in u for u in dd.utts)
        for u in dd.utts:
            assert dd.text[u] == EXPECT48
            assert dd.text39[u] == EXPECT39
            assert dd.text_wrd[u] == ["she", "had"]
            assert dd.utt2dur[u] == pytest.approx(N / SR)
            assert [lab for _, _, lab in dd.phone_times[u]] == [lab for lab, _ in SEGS]
            assert dd.phone_times[u][-1][1] == pytest.approx(N / SR)
            assert Path(dd.wav[u]).is_file()
    assert read_data_dir(out / "train").spk2gender == {"fxyz0": "f", "mabc0": "m"}
    assert (out / "train" / "spk2utt").read_text() == (
        "fxyz0 fxyz0_si1002\nmabc0 mabc0_si1001 mabc0_sx11\n")
    assert not list(out.glob("*.tmp"))


def _bad_tree(tmp_path: Path) -> tuple[Path, Path]:
    corpus = _make_tree(tmp_path / "timit", "upper")
    return corpus, corpus / "TRAIN" / "DR1" / "MABC0"


def _corrupt_phn_label(d: Path) -> str:
    p = d / "SI1001.PHN"
    lines = p.read_text().splitlines()
    lines[3] = lines[3].replace("hv", "xx")
    p.write_text("\n".join(lines) + "\n")
    return r"SI1001\.PHN:4: unknown phone label 'xx'"


def _corrupt_phn_order(d: Path) -> str:
    p = d / "SI1001.PHN"
    lines = p.read_text().splitlines()
    lines[2], lines[3] = lines[3], lines[2]
    p.write_text("\n".join(lines) + "\n")
    return r"SI1001\.PHN:4: non-monotone"


def _truncate_wav(d: Path) -> str:
    p = d / "SI1001.WAV"
    p.write_bytes(p.read_bytes()[:-1000])
    return r"SI1001\.WAV: truncated"


def _other_rate(d: Path) -> str:
    _write_utt(d, "SI1001", "upper", rate=8000)
    return r"SI1001\.WAV: sample rate 8000"


def _missing_wav(d: Path) -> str:
    (d / "SI1001.WAV").unlink()
    return r"SI1001\.WAV: missing audio"


def _missing_txt(d: Path) -> str:
    (d / "SI1001.WRD").unlink()
    return r"SI1001\.WRD: missing transcript"


def _empty(d: Path) -> str:
    _write_utt(d, "SI1001", "upper", segs=[("h#", 1000), ("pau", 500), ("h#", 1000)],
               words=[(0, 1, "she")])
    return r"SI1001\.PHN: empty utterance"


@pytest.mark.parametrize("corrupt", [_corrupt_phn_label, _corrupt_phn_order, _truncate_wav,
                                     _other_rate, _missing_wav, _missing_txt, _empty])
def test_bad_input_errors_and_skip(tmp_path: Path, corrupt, caplog) -> None:
    corpus, spk = _bad_tree(tmp_path)
    pattern = corrupt(spk)
    with pytest.raises(BadUtterance, match=pattern):
        prepare_timit(corpus, tmp_path / "data")
    assert not (tmp_path / "data").exists()  # nothing half-written
    with caplog.at_level(logging.WARNING, logger="asr.corpus.timit"):
        dirs = prepare_timit(corpus, tmp_path / "data", skip_bad=True)
    assert "mabc0_si1001" not in dirs["train"].utts
    assert "mabc0_sx11" in dirs["train"].utts
    assert "skipped 1 bad utterance(s): mabc0_si1001" in caplog.text
    validate_data_dir(tmp_path / "data" / "train")
    counts = json.loads((tmp_path / "data" / "log" / "counts.json").read_text())
    assert counts == {"skipped_utts": {"count": 1, "utts": ["mabc0_si1001"]}}


def test_every_bad_file_is_reported_in_one_run(tmp_path: Path, capsys) -> None:
    """All bad utterances of a corpus in one error (not one per run), which names --skip-bad."""
    from asr.cli.main import main

    corpus, spk = _bad_tree(tmp_path)
    _corrupt_phn_label(spk)
    dev = corpus / "TEST" / "DR1" / "MDAB0"
    (dev / "SX12.WAV").write_bytes((dev / "SX12.WAV").read_bytes()[:-1000])
    with pytest.raises(BadUtterance, match=r"(?s)2 unusable utterance.*SI1001\.PHN:4.*SX12\.WAV: truncated.*--skip-bad"):
        prepare_timit(corpus, tmp_path / "data")
    assert main(["data", "timit", str(corpus), str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "SI1001.PHN" in err and "SX12.WAV" in err and "--skip-bad" in err
    assert main(["data", "timit", str(corpus), str(tmp_path / "d"), "--skip-bad"]) == 0
    counts = json.loads((tmp_path / "d" / "log" / "counts.json").read_text())
    assert counts["skipped_utts"] == {"count": 2, "utts": ["mabc0_si1001", "mdab0_sx12"]}


def test_cli_timit(tmp_path: Path, capsys) -> None:
    from asr.cli.main import main

    corpus = _make_tree(tmp_path / "timit", "lower")
    assert main(["data", "timit", str(corpus), str(tmp_path / "d")]) == 0
    assert "train: 3 utterances, 2 speakers" in capsys.readouterr().out
    assert main(["data", "validate", str(tmp_path / "d" / "test")]) == 0
    assert main(["data", "timit", str(tmp_path / "nope"), str(tmp_path / "e")]) == 1
