"""The comparison table and ``report.md`` of an experiment directory."""
from __future__ import annotations

import os
from pathlib import Path

from asr.report.plots import plot_per_phone_errors, plot_training_curves
from asr.report.systems import System, best_gmm, collect_systems
from asr.score import matched_pairs


def _pct(x: float) -> str:
    return f"{x:.2f}"


def relative_gains(sys_per: float, base_per: float) -> tuple[float, float]:
    """(relative error reduction %, relative accuracy gain %) of a system over the baseline,
    where accuracy = 100 - PER."""
    err_red = 100.0 * (base_per - sys_per) / base_per if base_per > 0 else 0.0
    base_acc, acc = 100.0 - base_per, 100.0 - sys_per
    acc_gain = 100.0 * (acc - base_acc) / base_acc if base_acc > 0 else 0.0
    return err_red, acc_gain


def seed_table(systems: list[System]) -> list[str]:
    """The mission's three-row table: GMM baseline vs DNN (CE) vs DNN (MPE)."""
    base = best_gmm(systems)
    rows = ["| system | test PER | rel. accuracy gain vs GMM |", "|---|---|---|"]
    if base is None or base.test is None:
        return rows + ["| (no GMM baseline decoded yet) | | |"]
    bper = base.test.result.wer
    rows.append(f"| CD-GMM-HMM (best tri = {base.name}, ML) | {_pct(bper)} % | 0 % |")
    for name, label in (("tri3_bmmi", "CD-GMM-HMM (tri3 + boosted MMI)"), ("dnn", "CD-DNN-HMM (ML / frame CE)"),
                        ("dnn_mpe", "CD-DNN-HMM (MPE)")):
        s = next((x for x in systems if x.name == name and x.test is not None), None)
        if s is None and name == "tri3_bmmi":
            continue
        if s is None:
            rows.append(f"| {label} | not run | |")
            continue
        _, gain = relative_gains(s.test.result.wer, bper)
        rows.append(f"| {label} | {_pct(s.test.result.wer)} % | {gain:+.1f} % |")
    return rows


def full_table(systems: list[System]) -> list[str]:
    base = best_gmm(systems)
    bper = base.test.result.wer if base and base.test else None
    rows = [
        "| system | dev PER | test PER | test 95 % CI | test ins / del / sub | rel. error reduction vs GMM "
        "| rel. accuracy gain vs GMM | LM weight | checkpoint |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in systems:
        dev = _pct(s.dev.result.wer) if s.dev else "-"
        if s.test:
            r = s.test.result
            test = _pct(r.wer)
            ci = f"[{_pct(s.test.ci[0])}, {_pct(s.test.ci[1])}]"
            ids = f"{r.ins} / {r.dels} / {r.sub}"
            if bper is not None:
                er, ag = relative_gains(r.wer, bper)
                er_s, ag_s = f"{er:+.1f} %", f"{ag:+.1f} %"
            else:
                er_s = ag_s = "-"
            lm = s.test.lmwt
        else:
            test = ci = ids = er_s = ag_s = lm = "-"
        rows.append(f"| {s.label} (`{s.name}`) | {dev} | {test} | {ci} | {ids} | {er_s} | {ag_s} | {lm} | `{s.checkpoint}` |")
    return rows


def significance_lines(systems: list[System]) -> list[str]:
    """Matched-pairs tests on the test set for the comparisons the mission cares about."""
    by = {s.name: s for s in systems if s.test is not None}
    base = best_gmm(systems)
    pairs = []
    if base is not None and base.name in by:
        for n in ("dnn", "dnn_mpe"):
            if n in by:
                pairs.append((base.name, n))
    for a, b in (("dnn_rand", "dnn"), ("dnn", "dnn_mpe"), ("mono", "tri1"), ("tri1", "tri2"), ("tri2", "tri3"),
                 ("tri3", "tri3_bmmi"), ("tri3_bmmi", "dnn"), ("tri3_bmmi", "dnn_mpe")):
        if a in by and b in by:
            pairs.append((a, b))
    lines = ["| A | B | test PER A | test PER B | p (matched pairs) |", "|---|---|---|---|---|"]
    for a, b in dict.fromkeys(pairs):
        ra, rb = by[a].test.result, by[b].test.result
        mp = matched_pairs(ra, rb)
        lines.append(f"| {a} | {b} | {_pct(ra.wer)} | {_pct(rb.wer)} | {mp.p_value:.3g} |")
    return lines


def stage_times(exp: Path) -> list[str]:
    f = exp / "stage_times.tsv"
    if not f.is_file():
        return []
    last: dict[str, tuple[int, int]] = {}
    for line in f.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            last[parts[1]] = (int(parts[0]), int(parts[2]))
    rows = ["| stage | wall time (s) |", "|---|---|"]
    total = 0
    for name, (_, secs) in sorted(last.items(), key=lambda kv: kv[1][0]):
        rows.append(f"| {name} | {secs} |")
        total += secs
    rows.append(f"| **total** | {total} |")
    return rows


def write_report(exp: str | Path, mode: str = "phone", seed: int = 0) -> tuple[Path, str]:
    """Score every system of ``exp``, draw the plots and write ``exp/report.md`` atomically.

    Returns (path of report.md, the seed-shaped table as text for printing)."""
    exp = Path(exp)
    systems = collect_systems(exp, mode=mode, seed=seed)
    unit = "PER (39 phones)" if mode == "phone" else "WER"
    fig_dir = exp / "report_figs"
    fig_dir.mkdir(parents=True, exist_ok=True)
    curves = plot_training_curves(exp, fig_dir / "training_curves.png")
    base = best_gmm(systems)
    best_dnn = next((s for s in reversed(systems) if s.kind in ("dnn", "seq") and s.test), None)
    phone_png = None
    if mode == "phone" and base is not None and base.test is not None:
        others = [base] + ([best_dnn] if best_dnn is not None else [])
        phone_png = plot_per_phone_errors(others, fig_dir / "per_phone_errors.png")

    seed_rows = seed_table(systems)
    lines = [
        f"# Comparison report: `{exp}`",
        "",
        f"Error rates are {unit}, counted as NIST sclite does (ins/del weight 3, sub 4), "
        "on the sets the recipe decoded. The LM weight of every system was chosen on dev and "
        "applied unchanged to test. Intervals: 95 % bootstrap over utterances (Bisani & Ney 2004). "
        "The GMM baseline row is the triphone system with the lowest **dev** error.",
        "",
        "## The comparison",
        "",
        *seed_rows,
        "",
        "## Every system",
        "",
        *full_table(systems),
        "",
        "## Significance (test set, matched pairs)",
        "",
        *significance_lines(systems),
        "",
    ]
    times = stage_times(exp)
    if times:
        lines += ["## Wall time per stage (this run)", "", *times, ""]
    lines += ["## Figures", ""]
    if curves:
        lines.append(f"![training curves]({curves.relative_to(exp)})")
    if phone_png:
        lines.append(f"![per-phone errors]({phone_png.relative_to(exp)})")
    lines.append("")
    out = exp / "report.md"
    tmp = exp / "report.md.tmp"
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out)
    return out, "\n".join(seed_rows)
