"""Smoke test of the issue-8 demo (`python -m asr.generative.demos.pgm`)."""
from __future__ import annotations

import json

import pytest

from asr.generative.demos.pgm import main


@pytest.mark.slow
def test_pgm_demo_writes_pictures_and_summary(tmp_path):
    assert main(["--out", str(tmp_path), "--seed", "1", "--epochs", "3", "--mrf-images", "4"]) == 0
    for name in ("bm_vs_rbm_autocorr.png", "mrf_denoising.png", "asia.png", "asia_evidence.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    text = (tmp_path / "pgm_summary.md").read_text()
    assert "Boltzmann machine" in text and "| 20% |" in text and "smoke=yes" in text
    fig = json.loads((tmp_path / "pgm_summary.json").read_text())
    for r in fig["mrf"]["results"]:
        assert r["icm"] < r["noisy"] and r["mean_field"] < r["noisy"]
    assert not list(tmp_path.glob("*.tmp"))


def test_pgm_demo_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--epochs", "0"])
