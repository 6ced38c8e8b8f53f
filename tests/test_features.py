"""Features: MFCC / fbank against an independent NumPy implementation of Kaldi's algorithm
(tests/kaldi_feats_ref.py), ark/scp round-trip through kaldi-io and kaldiio, CMVN stats, deltas
against a literal port of Kaldi's loop, splice edges, bad input (non-finite features included)."""
from __future__ import annotations

import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as tk

from asr.features import (
    add_deltas, apply_cmvn, cmvn_stats, compute_features, load_cmvn, load_feats, make_feats,
    splice,
)
from asr.features.io import kaldi_io
from asr.features.compute import dither_seed

SR = 16000


def _wave(seed: int, seconds: float) -> np.ndarray:
    """A deterministic int16 test signal: two tones plus noise."""
    g = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    x = 3000 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 1000 * np.sin(2 * np.pi * 1500 * t)
    x += g.normal(0, 300, t.shape)
    return np.clip(x, -32768, 32767).astype(np.int16)


def _make_data_dir(root: Path, spec: dict[str, list[tuple[str, float, str]]]) -> dict[str, np.ndarray]:
    """spec: speaker -> [(sentence, seconds, 'WAV'|'NIST')]; writes audio, wav.scp, utt2spk."""
    root.mkdir(parents=True, exist_ok=True)
    audio: dict[str, np.ndarray] = {}
    wav_lines, spk_lines = [], []
    seed = 0
    for spk, utts in sorted(spec.items()):
        for sent, secs, fmt in utts:
            utt = f"{spk}_{sent}"
            seed += 1
            x = _wave(seed, secs)
            path = root / "audio" / f"{utt}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(str(path), x, SR, format=fmt, subtype="PCM_16")
            audio[utt] = x
            wav_lines.append(f"{utt} {path}\n")
            spk_lines.append(f"{utt} {spk}\n")
    (root / "wav.scp").write_text("".join(sorted(wav_lines)))
    (root / "utt2spk").write_text("".join(sorted(spk_lines)))
    return audio


SPEC = {
    "fabc0": [("sa1", 0.5, "WAV"), ("si12", 0.73, "NIST")],
    "mdef1": [("sx3", 0.41, "NIST")],
    "mghi2": [("si7", 0.6, "WAV"), ("sx9", 0.33, "WAV")],
}


def _wave_with_silence(seed: int, seconds: float) -> np.ndarray:
    """The test signal with a stretch of digital silence (exercises the energy and log floors)."""
    x = _wave(seed, seconds)
    x[2000:3000] = 0
    return x


def test_compute_features_match_independent_kaldi_reference():
    """MFCC and fbank against a NumPy implementation of Kaldi's algorithm written from its
    documentation (tests/kaldi_feats_ref.py: Povey window, pre-emphasis 0.97, DC removal, snip
    edges, mel banks, DCT, lifter 22, raw energy with floor 1), not against torchaudio itself."""
    import kaldi_feats_ref as ref

    x = _wave_with_silence(3, 0.52)
    xt = torch.from_numpy(x.astype(np.float32))
    mf = compute_features(xt, SR, "mfcc").double().numpy()
    assert mf.shape == (1 + (x.size - 400) // 160, 13)
    want = ref.mfcc(x.astype(np.float64), SR, num_bins=23, num_ceps=13, use_energy=False)
    np.testing.assert_allclose(mf, want, rtol=1e-5, atol=2e-3)
    fb = compute_features(xt, SR, "fbank").double().numpy()
    assert fb.shape == (mf.shape[0], 40)
    np.testing.assert_allclose(fb, ref.fbank(x.astype(np.float64), SR, num_bins=40, use_energy=False),
                               rtol=1e-5, atol=2e-4)
    # C0 is the zeroth cepstrum (Kaldi TIMIT --use-energy=false), not the log frame energy
    assert np.abs(mf[:, 0] - ref.mfcc(x.astype(np.float64), SR, use_energy=True)[:, 0]).max() > 1.0
    # Integer input is read on the same scale.
    torch.testing.assert_close(compute_features(torch.from_numpy(x), SR, "mfcc"), compute_features(xt, SR, "mfcc"))


@pytest.mark.parametrize("kind,use_energy", [("mfcc", True), ("fbank", True)])
def test_kaldi_options_other_energy_setting_match_reference(kind, use_energy):
    """The energy setting the toolkit does not use, through the same option set (FEAT_OPTS), so the
    reference covers both branches of use_energy for both feature types."""
    import kaldi_feats_ref as ref

    from asr.features.compute import FEAT_OPTS

    x = _wave_with_silence(5, 0.41)
    opts = {**FEAT_OPTS[kind], "use_energy": use_energy}
    got = (tk.mfcc if kind == "mfcc" else tk.fbank)(torch.from_numpy(x.astype(np.float32))[None],
                                                     sample_frequency=SR, **opts).double().numpy()
    fn = ref.mfcc if kind == "mfcc" else ref.fbank
    np.testing.assert_allclose(got, fn(x.astype(np.float64), SR, num_bins=opts["num_mel_bins"], use_energy=use_energy),
                               rtol=1e-5, atol=2e-3)


def test_non_finite_features_are_refused_naming_the_utterance(tmp_path):
    """A NaN in a stored feature matrix is an error naming the utterance when it is read (it
    would otherwise reach training and poison it)."""
    d = tmp_path / "train"
    _make_data_dir(d, SPEC)
    make_feats(d, "fbank", nj=1, progress=False)
    bad_utt = "mdef1_sx3"
    mats = {u: np.array(m) for u, m in kaldi_io.read_mat_scp(str(d / "feats.scp"))}
    mats[bad_utt][3, 5] = np.nan
    kaldiio.save_ark(str(d / "data" / "edited.ark"), mats, scp=str(d / "feats.scp"))
    with pytest.raises(ValueError, match=rf"{bad_utt}.*non-finite.*row\(s\) \[3\]"):
        load_feats(d)
    assert set(load_feats(d, utts=["fabc0_sa1", "mghi2_si7"])) == {"fabc0_sa1", "mghi2_si7"}


def test_dither_is_seeded_and_removes_digital_silence():
    x = torch.from_numpy(_wave(3, 0.52).astype(np.float32))
    x[2000:6000] = 0.0                                   # digital silence
    plain = compute_features(x, SR, "mfcc")
    a, b = compute_features(x, SR, "mfcc", seed=7), compute_features(x, SR, "mfcc", seed=7)
    torch.testing.assert_close(a, b, rtol=0, atol=0)     # same seed: bit for bit
    assert not torch.equal(a, compute_features(x, SR, "mfcc", seed=8))
    sil = slice(14, 30)                                   # frames inside the silent stretch
    assert plain[sil].std(0).max() < 1e-4                 # without dither: constant log(eps) frames
    assert bool(torch.isfinite(a).all()) and float(a[sil].std(0).min()) > 0.05
    # away from the silence, dither of 1 sample unit barely changes the features
    assert float((a[40:] - plain[40:]).abs().mean()) < 0.05 * float(plain[40:].abs().mean())
    assert dither_seed("fabc0_sa1") == dither_seed("fabc0_sa1") != dither_seed("fabc0_sa2")


def test_compute_features_rejects_short_and_bad_type():
    with pytest.raises(ValueError, match="shorter than one"):
        compute_features(torch.zeros(399), SR, "mfcc")
    with pytest.raises(ValueError, match="unknown feature type"):
        compute_features(torch.zeros(1000), SR, "plp")


@pytest.mark.parametrize("feat_type", ["mfcc", "fbank"])
def test_make_feats_round_trip_kaldi_io_and_kaldiio(tmp_path, feat_type):
    d = tmp_path / "train"
    audio = _make_data_dir(d, SPEC)
    meta = make_feats(d, feat_type, nj=1, progress=False)
    dim = 13 if feat_type == "mfcc" else 40
    assert json.loads((d / "feats.json").read_text()) == meta
    assert meta["type"] == feat_type and meta["dim"] == dim and meta["frame_shift_ms"] == 10
    assert meta["num_utts"] == 5 and meta["num_speakers"] == 3
    assert not list(d.rglob("*.tmp"))
    expected = {u: compute_features(torch.from_numpy(a.astype(np.float32)), SR, feat_type, seed=dither_seed(u))
                for u, a in audio.items()}
    # feats.scp is sorted and both readers agree with direct computation.
    keys = [ln.split()[0] for ln in (d / "feats.scp").read_text().splitlines()]
    assert keys == sorted(audio)
    via_kaldi_io = {k: m for k, m in kaldi_io.read_mat_scp(str(d / "feats.scp"))}
    via_kaldiio = kaldiio.load_scp(str(d / "feats.scp"))
    assert set(via_kaldi_io) == set(via_kaldiio) == set(audio)
    for u, ref in expected.items():
        np.testing.assert_array_equal(via_kaldi_io[u], ref.numpy())
        np.testing.assert_array_equal(via_kaldiio[u], ref.numpy())
    # CMVN stats: Kaldi layout, equal to direct sums over each speaker's utterances.
    cm = kaldiio.load_scp(str(d / "cmvn.scp"))
    assert sorted(cm) == sorted(SPEC)
    for spk in SPEC:
        x = torch.cat([expected[u] for u in sorted(audio) if u.startswith(spk)]).double()
        st = torch.from_numpy(np.array(cm[spk]))
        assert st.shape == (2, dim + 1) and st.dtype == torch.float64
        torch.testing.assert_close(st[0, :dim], x.sum(0))
        torch.testing.assert_close(st[1, :dim], (x * x).sum(0))
        assert st[0, dim] == x.shape[0] and st[1, dim] == 0
        torch.testing.assert_close(load_cmvn(d)[spk], st)


def test_make_feats_parallel_jobs_identical(tmp_path):
    d1, d2 = tmp_path / "a", tmp_path / "b"
    _make_data_dir(d1, SPEC)
    _make_data_dir(d2, SPEC)
    make_feats(d1, "mfcc", nj=1, progress=False)
    make_feats(d2, "mfcc", nj=2, progress=False)
    f1, f2 = load_feats(d1, cmvn=False), load_feats(d2, cmvn=False)
    assert list(f1) == list(f2)
    for u in f1:
        assert torch.equal(f1[u], f2[u])
    assert len(list((d2 / "data").glob("raw_mfcc.*.ark"))) == 3  # one split per speaker here
    # A rerun with fewer splits removes the stale arks.
    make_feats(d2, "mfcc", nj=1, progress=False)
    assert len(list((d2 / "data").glob("raw_mfcc.*.ark"))) == 3
    assert load_feats(d2, cmvn=False).keys() == f1.keys()


def test_load_feats_cmvn_per_speaker(tmp_path):
    d = tmp_path / "dev"
    _make_data_dir(d, SPEC)
    make_feats(d, "fbank", nj=1, progress=False)
    raw = load_feats(d, cmvn=False)
    norm = load_feats(d, cmvn=True)
    normv = load_feats(d, cmvn=True, norm_vars=True)
    for spk in SPEC:
        utts = [u for u in norm if u.startswith(spk)]
        x = torch.cat([norm[u] for u in utts]).double()
        torch.testing.assert_close(x.mean(0), torch.zeros(40, dtype=torch.float64), atol=1e-4, rtol=0)
        xv = torch.cat([normv[u] for u in utts]).double()
        torch.testing.assert_close(xv.var(0, unbiased=False), torch.ones(40, dtype=torch.float64),
                                   atol=1e-3, rtol=0)
        r = torch.cat([raw[u] for u in utts]).double()
        torch.testing.assert_close(x, r - r.mean(0), atol=1e-4, rtol=0)
    sub = load_feats(d, utts=["mghi2_sx9", "fabc0_sa1"])
    assert list(sub) == ["mghi2_sx9", "fabc0_sa1"]
    assert sub["fabc0_sa1"].dtype == torch.float32
    with pytest.raises(ValueError, match="nosuch_utt"):
        load_feats(d, utts=["nosuch_utt"])


def test_cmvn_stats_and_apply():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 4, generator=g), torch.randn(5, 4, generator=g) + 3
    s = cmvn_stats(a) + cmvn_stats(b)
    both = torch.cat([a, b]).double()
    assert s[0, 4] == 12 and s[1, 4] == 0
    torch.testing.assert_close(s[1, :4], (both ** 2).sum(0))
    y = apply_cmvn(both, s, norm_vars=True).double()
    torch.testing.assert_close(y.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(y.std(0, unbiased=False), torch.ones(4, dtype=torch.float64), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="do not fit"):
        apply_cmvn(a, torch.zeros(2, 3, dtype=torch.float64))


def _kaldi_add_deltas_loop(x: np.ndarray, order: int, window: int) -> np.ndarray:
    """Literal port of Kaldi's DeltaFeatures (feat/feature-functions.cc), frame by frame."""
    scales = [np.array([1.0])]
    for i in range(1, order + 1):
        prev = scales[i - 1]
        prev_off = (len(prev) - 1) // 2
        cur_off = prev_off + window
        cur = np.zeros(len(prev) + 2 * window)
        norm = 0.0
        for j in range(-window, window + 1):
            norm += j * j
            for k in range(-prev_off, prev_off + 1):
                cur[j + k + cur_off] += j * prev[k + prev_off]
        scales.append(cur / norm)
    T, D = x.shape
    out = np.zeros((T, D * (order + 1)))
    for t in range(T):
        for i in range(order + 1):
            m = (len(scales[i]) - 1) // 2
            for j in range(-m, m + 1):
                f = min(max(t + j, 0), T - 1)
                out[t, i * D:(i + 1) * D] += scales[i][j + m] * x[f]
    return out


@pytest.mark.parametrize("T,order,window", [(1, 2, 2), (3, 2, 2), (12, 2, 2), (9, 1, 3), (6, 3, 1)])
def test_add_deltas_matches_kaldi_loop(T, order, window):
    x = torch.randn(T, 5, generator=torch.Generator().manual_seed(T), dtype=torch.float64)
    got = add_deltas(x, order=order, window=window)
    ref = _kaldi_add_deltas_loop(x.numpy(), order, window)
    assert got.shape == (T, 5 * (order + 1))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_add_deltas_first_order_formula_and_constant_input():
    x = torch.arange(20, dtype=torch.float64).reshape(10, 2) ** 2
    d = add_deltas(x, order=1, window=2)[:, 2:]
    t = 5  # interior frame: sum_n n (x[t+n] - x[t-n]) / (2 * sum_n n^2)
    ref = (1 * (x[t + 1] - x[t - 1]) + 2 * (x[t + 2] - x[t - 2])) / 10.0
    torch.testing.assert_close(d[t], ref)
    c = add_deltas(torch.full((6, 3), 2.5), order=2)
    torch.testing.assert_close(c[:, 3:], torch.zeros(6, 6))
    assert add_deltas(torch.zeros(4, 13)).dtype == torch.float32


def test_splice_edges_and_order():
    x = torch.arange(4, dtype=torch.float32)[:, None] * torch.tensor([[1.0, 10.0]])  # (4, 2)
    y = splice(x, 2, 1)
    assert y.shape == (4, 8)
    # row t = frames [t-2, t-1, t, t+1], clamped to [0, 3]
    frames = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 3]])
    for t in range(4):
        torch.testing.assert_close(y[t], x[frames[t]].reshape(-1))
    torch.testing.assert_close(splice(x, 0, 0), x)
    with pytest.raises(ValueError):
        splice(x, -1, 1)


def test_make_feats_bad_input_names_utterance(tmp_path):
    d = tmp_path / "bad_rate"
    _make_data_dir(d, {"fa0": [("s1", 0.3, "WAV")]})
    sf.write(str(d / "audio" / "fa0_s1.wav"), _wave(1, 0.3), 8000, format="WAV", subtype="PCM_16")
    with pytest.raises(ValueError, match=r"fa0_s1.*8000"):
        make_feats(d, "mfcc", progress=False)
    assert not (d / "feats.scp").exists() and not list(d.rglob("*.tmp"))
    assert make_feats(d, "mfcc", sample_rate=None, progress=False)["sample_rate"] is None

    d = tmp_path / "empty"
    _make_data_dir(d, {"fa0": [("s1", 0.3, "WAV")], "mb1": [("s2", 0.3, "WAV")]})
    sf.write(str(d / "audio" / "mb1_s2.wav"), np.zeros(0, np.int16), SR, format="WAV", subtype="PCM_16")
    with pytest.raises(ValueError, match="mb1_s2.*no samples"):
        make_feats(d, "mfcc", nj=2, progress=False)
    assert not (d / "feats.scp").exists() and not list(d.rglob("*.tmp"))

    d = tmp_path / "missing"
    _make_data_dir(d, {"fa0": [("s1", 0.3, "WAV")]})
    (d / "audio" / "fa0_s1.wav").write_bytes(b"RIFF\x00\x00")  # truncated
    with pytest.raises(ValueError, match="fa0_s1.*cannot read"):
        make_feats(d, "mfcc", progress=False)
    (d / "audio" / "fa0_s1.wav").unlink()
    with pytest.raises(ValueError, match="fa0_s1.*cannot read"):
        make_feats(d, "mfcc", progress=False)

    d = tmp_path / "short"
    _make_data_dir(d, {"fa0": [("s1", 0.02, "WAV")]})
    with pytest.raises(ValueError, match="fa0_s1.*shorter"):
        make_feats(d, "mfcc", progress=False)


def test_cli_feats(tmp_path, capsys):
    from asr.cli.main import main

    d = tmp_path / "cli"
    _make_data_dir(d, SPEC)
    assert main(["feats", str(d), "--type", "fbank", "--nj", "2"]) == 0
    assert "5 utterances" in capsys.readouterr().out
    assert json.loads((d / "feats.json").read_text())["dim"] == 40
    assert main(["feats", str(tmp_path / "nowhere")]) == 1
    # several data dirs in one call (the recipe's train/dev/test share one process start)
    d2 = tmp_path / "cli2"
    _make_data_dir(d2, SPEC)
    (d / "feats.json").unlink()
    assert main(["feats", str(d), str(d2), "--type", "mfcc"]) == 0
    out = capsys.readouterr().out
    assert f"{d}: 5 utterances" in out and f"{d2}: 5 utterances" in out
    assert json.loads((d / "feats.json").read_text())["type"] == "mfcc"
    assert json.loads((d2 / "feats.json").read_text())["type"] == "mfcc"


def test_console_entry_exit_status_and_output(tmp_path):
    """The console script's fast exit (os._exit after main) keeps the exit status and flushes
    what was printed, on success and on a user error."""
    import subprocess
    import sys

    d = tmp_path / "d"
    _make_data_dir(d, SPEC)
    cmd = [sys.executable, "-c", "from asr.cli.main import run; run()"]
    ok = subprocess.run(cmd + ["feats", str(d)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith("frames of mfcc (dim 13)")
    bad = subprocess.run(cmd + ["feats", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "asr feats: error:" in bad.stderr and "nowhere" in bad.stderr
