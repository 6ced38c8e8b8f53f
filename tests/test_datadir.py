"""Data directory read / write / validate."""
from __future__ import annotations

from pathlib import Path

import pytest

from asr.datadir import DataDir, read_data_dir, validate_data_dir, write_data_dir


def _dd(tmp_path: Path) -> DataDir:
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"")
    utts = {"mb0_sx2": "mb0", "fa0_si1": "fa0", "mb0_si3": "mb0", "fa0_sx9": "fa0"}
    return DataDir(
        wav={u: str(wav) for u in utts},
        text={u: ["sil", "ix", "cl", "sil"] for u in utts},
        utt2spk=utts,
        text39={u: ["sil", "ih", "sil", "sil"] for u in utts},
        text_wrd={u: ["it"] for u in utts},
        phone_times={u: [(0.0, 0.1, "h#"), (0.1, 0.15, "ix"), (0.15, 0.2, "tcl"), (0.2, 0.3, "h#")]
                     for u in utts},
        spk2gender={"mb0": "m", "fa0": "f"},
        utt2dur={u: 0.3 for u in utts},
    )


def test_roundtrip_sorted(tmp_path: Path) -> None:
    dd = _dd(tmp_path)
    write_data_dir(dd, tmp_path / "d")
    back = validate_data_dir(tmp_path / "d")
    assert back.text == dd.text and back.utt2spk == dd.utt2spk and back.utt2dur == dd.utt2dur
    assert back.phone_times == dd.phone_times and back.spk2gender == dd.spk2gender
    keys = [ln.split()[0] for ln in (tmp_path / "d" / "text").read_text().splitlines()]
    assert keys == sorted(keys, key=lambda s: s.encode())
    assert (tmp_path / "d" / "spk2utt").read_text() == "fa0 fa0_si1 fa0_sx9\nmb0 mb0_si3 mb0_sx2\n"
    assert not (tmp_path / "d.tmp").exists()


def test_rewrite_keeps_extra_files(tmp_path: Path) -> None:
    dd = _dd(tmp_path)
    write_data_dir(dd, tmp_path / "d")
    (tmp_path / "d" / "feats.scp").write_text("x y\n")
    dd2 = read_data_dir(tmp_path / "d")
    assert dd2.extra == ["feats.scp"]
    write_data_dir(dd2.subset(["fa0_si1"]), tmp_path / "d")
    assert (tmp_path / "d" / "feats.scp").read_text() == "x y\n"
    assert read_data_dir(tmp_path / "d").utts == ["fa0_si1"]


@pytest.mark.parametrize("edit,msg", [
    (lambda d: (d / "text").write_text((d / "text").read_text().replace("ix", "xx")), "unknown phones"),
    (lambda d: (d / "utt2spk").write_text("".join(reversed((d / "utt2spk").read_text().splitlines(True)))),
     "not sorted"),
    (lambda d: (d / "text.39").write_text((d / "text.39").read_text().splitlines(True)[0]),
     "utterance set differs"),
    (lambda d: (d / "spk2gender").write_text("fa0 x\nmb0 m\n"), "gender"),
    (lambda d: (d / "phone_times").write_text((d / "phone_times").read_text().replace("0.15 0.2", "0.15 0.1")),
     "bad segment"),
])
def test_validate_catches(tmp_path: Path, edit, msg: str) -> None:
    write_data_dir(_dd(tmp_path), tmp_path / "d")
    edit(tmp_path / "d")
    with pytest.raises(ValueError, match=msg):
        validate_data_dir(tmp_path / "d")


def test_bad_utt_id_rejected(tmp_path: Path) -> None:
    dd = _dd(tmp_path)
    dd.utt2spk["zz_1"] = "mb0"
    with pytest.raises(ValueError, match="zz_1"):
        write_data_dir(dd, tmp_path / "d")
    assert not (tmp_path / "d").exists() and not (tmp_path / "d.tmp").exists()


# ------------------------------------------------------------------ one Kaldi text-table reader
def _readers():
    """Every public route by which the toolkit reads an utterance-keyed table."""
    from asr.datadir.table import read_table, read_token_table
    from asr.lang.langdir import read_transcripts
    from asr.nnet.stages import read_utt2spk as nnet_utt2spk
    from asr.score import read_text, read_utt2spk

    return {
        "read_table": read_table,
        "read_token_table": read_token_table,
        "score.read_text": read_text,
        "score.read_utt2spk": read_utt2spk,
        "lang.read_transcripts": read_transcripts,
        "nnet.read_utt2spk": lambda p: nnet_utt2spk(p.parent),
    }


@pytest.mark.parametrize("name", list(_readers()))
def test_every_table_reader_refuses_a_repeated_key_naming_both_lines(tmp_path, name):
    p = tmp_path / "utt2spk"
    p.write_text("a_1 a\nb_1 b\n\na_1 a\n")
    with pytest.raises(ValueError, match=r"utt2spk:4: .*'a_1' appears twice \(first on line 1\)"):
        _readers()[name](p)


def test_table_shapes_blank_lines_and_empty_values(tmp_path):
    from asr.datadir.table import read_table, read_table_rows, read_token_table

    p = tmp_path / "text"
    p.write_text("u1 sil aa sil\nu2\n\nu3  b   c \n")
    assert read_token_table(p) == {"u1": ["sil", "aa", "sil"], "u2": [], "u3": ["b", "c"]}
    assert read_table(p)["u3"] == "b   c"
    with pytest.raises(ValueError, match=r"text:3: empty line"):
        read_table_rows(p, blank_lines=False)
    with pytest.raises(ValueError, match=r"text:1: expected 2 columns"):
        read_table(p, columns=2)
    with pytest.raises(ValueError, match=r"text:2: expected at least 2 columns"):
        read_table(p, min_columns=2)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_table(tmp_path / "nowhere")
