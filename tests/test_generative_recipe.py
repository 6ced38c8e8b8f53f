"""End-to-end smoke test of recipes/digits/run.sh (minutes: marked slow)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_digits_recipe_produces_figures_and_summary(tmp_path):
    out = tmp_path / "digits"
    r = subprocess.run(["bash", str(ROOT / "recipes/digits/run.sh"), "--stage", "1", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    assert "cGAN class accuracy" in summary and "AIS held-out log-likelihood" in summary
    for name in ("rbm_filters", "rbm_reconstructions", "dbn_samples", "gan_samples", "cgan_samples",
                 "cgan_arithmetic", "cgan_interpolation", "dcgan_samples", "gan_curve"):
        assert (out / "figures" / f"{name}.png").is_file(), name
    import json
    cg = json.loads((out / "metrics" / "cgan.json").read_text())
    assert cg["class_accuracy"] >= 0.8
    rbm = json.loads((out / "metrics" / "rbm.json").read_text())
    assert rbm["ais_ll_after"] > rbm["ais_ll_before"]
    assert "skipped" in r.stdout  # no --speech given
