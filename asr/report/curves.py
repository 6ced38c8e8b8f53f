"""Training curves of the neural systems: frame cross-entropy (newbob) and sequence training.

Reads ``EXP/<sys>/log/train_curve.json``: a list of per-epoch records (or ``{"epochs": [...]}``,
with optional top-level ``max_epochs`` / ``stopped_at_cap``). CE records hold ``epoch, lr,
train_loss, cv_frame_acc, cv_loss, accepted`` (epoch 0 = the model before training), and may
hold ``max_epochs`` / ``stopped_at_cap``; sequence records hold ``epoch, criterion, objective``
(per frame; None at epoch 0), ``cv_frame_acc``, ``cv_loss``.

Units on the figure: losses in nats per frame, accuracies in percent. The sequence objective
is shown on its criterion's own scale: sMBR / MPFE = expected frame accuracy (% of frames);
MPE = expected approximate phone accuracy as a percentage of the reference phones (objective
per frame divided by the training set's reference phones per frame); MMI / bMMI = log
posterior of the reference per frame (nats).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from asr.datadir.table import read_table, read_token_table
from asr.features.compute import num_frames


_RATE = 16000  # utt2dur is in seconds; frames are counted on samples as the features were


@dataclass
class Curve:
    """One system's curve: ``kind`` "ce" or "seq", the records, the epoch cap (None when
    unknown) and whether training stopped at the cap while CV accuracy was still improving."""

    system: str
    kind: str
    records: list[dict]
    max_epochs: int | None = None
    stopped_at_cap: bool = False
    criterion: str | None = None
    rejected: list[int] = field(default_factory=list)


def _find_key(obj: object, key: str) -> object:
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            found = _find_key(v, key)
            if found is not None:
                return found
    return None


def load_curve(sysdir: Path) -> Curve | None:
    """The curve of ``sysdir`` (None without a readable ``log/train_curve.json``)."""
    path = sysdir / "log" / "train_curve.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    top = data if isinstance(data, dict) else {}
    recs = data if isinstance(data, list) else data.get("epochs", [])
    recs = [r for r in recs if isinstance(r, dict) and "epoch" in r]
    if not recs:
        return None
    is_seq = any("criterion" in r or "objective" in r for r in recs)
    c = Curve(sysdir.name, "seq" if is_seq else "ce", sorted(recs, key=lambda r: r["epoch"]))
    if is_seq:
        c.criterion = next((r["criterion"] for r in recs if r.get("criterion")), None)
        return c
    c.rejected = [r["epoch"] for r in c.records if r.get("accepted") is False]
    cap = top.get("max_epochs", next((r["max_epochs"] for r in reversed(c.records) if "max_epochs" in r), None))
    if cap is None and (sysdir / "config.json").is_file():
        try:
            cap = _find_key(json.loads((sysdir / "config.json").read_text()), "max_epochs")
        except json.JSONDecodeError:
            cap = None
    c.max_epochs = int(cap) if isinstance(cap, (int, float)) else None
    explicit = top.get("stopped_at_cap", next((r["stopped_at_cap"] for r in reversed(c.records)
                                               if "stopped_at_cap" in r), None))
    if explicit is not None:
        c.stopped_at_cap = bool(explicit)
    elif c.max_epochs is not None and len(c.records) >= 2:
        last = c.records[-1]
        best_before = max((r["cv_frame_acc"] for r in c.records[:-1] if r.get("accepted", True)
                           and r.get("cv_frame_acc") is not None), default=None)
        c.stopped_at_cap = (last["epoch"] >= c.max_epochs and last.get("accepted", True)
                            and best_before is not None and last.get("cv_frame_acc") is not None
                            and last["cv_frame_acc"] > best_before)
    return c


def load_curves(exp: Path, systems: list[str]) -> list[Curve]:
    """Curves of the given system directories of ``exp`` that have one, in that order."""
    return [c for c in (load_curve(exp / s) for s in systems) if c is not None]


def phones_per_frame(data_dir: Path) -> float | None:
    """Reference phones (``text``) per feature frame of a data directory, from ``utt2dur``
    (Kaldi's frame count of a 25 ms window at a 10 ms shift); None when either file is missing."""
    text, dur = data_dir / "text", data_dir / "utt2dur"
    if not text.is_file() or not dur.is_file():
        return None
    phones = sum(len(t) for t in read_token_table(text).values())
    frames = sum(num_frames(round(float(d) * _RATE), _RATE)
                 for d in read_table(dur, what="utterance", columns=2).values())
    return phones / frames if frames else None


def seq_scale(criterion: str | None, ppf: float | None) -> tuple[float, str] | None:
    """(factor, axis label) turning an objective per frame into the criterion's own unit."""
    if criterion in ("smbr", "mpfe"):
        return 100.0, f"{criterion.upper()}: expected frame accuracy\n(% of frames)"
    if criterion == "mpe":
        if ppf:
            return 100.0 / ppf, "MPE: expected phone accuracy\n(% of reference phones)"
        return None
    if criterion in ("mmi", "bmmi"):
        return 1.0, f"{criterion.upper()}: log P(reference | x)\n(nats / frame)"
    return None


def plot_curves(curves: list[Curve], out: Path, ppf: float | None) -> Path | None:
    """Four panels: CE train / CV loss, CE CV frame accuracy (rejected newbob epochs crossed,
    systems stopped at the epoch cap while improving flagged), the sequence objective in its
    unit, and the CV frame accuracy during sequence training. None when there is no curve."""
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from asr.report.plots import save_figure

    ce = [c for c in curves if c.kind == "ce"]
    seq = [c for c in curves if c.kind == "seq"]
    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.07, top=0.95, wspace=0.22, hspace=0.3)
    for k, c in enumerate(ce):
        col = f"C{k}"
        tag = c.system + (f" (STOPPED AT CAP {c.max_epochs} WHILE IMPROVING)" if c.stopped_at_cap else "")
        ep = [r["epoch"] for r in c.records]
        tr = [(r["epoch"], r["train_loss"]) for r in c.records if r.get("train_loss") is not None]
        if tr:
            ax[0, 0].plot(*zip(*tr), color=col, marker="o", label=f"{c.system} train")
        cvl = [r.get("cv_loss") for r in c.records]
        if any(v is not None for v in cvl):
            ax[0, 0].plot(ep, cvl, color=col, ls="--", marker="s", label=f"{c.system} CV")
        acc = [100 * r["cv_frame_acc"] if r.get("cv_frame_acc") is not None else None for r in c.records]
        ax[0, 1].plot(ep, acc, color=col, marker="o", label=tag)
        for r in c.records:
            if r["epoch"] in c.rejected:
                if r.get("cv_loss") is not None:
                    ax[0, 0].plot(r["epoch"], r["cv_loss"], "x", color="red", ms=11, mew=2.5)
                if r.get("cv_frame_acc") is not None:
                    ax[0, 1].plot(r["epoch"], 100 * r["cv_frame_acc"], "x", color="red", ms=11, mew=2.5)
        if c.max_epochs is not None:
            ax[0, 1].axvline(c.max_epochs, color=col, ls=":", lw=1)
    if any(c.rejected for c in ce):
        ax[0, 1].plot([], [], "x", color="red", ms=9, mew=2.5, label="rejected epoch (newbob: model rolled back)")
    ax[0, 0].set(title="Frame cross-entropy training: loss", xlabel="epoch", ylabel="cross-entropy (nats / frame)")
    ax[0, 1].set(title="Frame cross-entropy training: CV accuracy (dotted: epoch cap)", xlabel="epoch",
                 ylabel="CV frame accuracy (%)")
    units = set()
    for k, c in enumerate(seq, start=len(ce)):
        col = f"C{k}"
        sc = seq_scale(c.criterion, ppf)
        pts = [(r["epoch"], r["objective"]) for r in c.records if r.get("objective") is not None]
        if pts and sc is not None:
            ax[1, 0].plot([e for e, _ in pts], [sc[0] * v for _, v in pts], color=col, marker="o", label=c.system)
            units.add(sc[1])
        ep = [r["epoch"] for r in c.records if r.get("cv_frame_acc") is not None]
        ax[1, 1].plot(ep, [100 * r["cv_frame_acc"] for r in c.records if r.get("cv_frame_acc") is not None],
                      color=col, marker="o", label=f"{c.system} (epoch 0 = CE model)")
    ax[1, 0].set(title="Sequence training: training objective", xlabel="epoch",
                 ylabel=units.pop() if len(units) == 1 else "objective (see legend)")
    ax[1, 1].set(title="Sequence training: CV frame accuracy", xlabel="epoch", ylabel="CV frame accuracy (%)")
    from matplotlib.ticker import MaxNLocator

    for a in ax.flat:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.ticklabel_format(axis="y", useOffset=False, style="plain")
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
        a.grid(alpha=0.3)
    if not seq:
        for a in ax[1]:
            a.text(0.5, 0.5, "no sequence-trained system", ha="center", va="center", transform=a.transAxes)
    path = save_figure(fig, out, tight_bbox=False)
    plt.close(fig)
    return path
