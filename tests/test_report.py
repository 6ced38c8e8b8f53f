"""report.md from decode dirs: numbers equal asr.score's, baseline chosen on dev, relative gains."""
import random

import pytest

from asr.report import relative_gains, write_report
from asr.report.systems import best_gmm, collect_systems
from asr.score import score


def _write(path, texts):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{u} {' '.join(t)}\n" for u, t in sorted(texts.items())))


def _corrupt(ref, rate, rng):
    out = {}
    for u, toks in ref.items():
        h = []
        for t in toks:
            r = rng.random()
            if r < rate / 2:
                h.append("aa" if t != "aa" else "iy")
            elif r < rate:
                continue
            else:
                h.append(t)
        out[u] = h
    return out


@pytest.fixture
def exp(tmp_path):
    rng = random.Random(0)
    phones = ["aa", "iy", "s", "sh", "sil", "t", "d", "m", "n"]
    sets = {}
    for s in ("dev", "test"):
        ref = {f"spk{i % 4}_u{i}": [rng.choice(phones) for _ in range(20)] for i in range(30)}
        _write(tmp_path / "data" / s / "text.39", ref)
        sets[s] = ref
    # error rates per system: tri2 best on dev, tri3 best on test (baseline must be tri2)
    rates = {"mono": (0.40, 0.40), "tri1": (0.30, 0.30), "tri2": (0.18, 0.25), "tri3": (0.22, 0.20),
             "dnn": (0.12, 0.12), "dnn_mpe": (0.10, 0.10)}
    for sysname, (rd, rt) in rates.items():
        for s, r in (("dev", rd), ("test", rt)):
            d = tmp_path / sysname / f"decode_{s}"
            _write(d / "hyp.7.txt", _corrupt(sets[s], r, rng))
            (d / "best_lmwt").write_text("7\n")
    return tmp_path


def test_baseline_is_chosen_on_dev(exp):
    systems = collect_systems(exp, n_boot=200)
    assert best_gmm(systems).name == "tri2"


def test_report_numbers_match_scoring(exp):
    from asr.score import read_text

    path, table = write_report(exp)
    text = path.read_text()
    ref = read_text(exp / "data" / "test" / "text.39")
    hyp = read_text(exp / "dnn" / "decode_test" / "hyp.7.txt")
    per = score(ref, hyp).wer
    assert f"{per:.2f}" in text
    assert "| CD-GMM-HMM (best tri = tri2, ML)" in table
    base = score(ref, read_text(exp / "tri2" / "decode_test" / "hyp.7.txt")).wer
    _, gain = relative_gains(per, base)
    assert f"{gain:+.1f} %" in table
    assert (exp / "report_figs" / "per_phone_errors.png").is_file()


def test_relative_gains():
    err, acc = relative_gains(20.0, 25.0)
    assert err == pytest.approx(20.0)
    assert acc == pytest.approx(100 * (80 - 75) / 75)
