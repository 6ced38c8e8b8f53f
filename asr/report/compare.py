"""Several experiment directories side by side (``asr report --exp A --exp B ...``): the runs'
provenance, every system's PER in every run, the spread over runs that share a test set (e.g.
two seeds of one recipe) and matched-pairs tests between such runs."""
from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass
from pathlib import Path

from asr.jobs.atomic import write_text_atomic
from asr.report.provenance import corpus_identity, read_run_info
from asr.report.systems import SYSTEMS, System, collect_systems
from asr.score import matched_pairs


@dataclass
class Run:
    """One experiment directory: its label in the tables, systems and run_info."""

    label: str
    exp: Path
    systems: dict[str, System]
    info: dict | None


def _labels(exps: list[Path]) -> list[str]:
    names = [e.name for e in exps]
    if len(set(names)) == len(names):
        return names
    return [str(e) for e in exps]


def same_test_set(a: System, b: System) -> bool:
    """Both systems were scored on the same test utterances against the same references."""
    return a.test is not None and b.test is not None and a.test.ref == b.test.ref


def test_set_groups(runs: list[Run]) -> list[list[int]]:
    """Indices of runs grouped by identical test references (compared via any scored system)."""
    def ref_of(r: Run):
        s = next((s for s in r.systems.values() if s.test is not None), None)
        return s.test.ref if s else None

    groups: list[list[int]] = []
    for k, r in enumerate(runs):
        ref = ref_of(r)
        for g in groups:
            if ref is not None and ref_of(runs[g[0]]) == ref:
                g.append(k)
                break
        else:
            groups.append([k])
    return groups


def _f(x: float) -> str:
    return f"{x:.2f}"


def comparison_lines(runs: list[Run]) -> list[str]:
    """The body of the comparison report (markdown lines)."""
    groups = test_set_groups(runs)
    group_of = {k: chr(ord("A") + g) for g, ks in enumerate(groups) for k in ks}
    out = ["## Runs", "", "| run | directory | commit | seed | config | corpus hash | test set |",
           "|---|---|---|---|---|---|---|"]
    for k, r in enumerate(runs):
        i = r.info or {}
        commit = (i.get("commit") or "unknown")[:10] + (" (dirty)" if i.get("dirty") else "")
        corpus = Path(i["corpus"]) if i.get("corpus") else None
        digest, _, _ = corpus_identity(r.exp, corpus)
        cfg = Path(i["config"]).name if i.get("config") else "?"
        out.append(f"| {r.label} | `{r.exp}` | `{commit}` | {i.get('seed', '?')} | `{cfg}` | `{digest}` "
                   f"| {group_of[k]} |")
    out += ["", "Runs with the same test-set letter were scored on identical test utterances and references; only "
            "they are compared by matched pairs and pooled for the spread.", ""]
    order = [n for n, _, _ in SYSTEMS] + sorted({n for r in runs for n in r.systems} - {n for n, _, _ in SYSTEMS})
    names = [n for n in order if any(n in r.systems for r in runs)]
    out += ["## Test PER [95 % CI] (dev PER) per run", "",
            "| system | " + " | ".join(r.label for r in runs) + " |", "|" + "---|" * (1 + len(runs))]
    for n in names:
        cells = []
        for r in runs:
            s = r.systems.get(n)
            if s is None or s.test is None:
                cells.append("-")
                continue
            dev = f" ({_f(s.dev.result.wer)})" if s.dev else ""
            cells.append(f"{_f(s.test.result.wer)} [{_f(s.test.ci[0])}, {_f(s.test.ci[1])}]{dev}")
        out.append(f"| `{n}` | " + " | ".join(cells) + " |")
    out += ["", "## Spread over runs sharing a test set", "",
            "| test set | system | runs | test PER mean | sd | min - max | dev PER mean | dev sd |",
            "|---|---|---|---|---|---|---|---|"]
    any_spread = False
    for g, ks in enumerate(groups):
        if len(ks) < 2:
            continue
        for n in names:
            have = [runs[k].systems[n] for k in ks if n in runs[k].systems and runs[k].systems[n].test is not None]
            if len(have) < 2:
                continue
            any_spread = True
            t = [s.test.result.wer for s in have]
            d = [s.dev.result.wer for s in have if s.dev is not None]
            dsd = _f(statistics.stdev(d)) if len(d) >= 2 else "-"
            out.append(f"| {chr(ord('A') + g)} | `{n}` | {len(have)} | {_f(statistics.mean(t))} | "
                       f"{_f(statistics.stdev(t))} | {_f(min(t))} - {_f(max(t))} | "
                       f"{_f(statistics.mean(d)) if d else '-'} | {dsd} |")
    if not any_spread:
        out.append("| - | (no two runs share a test set) | | | | | | |")
    out += ["", "## Matched pairs between runs (same system, same test set)", "",
            "| system | run A | run B | test PER A | test PER B | p (matched pairs) |", "|---|---|---|---|---|---|"]
    tested = False
    for n in names:
        for i, j in itertools.combinations(range(len(runs)), 2):
            a, b = runs[i].systems.get(n), runs[j].systems.get(n)
            if a is None or b is None or not same_test_set(a, b):
                continue
            tested = True
            p = matched_pairs(a.test.result, b.test.result).p_value
            out.append(f"| `{n}` | {runs[i].label} | {runs[j].label} | {_f(a.test.result.wer)} | "
                       f"{_f(b.test.result.wer)} | {p:.2g} |")
    if not tested:
        out.append("| - | | | | | (no two runs share a test set: no matched-pairs test) |")
    out.append("")
    return out


def write_comparison(exps: list[str | Path], out: str | Path, mode: str = "phone", seed: int = 0,
                     n_boot: int = 1000) -> tuple[Path, str]:
    """Write the side-by-side report of ``exps`` to ``out`` (temporary name + rename); returns
    (path, the per-run PER table as text)."""
    paths = [Path(e) for e in exps]
    for p in paths:
        if not p.is_dir():
            raise FileNotFoundError(f"experiment directory {p} does not exist")
    runs = [Run(lab, p, {s.name: s for s in collect_systems(p, mode=mode, seed=seed, n_boot=n_boot)},
                read_run_info(p)) for lab, p in zip(_labels(paths), paths)]
    body = comparison_lines(runs)
    unit = "PER (39 phones)" if mode == "phone" else "WER"
    text = [f"# Runs side by side: {', '.join(f'`{p}`' for p in paths)}", "",
            f"Error rates are {unit} in percent (sclite counts; LM weight chosen on each run's dev set); intervals: 95 % "
            "bootstrap over utterances; sd: sample standard deviation over runs.", "", *body]
    out = write_text_atomic(out, "\n".join(text))
    start = body.index("## Test PER [95 % CI] (dev PER) per run")
    end = body.index("## Spread over runs sharing a test set")
    return out, "\n".join(body[start:end]).strip()

