"""Figures of the comparison report (matplotlib, Agg backend, PNG written atomically)."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asr.report.systems import System


def _save(fig, path: Path) -> Path:
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def _load_curve(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return data if isinstance(data, list) else data.get("epochs", [])


def plot_training_curves(exp: Path, out: Path) -> Path | None:
    """CV frame accuracy per epoch of the CE systems and the sequence objective per epoch,
    from ``exp/<sys>/log/train_curve.json``. None when no curve exists."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ce = {n: _load_curve(exp / n / "log" / "train_curve.json") for n in ("dnn", "dnn_rand")}
    seq = {n: _load_curve(exp / n / "log" / "train_curve.json") for n in ("dnn_mpe", "dnn_mpfe", "dnn_smbr", "dnn_mmi", "dnn_bmmi")}
    ce = {k: v for k, v in ce.items() if v}
    seq = {k: v for k, v in seq.items() if v}
    if not ce and not seq:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, pts in ce.items():
        xs = [p.get("epoch", i + 1) for i, p in enumerate(pts)]
        ys = [p.get("cv_frame_acc") for p in pts]
        axes[0].plot(xs, ys, marker="o", label=f"{name} (CV)")
        if all("train_frame_acc" in p for p in pts):
            axes[0].plot(xs, [p["train_frame_acc"] for p in pts], ls="--", label=f"{name} (train)")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("frame accuracy")
    axes[0].set_title("Frame cross-entropy training")
    axes[0].legend(fontsize=8)
    for name, pts in seq.items():
        xs = [p.get("epoch", i + 1) for i, p in enumerate(pts)]
        axes[1].plot(xs, [p.get("objective") for p in pts], marker="o", label=name)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("objective per frame")
    axes[1].set_title("Sequence training")
    if seq:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    path = _save(fig, out)
    plt.close(fig)
    return path


def per_phone_error_rates(ref: dict[str, list[str]], hyp: dict[str, list[str]]) -> dict[str, float]:
    """Per reference phone: (substitutions + deletions) / occurrences, from an edit-distance
    alignment of every utterance (kaldialign)."""
    import kaldialign

    count: Counter[str] = Counter()
    err: Counter[str] = Counter()
    for utt, r in ref.items():
        h = hyp.get(utt, [])
        for a, b in kaldialign.align(r, h, "*"):
            if a == "*":
                continue
            count[a] += 1
            if a != b:
                err[a] += 1
    return {p: err[p] / count[p] for p in count}


def plot_per_phone_errors(systems: list["System"], out: Path) -> Path | None:
    """Grouped bars of per-phone test error rates (39 set) for the given systems."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rates = [per_phone_error_rates(s.test.ref, s.test.hyp) for s in systems if s.test is not None]
    if not rates:
        return None
    phones = sorted(rates[0], key=lambda p: -rates[0][p])
    x = np.arange(len(phones))
    w = 0.8 / len(rates)
    fig, ax = plt.subplots(figsize=(max(8, len(phones) * 0.28), 3.6))
    for i, (s, r) in enumerate(zip(systems, rates)):
        ax.bar(x + i * w, [100 * r.get(p, 0.0) for p in phones], width=w, label=s.name)
    ax.set_xticks(x + 0.4 - w / 2)
    ax.set_xticklabels(phones, rotation=90, fontsize=8)
    ax.set_ylabel("error rate (%)")
    ax.set_title("Per-phone test error (substitutions + deletions of the reference phone)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = _save(fig, out)
    plt.close(fig)
    return path
