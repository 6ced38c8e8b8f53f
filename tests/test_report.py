"""report.md from an experiment directory built with the recipe's real file formats: numbers equal
asr.score's, baseline chosen on dev, every table and figure present, per-condition counts add
up to the whole set, provenance recorded, and runs compared side by side."""
import json
import random
import re
import shutil
from pathlib import Path

import pytest

from asr.cli.main import main as asr_main
from asr.corpus.synth.config import CorpusSize, SynthConfig
from asr.corpus.synth.voices import make_speakers
from asr.datadir import DataDir, write_data_dir
from asr.lang.phones import load_phone_map
from asr.report import relative_gains, write_comparison, write_report, write_run_info
from asr.report import conditions as C
from asr.report.markdown import provenance_lines
from asr.report.speakers import speaker_table
from asr.report.systems import best_gmm, collect_systems, read_utt2spk_of
from asr.score import read_text, score

PHONES = load_phone_map().phones39
# (dev, test) error rates: tri2 best ML triphone on dev, tri3 best on test -> the baseline must be
# tri2; tri3_bmmi best GMM on dev, dnn_mpe best DNN on dev
RATES = {"mono": (0.45, 0.45), "tri1": (0.35, 0.35), "tri2": (0.18, 0.30), "tri3": (0.26, 0.20),
         "tri3_bmmi": (0.13, 0.19), "dnn_rand": (0.30, 0.30), "dnn": (0.10, 0.12), "dnn_mpe": (0.05, 0.10)}
SECTIONS = ["Headline", "Every system", "Significance (test set, matched pairs)",
            "Where each system wins: PER per speaker condition",
            "Is the DNN's relative gain larger on degraded or unseen-voice speakers?",
            "Dev vs test: what the difference comes from", "Why: phone confusions and per-phone errors",
            "Training curves", "Provenance"]
FIGURES = ["per_condition.png", "confusion.png", "per_phone_errors.png", "training_curves.png"]


def _write_text(path, texts):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{u} {' '.join(t)}\n" for u, t in sorted(texts.items())))


def _corrupt(ref, rate, rng):
    out = {}
    for u, toks in ref.items():
        h = []
        for t in toks:
            r = rng.random()
            if r < rate / 2:
                h.append(PHONES[(PHONES.index(t) + 1) % len(PHONES)])
            elif r < rate:
                continue
            else:
                h.append(t)
        out[u] = h
    return out


def _ce_curve(n_epochs, reject, cap):
    recs = [{"epoch": 0, "lr": 0.008, "train_loss": None, "cv_frame_acc": 0.05, "cv_loss": 4.0, "accepted": True}]
    acc = 0.05
    for e in range(1, n_epochs + 1):
        ok = e != reject
        new = acc + (0.1 / e if ok else -0.01)
        recs.append({"epoch": e, "lr": 0.008, "train_loss": 3.5 - 0.3 * e, "cv_frame_acc": new,
                     "cv_loss": 3.8 - 0.25 * e + (0.4 if not ok else 0), "accepted": ok, "seconds": 1.0,
                     "frames_per_s": 1000.0})
        acc = new if ok else acc
    return recs, {"data": "x", "ali": "tri3", "dbn": None, "config": {"ce": {"max_epochs": cap}}}


def build_exp(root: Path, seed: int = 0, test_speakers: int = 8) -> Path:
    """An experiment directory as the recipe leaves it: corpus description, data dirs, decode
    dirs of every system, training curves, stage times, skip counts and run info."""
    rng = random.Random(seed)
    exp = root
    cfg = SynthConfig(size="tiny", seed=3, speakers=CorpusSize(train=8, dev=4, test=test_speakers))
    spk = make_speakers(cfg)
    rows = []
    for part, ss in spk.items():
        for s in ss:
            r = s.as_row()
            r["set"] = part
            rows.append(r)
    cols = list(rows[0])
    doc = exp / "corpus" / "DOC"
    doc.mkdir(parents=True)
    (doc / "SPEAKERS.TSV").write_text("\t".join(cols) + "\n" + "".join(
        "\t".join(str(r[c]) for c in cols) + "\n" for r in rows))
    refs = {}
    data_rng = random.Random(99)  # same references for every seed of the run
    for part in ("train", "dev", "test"):
        dd = DataDir(wav={}, text={}, utt2spk={})
        for s in spk[part]:
            sid = s.spk_id.lower()
            for k in range(6):
                u = f"{sid}_si{k}"
                toks = [data_rng.choice(PHONES) for _ in range(data_rng.randint(12, 20))]
                dd.wav[u] = f"/corpus/{'TRAIN' if part == 'train' else 'TEST'}/DR{s.dr}/{s.spk_id}/SI{k}.WAV"
                dd.text[u] = toks
                dd.text39[u] = toks
                dd.utt2spk[u] = sid
                dd.utt2dur[u] = 0.1 * len(toks)
                dd.spk2gender[sid] = s.gender
        write_data_dir(dd, exp / "data" / part)
        refs[part] = dd.text39
    for sysname, (rd, rt) in RATES.items():
        for part, r in (("dev", rd), ("test", rt)):
            d = exp / sysname / f"decode_{part}"
            _write_text(d / "hyp.7.txt", _corrupt(refs[part], r, rng))
            (d / "best_lmwt").write_text("7\n")
    for sysname, reject, cap, n in (("dnn", 3, 4, 4), ("dnn_rand", None, 8, 3)):
        recs, conf = _ce_curve(n, reject, cap)
        (exp / sysname / "log").mkdir(parents=True, exist_ok=True)
        (exp / sysname / "log" / "train_curve.json").write_text(json.dumps(recs))
        (exp / sysname / "config.json").write_text(json.dumps(conf))
    (exp / "dnn_mpe" / "log").mkdir(parents=True, exist_ok=True)
    (exp / "dnn_mpe" / "log" / "train_curve.json").write_text(json.dumps([
        {"epoch": 0, "objective": None, "cv_frame_acc": 0.45, "criterion": "mpe"},
        {"epoch": 1, "criterion": "mpe", "objective": 0.071, "cv_frame_acc": 0.46, "cv_loss": 1.9},
        {"epoch": 2, "criterion": "mpe", "objective": 0.074, "cv_frame_acc": 0.461, "cv_loss": 1.88}]))
    (exp / "stage_times.tsv").write_text("1\tcorpus\t28\n5\tmono\t50\t812\n8\ttri3\t126\t1430\n5\tmono\t52\t800\n")
    (exp / "tri3" / "decode_test" / "log").mkdir(parents=True)
    (exp / "tri3" / "decode_test" / "log" / "counts.json").write_text(json.dumps(
        {"retry_beam": {"count": 2, "utts": ["a_si0", "b_si1"]}}))
    (exp / "dnn_mpe" / "log" / "counts.json").write_text(json.dumps(
        {"skipped_utts": {"count": 0, "utts": []}}))
    conf_file = root / "conf.sh"
    conf_file.write_text(f"corpus_size=tiny\nseed={seed}\n")
    write_run_info(exp, conf_file, seed, exp / "corpus", "recipes/timit/run.sh --exp X")
    return exp


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    return build_exp(tmp_path_factory.mktemp("exp"))


@pytest.fixture(scope="module")
def report(exp):
    path, table = write_report(exp, n_boot=200)
    return path.read_text(), table


def _table_after(text: str, heading: str) -> list[list[str]]:
    """Rows (cells) of the first markdown table after ``heading``."""
    body = text[text.index(heading):]
    lines = body.splitlines()
    start = next(k for k, ln in enumerate(lines) if ln.startswith("|"))
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split("|")])
    return rows


def test_baseline_is_chosen_on_dev(exp):
    systems = collect_systems(exp, n_boot=50)
    assert best_gmm(systems).name == "tri2"


def test_every_section_and_figure(exp, report):
    text, _ = report
    heads = re.findall(r"^## (.+)$", text, flags=re.M)
    assert heads == SECTIONS
    for f in FIGURES:
        assert (exp / "report_figs" / f).is_file(), f
        assert f"(report_figs/{f})" in text


def test_headline_numbers_match_scoring(exp, report):
    text, table = report
    ref = read_text(exp / "data" / "test" / "text.39")
    dnn = score(ref, read_text(exp / "dnn" / "decode_test" / "hyp.7.txt")).wer
    base = score(ref, read_text(exp / "tri2" / "decode_test" / "hyp.7.txt")).wer
    er, ag = relative_gains(dnn, base)
    assert "**baseline: best ML triphone GMM = tri2**" in table
    assert "relative error reduction vs baseline" in table and "relative accuracy gain vs baseline" in table
    row = next(r for r in _table_after(text, "## Headline") if "(`dnn`)" in r[0])
    assert row[2] == f"{dnn:.2f}" and row[4] == f"{er:+.1f} %" and row[5] == f"{ag:+.1f} %"
    assert re.fullmatch(r"\[\d+\.\d\d, \d+\.\d\d\]", row[3])
    names = [r[0] for r in _table_after(text, "## Headline")]
    assert not any("dnn_rand" in n or "(`mono`)" in n for n in names)


def test_condition_counts_add_up(exp, report):
    text, _ = report
    for set_name in ("Test", "Dev"):
        rows = _table_after(text, f"### {set_name} set: baseline -> DNN -> sequence training")
        total = next(r for r in rows if r[0] == "all")
        assert "tri2 PER" in text and "dnn_mpe PER" in text
        factors = {}
        for r in rows[1:]:
            f = factors.setdefault(r[0], [0, 0, 0])
            f[0] += int(r[2])
            f[1] += int(r[3])
            f[2] += int(r[4])
        assert len(factors) >= 6
        for f, (spk, utts, nref) in factors.items():
            assert (spk, utts, nref) == (int(total[2]), int(total[3]), int(total[4])), f
    # and errors, per system, through the API
    table = speaker_table(exp)
    systems = collect_systems(exp, n_boot=50)
    res = {s.name: s.test.result for s in systems}
    rows = C.condition_rows(res, read_utt2spk_of(exp, "test"), table, n_boot=50)
    for f in table.factors:
        for n, r in res.items():
            assert sum(x.results[n].errors for x in rows if x.factor == f) == r.errors
            assert sum(x.nref for x in rows if x.factor == f) == r.nref


def test_robustness_test_and_gap_sections(exp, report):
    text, _ = report
    rows = _table_after(text, "## Is the DNN's relative gain larger")
    voice = next(r for r in rows if r[0].startswith("held-out voice"))
    spk = speaker_table(exp).speakers
    test_spk = set(read_utt2spk_of(exp, "test").values())
    held = sum(spk[s].factors["voice"] == "held out" for s in test_spk)
    assert voice[1] == f"{held} / {len(test_spk) - held}"
    assert 0 < float(voice[5]) <= 1
    assert "**Verdict:" in text and "permutation" in text
    pooled = _table_after(text, "### Dev and test speakers pooled")
    n_dev = len(set(read_utt2spk_of(exp, "dev").values()))
    voice = next(r for r in pooled if r[0].startswith("held-out voice"))
    assert sum(map(int, voice[1].split(" / "))) == len(test_spk) + n_dev
    assert "test PER at dev's mix" in text
    adj = _table_after(text, "All factors at once")
    assert [r[0] for r in adj] == ["tri2", "dnn"]
    assert "**What separates test from dev:**" in text


def test_curves_and_confusions(report):
    text, _ = report
    assert "`dnn`: 4 epochs (cap 4), rejected by newbob: 3" in text
    assert "stopped at its epoch cap while CV accuracy was still improving" in text
    assert "`dnn_rand`: 3 epochs (cap 8), no epoch rejected." in text
    assert "Best GMM by dev PER: `tri3_bmmi`; best DNN by dev PER: `dnn_mpe`" in text
    assert "39 x 39 matrices normalised per reference phone" in text


def test_provenance(exp, report):
    text, _ = report
    info = json.loads((exp / "run_info.json").read_text())
    assert info["seed"] == 0 and info["config_text"] == "corpus_size=tiny\nseed=0\n"
    assert info["machine"]["cores"] >= 1
    prov = text[text.index("## Provenance"):]
    assert "seed: 0" in prov and "corpus_size=tiny" in prov and "code commit: `" in prov
    assert "SHA-256 `" in prov
    times = _table_after(text, "### Wall time and peak memory per stage")
    assert ["1", "corpus", "28", "not recorded"] in times
    assert ["5", "mono", "52", "800"] in times  # the last line of a stage run twice
    counts = _table_after(text, "### Skipped and failed utterances per stage")
    assert ["`tri3/decode_test`", "retry_beam", "2", "a_si0, b_si1"] in counts
    assert ["`dnn_mpe`", "skipped_utts", "0", ""] in counts


def test_no_counts_recorded(tmp_path):
    exp = tmp_path / "e"
    (exp / "mono").mkdir(parents=True)
    text = "\n".join(provenance_lines(exp, None, None))
    assert "None recorded: no stage of this run wrote a `log/counts.json`." in text
    assert "No `run_info.json`" in text


def test_compare_runs(exp, tmp_path):
    second = build_exp(tmp_path / "seed2", seed=2)  # same corpus and test set, other hypotheses
    other = build_exp(tmp_path / "other", seed=0, test_speakers=4)  # another test set
    out = tmp_path / "cmp.md"
    rc = asr_main(["report", "--exp", str(exp), "--exp", str(second), "--exp", str(other), "--out", str(out)])
    assert rc == 0
    text = out.read_text()
    runs = _table_after(text, "## Runs")
    assert [r[-1] for r in runs] == ["A", "A", "B"]
    pairs = _table_after(text, "## Matched pairs between runs")
    assert {(r[1], r[2]) for r in pairs} == {(exp.name, "seed2")}
    assert len(pairs) == len(RATES)
    spread = _table_after(text, "## Spread over runs sharing a test set")
    assert all(r[0] == "A" and r[2] == "2" for r in spread) and len(spread) == len(RATES)
    direct = write_comparison([exp, second], tmp_path / "c2.md", n_boot=50)[0].read_text()
    assert "| `dnn` |" in direct


def test_relative_gains():
    err, acc = relative_gains(20.0, 25.0)
    assert err == pytest.approx(20.0)
    assert acc == pytest.approx(100 * (80 - 75) / 75)


def test_cli_errors(tmp_path, capsys):
    assert asr_main(["report", "--exp", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_corpus_identity_covers_the_audio_not_just_the_plan(tmp_path):
    """Two corpora with the same speaker plan (SPEAKERS.TSV) but one audio sample apart get
    different identities (seen: one speaker's audio differed between two syntheses on a fresh
    machine while the plan was equal); the same files give the same identity."""
    from asr.report.provenance import corpus_identity

    digests = []
    for k, last in enumerate((b"\x01", b"\x02", b"\x01")):
        c = tmp_path / f"c{k}"
        (c / "DOC").mkdir(parents=True)
        (c / "DOC" / "SPEAKERS.TSV").write_text("spk_id\tengine\nFAB0\tespeak\n")
        (c / "TRAIN" / "DR1" / "FAB0").mkdir(parents=True)
        (c / "TRAIN" / "DR1" / "FAB0" / "SA1.WAV").write_bytes(b"NIST_1A" + b"\0" * 100 + last)
        (c / "TRAIN" / "DR1" / "FAB0" / "SA1.PHN").write_text("0 10 h#\n")
        digest, what, _ = corpus_identity(tmp_path / "exp", c)
        assert "3 audio and label files" in what
        digests.append(digest)
    assert digests[0] != digests[1] and digests[0] == digests[2]
