"""Figures of the comparison report (matplotlib, Agg backend, PNG written atomically):
per-phone error rates with reference counts, phone confusion matrices, per-condition PER.

Per-phone errors and confusions come from ``asr.report.alignment`` — the alignment of the
report's own PER (sclite costs) — so a row's substitutions and deletions are those counted
in the PER.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from asr.jobs.atomic import atomic_path
from asr.report.alignment import confusion_counts

if TYPE_CHECKING:
    from asr.report.conditions import ConditionRow
    from asr.report.systems import System


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, tight_bbox: bool = True) -> Path:
    """``fig`` as PNG at ``path`` (temporary name + rename). ``tight_bbox`` crops to the drawn
    artists (single-panel figures with long labels); multi-panel figures lay themselves out
    with ``tight_layout`` instead (doing both costs a second layout pass)."""
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight" if tight_bbox else None)
    return path


def per_phone_error_rates(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From ``confusion_counts``' matrix ``(P, P + 1)``: per reference phone the occurrences
    ``(P,)`` and the error rate (substitutions + deletions) / occurrences ``(P,)``."""
    n = conf.sum(axis=1)
    correct = np.diag(conf[:, :-1])
    return n, np.where(n > 0, (n - correct) / np.maximum(n, 1), np.nan)


def plot_per_phone_errors(systems: list["System"], confs: list[np.ndarray], phones: list[str],
                          out: Path) -> Path | None:
    """Grouped bars of per-phone test error rates for ``systems`` (their ``confs`` in the same
    order), phones ordered by the first system's error, each labelled with its reference count."""
    if not systems:
        return None
    plt = _plt()
    n, first = per_phone_error_rates(confs[0])
    order = [k for k in np.argsort(-np.nan_to_num(first, nan=-1.0)) if n[k] > 0]
    x = np.arange(len(order))
    w = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(9, len(order) * 0.3), 4.2))
    for i, (s, c) in enumerate(zip(systems, confs)):
        _, rate = per_phone_error_rates(c)
        ax.bar(x + i * w, 100 * rate[order], width=w, label=s.name)
    ax.set_xticks(x + 0.4 - w / 2)
    ax.set_xticklabels([f"{phones[k]} ({n[k]})" for k in order], rotation=90, fontsize=7)
    ax.set_xlabel("reference phone (occurrences in the test reference)")
    ax.set_ylabel("error rate (%)")
    ax.set_title("Per-phone test error: (substitutions + deletions of the reference phone) / occurrences")
    ax.legend(fontsize=8)
    path = save_figure(fig, out)
    plt.close(fig)
    return path


def row_normalised(conf: np.ndarray) -> np.ndarray:
    """``conf (P, P + 1)`` divided by each reference phone's occurrences (rows of phones that
    never occur stay 0); the last column is the deletion rate."""
    n = conf.sum(axis=1, keepdims=True)
    return conf / np.maximum(n, 1)


def plot_confusions(names: tuple[str, str], confs: tuple[np.ndarray, np.ndarray], phones: list[str],
                    out: Path) -> Path:
    """Three panels: the row-normalised P x P confusion matrices (plus a deletion column) of two
    systems (square-root colour scale, so that the small off-diagonal rates show) and their
    difference (second minus first). Insertions are not in the matrices (they belong to no
    reference phone)."""
    plt = _plt()
    from matplotlib.colors import PowerNorm, TwoSlopeNorm

    a, b = row_normalised(confs[0]), row_normalised(confs[1])
    labels = list(phones) + ["(del)"]
    P = len(phones)
    lim = max(0.05, float(np.abs(b - a).max()))
    fig, axes = plt.subplots(1, 3, figsize=(21, 7.6), sharey=True)
    fig.subplots_adjust(left=0.04, right=0.965, bottom=0.1, top=0.94, wspace=0.14)
    for k, (ax, m, title, cmap, norm) in enumerate((
            (axes[0], a, f"{names[0]}: P(hyp | ref), sqrt colour scale", "Greys", PowerNorm(0.5, 0.0, 1.0)),
            (axes[1], b, f"{names[1]}: P(hyp | ref), sqrt colour scale", "Greys", PowerNorm(0.5, 0.0, 1.0)),
            (axes[2], b - a, f"{names[1]} - {names[0]} (blue: {names[1]} more often)", "RdBu",
             TwoSlopeNorm(0.0, -lim, lim)))):
        im = ax.imshow(m, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(P + 1))
        ax.set_xticklabels(labels, rotation=90, fontsize=7)
        if k == 0:
            ax.set_yticks(range(P))
            ax.set_yticklabels(phones, fontsize=7)
            ax.set_ylabel("reference phone")
        ax.set_xlabel("hypothesis phone")
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.04, pad=0.01)
    path = save_figure(fig, out, tight_bbox=False)
    plt.close(fig)
    return path


def confusions_of(systems: list["System"], phones: list[str]) -> list[np.ndarray]:
    """``confusion_counts`` of each system's test set."""
    return [confusion_counts(s.test.ref, s.test.hyp, phones)[0] for s in systems]


def plot_conditions(rows: list["ConditionRow"], systems: list[str], out: Path, set_name: str) -> Path | None:
    """PER per condition level (one bar per system, 95 % utterance-bootstrap interval as the
    error bar), grouped by factor; the number of speakers is in each label."""
    if not rows or not systems:
        return None
    plt = _plt()
    x = np.arange(len(rows))
    w = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(9, 0.42 * len(rows) + 2), 4.6))
    for i, s in enumerate(systems):
        per = np.array([r.results[s].wer for r in rows])
        lo = np.array([r.ci[s][0] for r in rows])
        hi = np.array([r.ci[s][1] for r in rows])
        ax.bar(x + i * w, per, width=w, label=s, yerr=np.vstack([per - lo, hi - per]), capsize=2,
               error_kw={"elinewidth": 0.8})
    ax.set_xticks(x + 0.4 - w / 2)
    ax.set_xticklabels([f"{r.factor}: {r.level} ({r.speakers} spk)" for r in rows], rotation=90, fontsize=7)
    prev = None
    for k, r in enumerate(rows):
        if prev is not None and r.factor != prev:
            ax.axvline(k - 0.1, color="grey", lw=0.6)
        prev = r.factor
    ax.set_ylabel("PER (%)")
    ax.set_title(f"PER per speaker condition, {set_name} set (bars: 95 % bootstrap interval)")
    ax.legend(fontsize=8)
    path = save_figure(fig, out)
    plt.close(fig)
    return path
