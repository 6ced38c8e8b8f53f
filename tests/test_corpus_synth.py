"""TTS corpus generator: layout, SPHERE header, boundaries, determinism, speakers, reader."""
from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.corpus.synth import SynthConfig, generate_corpus
from asr.corpus.synth import degrade
from asr.corpus.synth.degrade import Condition
from asr.corpus.synth.phonemap import pad_edges, rescale, to_timit
from asr.corpus.synth.text import SA_SENTENCES, build_lexicon, load_lexicon, load_sentences, split_words
from asr.corpus.synth.voices import Speaker, Voice, load_speaker_list, make_speakers
from asr.corpus.synth.writer import synthesize_utterance
from asr.lang.phones import load_phone_map

CLEAN = Condition(noise=None, snr_db=math.inf, rt60_s=None, telephone=False, level_dbfs=-20.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("synth") / "corpus"
    generate_corpus(out, SynthConfig(size="tiny", seed=3), nj=1, progress=False)
    return out


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_files(tiny: Path) -> None:
    spk_dirs = sorted(tiny.glob("*/DR*/*"))
    assert len(spk_dirs) == 6 + 2 + 2
    assert {p.parts[-3] for p in spk_dirs} <= {"TRAIN", "TEST"}
    pm = load_phone_map()
    for d in spk_dirs:
        assert re.fullmatch(r"[MF][A-Z]{3}[0-9]", d.name), d.name
        assert re.fullmatch(r"DR[1-8]", d.parent.name)
        stems = sorted({p.stem for p in d.iterdir()})
        assert len(stems) == 10 and {"SA1", "SA2"} <= set(stems)
        assert sum(s.startswith("SI") for s in stems) == 3 and sum(s.startswith("SX") for s in stems) == 5
        for stem in stems:
            wav = d / f"{stem}.WAV"
            head = wav.read_bytes()[:1024]
            assert head.startswith(b"NIST_1A\n   1024\n")
            assert b"sample_rate -i 16000" in head and b"sample_n_bytes -i 2" in head
            info = sf.info(str(wav))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            n = info.frames
            txt = (d / f"{stem}.TXT").read_text().split(maxsplit=2)
            assert txt[:2] == ["0", str(n)]
            sentence = txt[2].strip()
            phn = [ln.split() for ln in (d / f"{stem}.PHN").read_text().splitlines()]
            starts = [int(s) for s, _, _ in phn]
            ends = [int(e) for _, e, _ in phn]
            assert starts[0] == 0 and ends[-1] == n
            assert all(e > s for s, e in zip(starts, ends))
            assert starts[1:] == ends[:-1]  # contiguous, monotone
            assert phn[0][2] == "h#" and phn[-1][2] == "h#"
            assert all(lab in pm.to48 for _, _, lab in phn)
            wrd = [ln.split() for ln in (d / f"{stem}.WRD").read_text().splitlines()]
            assert [w for _, _, w in wrd] == split_words(sentence)
            ws = [(int(s), int(e)) for s, e, _ in wrd]
            assert all(0 <= s <= e <= n for s, e in ws)
            assert all(ws[i][1] <= ws[i + 1][0] for i in range(len(ws) - 1))
            if stem == "SA1":
                assert sentence == SA_SENTENCES[0]


def test_deterministic(tiny: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_corpus(again, SynthConfig(size="tiny", seed=3), nj=2, progress=False)
    assert _digest(again) == _digest(tiny)
    other = make_speakers(SynthConfig(size="tiny", seed=4))
    assert [s.spk_id for s in other["train"]] != [s.spk_id for s in make_speakers(
        SynthConfig(size="tiny", seed=3))["train"]]


def test_speakers_disjoint_and_heldout_voice() -> None:
    sp = make_speakers(SynthConfig(size="default", seed=0))
    dev_list, test_list = set(load_speaker_list("dev_spk.list")), set(load_speaker_list("core_test_spk.list"))
    train = {s.spk_id.lower() for s in sp["train"]}
    assert len(train) == 130 and not train & (dev_list | test_list)
    assert {s.spk_id.lower() for s in sp["dev"]} <= dev_list and len(sp["dev"]) == 20
    assert {s.spk_id.lower() for s in sp["test"]} == test_list
    train_cfgs = {s.config_key() for s in sp["train"]}
    assert not train_cfgs & {s.config_key() for s in sp["dev"] + sp["test"]}
    train_voices = {s.voice for s in sp["train"] + sp["dev"]}
    test_only = {s.voice for s in sp["test"]} - train_voices
    assert test_only and all(v.use == "test" for v in test_only)
    assert all(s.gender == s.spk_id[0].lower() == s.voice.gender for s in sp["test"])


def test_reader_on_generated(tiny: Path, tmp_path: Path) -> None:
    from asr.cli.main import main
    from asr.datadir import validate_data_dir

    assert main(["data", "timit", str(tiny), str(tmp_path / "data")]) == 0
    sizes = {}
    for split in ("train", "dev", "test"):
        dd = validate_data_dir(tmp_path / "data" / split)
        sizes[split] = (len(dd.spk2utt), len(dd.utts))
        assert not any("_sa" in u for u in dd.utts)
    assert sizes == {"train": (6, 48), "dev": (2, 16), "test": (2, 16)}


def _hf_ratio(x: np.ndarray, s: int, e: int) -> float:
    """Fraction of a segment's middle-half energy above 3 kHz."""
    q = (e - s) // 4
    seg = x[s + q: e - q]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)))) ** 2
    f = np.fft.rfftfreq(len(seg), 1 / 16000)
    return float(spec[f > 3000].sum() / max(spec.sum(), 1e-12))


@pytest.mark.parametrize("engine,voice", [("espeak", "en-us+m3"), ("flite", "kal16"),
                                          ("festival", "ked_diphone")])
def test_boundaries_are_real(engine: str, voice: str) -> None:
    """Fricatives carry high-frequency energy and vowels do not, inside the engine's own
    boundaries; shifting the boundaries by 60 ms destroys the contrast."""
    spk = Speaker("MABC0", "m", "TRAIN", 1, Voice(engine, voice, "m", "train"),
                  170.0 if engine == "espeak" else 1.0, 50.0 if engine == "espeak" else None,
                  50.0, 1.0, CLEAN)
    sent = "She sells sea shells, the sixth sheep sat on a soft sofa, so she says."
    y, phones, words = synthesize_utterance(spk, sent, 0, load_lexicon() | build_lexicon([sent]))
    x = y.numpy().astype(np.float64)
    fric = {"s", "sh", "z", "f"}
    vow = {"iy", "ih", "eh", "ae", "aa", "ah", "ao", "ow", "uw", "ey", "ay", "ax"}

    def ratios(shift: int) -> tuple[float, float]:
        r_f = [_hf_ratio(x, s + shift, e + shift) for s, e, lab in phones
               if lab in fric and e - s > 400 and e + shift <= len(x)]
        r_v = [_hf_ratio(x, s + shift, e + shift) for s, e, lab in phones
               if lab in vow and e - s > 400 and e + shift <= len(x)]
        return float(np.median(r_f)), float(np.median(r_v))

    f0, v0 = ratios(0)
    assert f0 > 0.5 and v0 < 0.1
    f1, v1 = ratios(960)
    assert f1 - v1 < 0.5 * (f0 - v0)
    assert [w for _, _, w in words] == split_words(sent)


def test_to_timit_mapping() -> None:
    segs = [("_", 0, 100, -1), ("S", 100, 200, 0), ("A@", 200, 300, 0), (";", 300, 300, 1),
            ("_:", 300, 350, -1), ("_", 350, 420, -1), ("t#", 420, 500, 1), ("_:", 500, 600, -1)]
    out = to_timit(segs, "espeak", 600)
    assert [(lab, s, e) for lab, s, e, _ in out] == [
        ("h#", 0, 100), ("sh", 100, 200), ("aa", 200, 250), ("r", 250, 300), ("pau", 300, 420),
        ("dx", 420, 500), ("h#", 500, 600)]
    with pytest.raises(ValueError, match="'Q9'"):
        to_timit([("Q9", 0, 10, 0)], "espeak", 10)
    r = rescale(out, 600, 300)
    assert r[0][1] == 0 and r[-1][2] == 300 and all(a[2] == b[1] for a, b in zip(r, r[1:]))
    p = pad_edges([("s", 0, 10, 0)], 5, 7)
    assert [(lab, s, e) for lab, s, e, _ in p] == [("h#", 0, 5), ("s", 5, 15), ("h#", 15, 22)]


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "babble"])
def test_noise_snr(kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.arange(32000) / 16000
    x = torch.sin(2 * math.pi * 220 * t) * 0.3
    y = degrade.add_noise(x, kind, 10.0, 16000, g)
    snr = 10 * math.log10(x.pow(2).mean() / (y - x).pow(2).mean())
    assert abs(snr - 10.0) < 0.1


def test_reverb_rt60_and_telephone() -> None:
    g = torch.Generator().manual_seed(1)
    h = degrade.synthetic_rir(0.5, 16000, g)
    edc = torch.flip(torch.cumsum(torch.flip(h ** 2, [0]), 0), [0])  # Schroeder integral
    edc_db = 10 * torch.log10(edc / edc[0])
    t5, t25 = (int((edc_db > -5).sum()), int((edc_db > -25).sum()))
    rt60 = 3 * (t25 - t5) / 16000  # T20 extrapolated to 60 dB
    assert 0.35 < rt60 < 0.65
    x = torch.randn(16384, generator=g)
    y = degrade.telephone(x, 16000)
    spec = torch.fft.rfft(y).abs() ** 2
    f = torch.fft.rfftfreq(16384, 1 / 16000)
    inband = spec[(f > 500) & (f < 3000)].mean()
    assert spec[f > 4500].mean() < 0.01 * inband and spec[f < 100].mean() < 0.05 * inband


def test_shipped_text_and_lexicon() -> None:
    sents = load_sentences()
    lex = load_lexicon()
    pm = load_phone_map()
    assert len(sents) >= 2000 and len(set(sents)) == len(sents)
    words = {w for s in list(sents) + list(SA_SENTENCES) for w in split_words(s)}
    assert words <= set(lex)
    assert all(5 <= len(split_words(s)) <= 14 for s in sents)
    used = {p for w in words for p in lex[w]}
    assert used <= set(pm.phones48)
    # every 39-set phone but sil and dx (CMUdict has no flap; engines produce it)
    assert {pm.fold48to39[p] for p in used} == set(pm.phones39) - {"sil", "dx"}


_RENDER = """
import hashlib, math, torch
from asr.corpus.synth import degrade
from asr.corpus.synth.degrade import Condition
t = torch.arange(48000, dtype=torch.float64) / 16000
x = (0.3 * torch.sin(2 * math.pi * 220 * t) * torch.sin(2 * math.pi * 3 * t) + 0.05 * torch.sin(2 * math.pi * 1900 * t))
out = []
for k, cond in enumerate([Condition("babble", 12.0, 0.45, True, -22.0), Condition("pink", 8.0, None, True, -18.0),
                          Condition("white", 20.0, 0.3, False, -26.0), Condition("brown", 15.0, None, False, -20.0)]):
    y = degrade.to_int16(degrade.apply_condition(x.float(), cond, 16000, torch.Generator().manual_seed(k)))
    out.append(y.numpy().tobytes())
print(hashlib.sha256(b"".join(out)).hexdigest())
"""


def test_channel_rendering_is_the_same_on_every_cpu_code_path() -> None:
    """The generated corpus must not depend on the machine: FFTs (MKL) and vectorised math give
    other last bits on other instruction sets, and one mu-law step or int16 rounding turns that
    into other samples (float32 rendering differed in 1792 of 47365 samples of a telephone
    speaker between MKL's AVX-512 and AVX2 paths). Rendered under MKL's and ATen's code paths
    for several instruction sets and thread counts, the int16 audio must be identical."""
    import os
    import subprocess
    import sys

    variants = [{}, {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
                {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "OMP_NUM_THREADS": "2"}]
    digests = []
    for extra in variants:
        env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
        r = subprocess.run([sys.executable, "-c", _RENDER], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        digests.append(r.stdout.strip())
    assert len(set(digests)) == 1, dict(zip(map(str, variants), digests))
