"""Cost against data: wall time of every recipe stage against the training hours of its corpus.

Reads finished experiment dirs of ``recipes/timit/run.sh`` (one per corpus size, run alone on the
same machine): each stage's wall time and peak memory from ``EXP/stage_times.tsv`` and the
training hours from ``EXP/data/train/utt2dur``. Prints one row per stage with its seconds in every
run and the exponent ``b`` of a least-squares fit ``seconds = a * hours^b`` in log-log space (runs
where the stage took under ``--min-seconds`` are left out of the fit: start-up cost, not data
cost), and the same for the sum of the stages every run has; ``--plot FILE.png`` draws the log-log lines. With
``--extrapolate H`` it also prints each stage's fitted time at ``H`` training hours (real TIMIT's
training set is 3.14 h), an estimate from the measured exponent, not a measurement.

    python bench/cost_vs_data.py EXP_TINY EXP_SMALL EXP_DEFAULT [--plot cost.png] [--extrapolate 3.14]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr.report.provenance import data_dir_hours, read_run_info, read_stage_times  # noqa: E402


def train_hours(exp: Path) -> float:
    """Training hours of ``exp`` from ``data/train/utt2dur`` (a clear error if it is missing)."""
    hours = data_dir_hours(exp / "data" / "train")
    if hours is None:
        raise SystemExit(f"{exp}/data/train/utt2dur not found: is {exp} an experiment dir of recipes/timit/run.sh "
                         f"past stage 2?")
    return hours


def fit_power(hours: list[float], seconds: list[float]) -> tuple[float, float] | None:
    """Least-squares ``log s = log a + b log h``; ``(a, b)``, or None with fewer than 2 distinct sizes."""
    pts = [(math.log(h), math.log(s)) for h, s in zip(hours, seconds) if h > 0 and s > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    return math.exp(my - b * mx), b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("exps", nargs="+", type=Path)
    ap.add_argument("--min-seconds", type=float, default=5.0)
    ap.add_argument("--extrapolate", type=float, default=None, help="training hours to estimate each stage at")
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    runs = []
    for e in args.exps:
        times = {st.name: st for st in read_stage_times(e)}
        if not times:
            raise SystemExit(f"{e}/stage_times.tsv has no finished stage")
        info = read_run_info(e) or {}
        runs.append((e, train_hours(e), times, info))
    runs.sort(key=lambda r: r[1])
    machines = {str((r[3].get("machine") or {}).get("cpu")) + f" x{(r[3].get('machine') or {}).get('cores')}"
                for r in runs}
    print(f"machine(s): {', '.join(sorted(machines))}")
    order: dict[str, int] = {}
    for _, _, times, _ in runs:
        for name, st in times.items():
            order.setdefault(name, st.num)
    stages = sorted(order, key=order.get)
    head = "| stage | " + " | ".join(f"{h:.3f} h" for _, h, _, _ in runs) + " | exponent b |"
    if args.extrapolate:
        head += f" fitted at {args.extrapolate:g} h (s) |"
    print(head)
    print("|---" * (len(runs) + 2 + bool(args.extrapolate)) + "|")
    fits: dict[str, tuple[list[float], list[float], tuple[float, float] | None]] = {}
    common = [n for n in stages if all(n in times for _, _, times, _ in runs)]
    total = [sum(times[n].seconds for n in common) for _, _, times, _ in runs]
    all_name = "(all stages)" if len(common) == len(stages) else "(stages every run has)"
    for name in stages + [all_name]:
        if name == all_name:
            secs = [float(t) for t in total]
            hs = [h for _, h, _, _ in runs]
            cells = [f"{t:.0f}" for t in total]
        else:
            pairs = [(h, float(times[name].seconds)) for _, h, times, _ in runs if name in times]
            used = [(h, s) for h, s in pairs if s >= args.min_seconds]
            hs, secs = [h for h, _ in used], [s for _, s in used]
            cells = []
            for _, h, times, _ in runs:
                st = times.get(name)
                cells.append("-" if st is None else f"{st.seconds}" + ("" if st.seconds >= args.min_seconds else "*"))
        fit = fit_power(hs, secs)
        fits[name] = (hs, secs, fit)
        row = f"| {name} | " + " | ".join(cells) + f" | {'-' if fit is None else f'{fit[1]:.2f}'} |"
        if args.extrapolate:
            row += f" {'-' if fit is None else f'{fit[0] * args.extrapolate ** fit[1]:.0f}'} |"
        print(row)
    print(f"(* under {args.min_seconds:g} s: left out of the fit)")
    grown = [(f[2][1], n) for n, f in fits.items() if f[2] is not None and n != all_name]
    if grown:
        b, n = max(grown)
        print(f"grows fastest: {n} (b = {b:.2f})")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.5, 5.5))
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
        for name, (hs, secs, fit) in fits.items():
            if not hs:
                continue
            ax.plot(hs, secs, "o-", lw=2.5 if name == all_name else 1.2,
                            label=name + ("" if fit is None else f" (b={fit[1]:.2f})"))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training audio (hours)")
        ax.set_ylabel("wall time (s)")
        ax.set_title("recipe stage cost against training data (log-log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        tmp = args.plot.with_name(args.plot.name + ".tmp.png")
        fig.savefig(tmp, dpi=110)
        tmp.replace(args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
