"""``report.md`` of an experiment directory: the headline table, every system, significance,
PER per speaker condition with the robustness test, what separates dev from test, phone
confusions, training curves and the provenance of the run."""
from __future__ import annotations

import json
import math
from pathlib import Path

from asr.jobs.atomic import write_text_atomic
from asr.report import conditions as C
from asr.report.curves import load_curves, phones_per_frame, plot_curves
from asr.report.plots import confusions_of, plot_conditions, plot_confusions, plot_per_phone_errors
from asr.report.provenance import corpus_identity, read_counts, read_run_info, read_stage_times
from asr.report.speakers import SpeakerTable, speaker_table
from asr.report.systems import System, best_gmm, best_of, collect_systems, read_utt2spk_of
from asr.score import matched_pairs

REL_DEFS = ("relative error reduction = (PER_baseline - PER) / PER_baseline; relative accuracy gain = "
            "(Acc - Acc_baseline) / Acc_baseline with Acc = 100 - PER. Both in percent; positive = "
            "better than the baseline.")


def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _signed(x: float, digits: int = 1) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:+.{digits}f}"


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def relative_gains(sys_per: float, base_per: float) -> tuple[float, float]:
    """(relative error reduction %, relative accuracy gain %) of a system over the baseline,
    where accuracy = 100 - PER."""
    err_red = 100.0 * (base_per - sys_per) / base_per if base_per > 0 else 0.0
    base_acc, acc = 100.0 - base_per, 100.0 - sys_per
    acc_gain = 100.0 * (acc - base_acc) / base_acc if base_acc > 0 else 0.0
    return err_red, acc_gain


def headline_systems(systems: list[System]) -> list[System]:
    """Baseline (best ML triphone GMM), its discriminative step, the DBN-DNN and its sequence
    training: the rows of the research question, in that order."""
    base = best_gmm(systems)
    rows = [base] if base is not None else []
    for s in systems:
        if s is not base and s.test is not None and s.kind in ("gmm_seq", "dnn", "seq") and s.name != "dnn_rand":
            rows.append(s)
    return rows


def headline_table(systems: list[System]) -> list[str]:
    """Headline rows: PER on dev and test with the test interval, both relative measures and
    the matched-pairs p against the baseline."""
    base = best_gmm(systems)
    head = ["| system | dev PER | test PER | test 95 % CI | relative error reduction vs baseline "
            "| relative accuracy gain vs baseline | p vs baseline (matched pairs) |",
            "|---|---|---|---|---|---|---|"]
    if base is None or base.test is None:
        return head + ["| (no ML triphone GMM baseline decoded yet) | | | | | | |"]
    rows = []
    bper = base.test.result.wer
    for s in headline_systems(systems):
        r = s.test.result
        ci = f"[{_pct(s.test.ci[0])}, {_pct(s.test.ci[1])}]"
        dev = _pct(s.dev.result.wer) if s.dev else "-"
        if s is base:
            label = f"**baseline: best ML triphone GMM = {s.name}** ({s.label})"
            rows.append(f"| {label} | {dev} | {_pct(r.wer)} | {ci} | 0 (baseline) | 0 (baseline) | - |")
            continue
        er, ag = relative_gains(r.wer, bper)
        p = matched_pairs(base.test.result, r).p_value
        rows.append(f"| {s.label} (`{s.name}`) | {dev} | {_pct(r.wer)} | {ci} | {er:+.1f} % | {ag:+.1f} % | {_p(p)} |")
    return head + rows


def full_table(systems: list[System]) -> list[str]:
    base = best_gmm(systems)
    bper = base.test.result.wer if base and base.test else None
    rows = [
        "| system | dev PER | test PER | test 95 % CI | test ins / del / sub | relative error reduction vs baseline "
        "| relative accuracy gain vs baseline | LM weight | checkpoint |",
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
        name = f"{s.label} (`{s.name}`)" + (" **= baseline**" if s is base else "")
        rows.append(f"| {name} | {dev} | {test} | {ci} | {ids} | {er_s} | {ag_s} | {lm} | `{s.checkpoint}` |")
    return rows


def significance_lines(systems: list[System]) -> list[str]:
    """Matched-pairs tests on the test set for the comparisons of the research question."""
    by = {s.name: s for s in systems if s.test is not None}
    base = best_gmm(systems)
    pairs = []
    if base is not None and base.name in by:
        pairs += [(base.name, n) for n in ("dnn", "dnn_mpe", "tri3_bmmi") if n in by]
    for a, b in (("dnn_rand", "dnn"), ("dnn", "dnn_mpe"), ("mono", "tri1"), ("tri1", "tri2"), ("tri2", "tri3"),
                 ("tri3", "tri3_bmmi"), ("tri3_bmmi", "dnn"), ("tri3_bmmi", "dnn_mpe")):
        if a in by and b in by:
            pairs.append((a, b))
    lines = ["| A | B | test PER A | test PER B | p (matched pairs) | P(B better), paired bootstrap |",
             "|---|---|---|---|---|---|"]
    for a, b in dict.fromkeys(pairs):
        if a == b:
            continue
        ra, rb = by[a].test.result, by[b].test.result
        mp = matched_pairs(ra, rb)
        lines.append(f"| {a} | {b} | {_pct(ra.wer)} | {_pct(rb.wer)} | {_p(mp.p_value)} | {mp.prob_improvement:.3f} |")
    return lines


# ---------------------------------------------------------------- per condition

def _chain(systems: list[System]) -> list[System]:
    """Baseline GMM -> DBN-DNN (CE) -> first sequence-trained DNN, those that exist."""
    base = best_gmm(systems)
    dnn = next((s for s in systems if s.name == "dnn" and s.test is not None), None)
    seq = next((s for s in systems if s.kind == "seq" and s.test is not None), None)
    return [s for s in (base, dnn, seq) if s is not None]


def condition_table(rows: list[C.ConditionRow], chain: list[System]) -> list[str]:
    """Per condition: speakers, utterances, reference phones, PER [95 % CI] of the chain's
    systems and the relative error reduction of each step."""
    names = [s.name for s in chain]
    head = "| factor | level | speakers | utts | ref. phones | " + " | ".join(f"{n} PER [95 % CI]" for n in names)
    steps = list(zip(names, names[1:]))
    head += "".join(f" | {a} -> {b} rel. error reduction" for a, b in steps) + " |"
    out = [head, "|" + "---|" * (5 + len(names) + len(steps))]
    for r in rows:
        cells = [f"{_pct(r.results[n].wer)} [{_pct(r.ci[n][0])}, {_pct(r.ci[n][1])}]" for n in names]
        gains = [_signed(C.relative_error_reduction(r.results[a].wer, r.results[b].wer)) + " %" for a, b in steps]
        lab = f"**{r.level}**" if r.factor == C.ALL[0] else r.level
        out.append(f"| {r.factor} | {lab} | {r.speakers} | {len(r.utts)} | {r.nref} | "
                   + " | ".join(cells + gains) + " |")
    return out


def condition_all_systems(rows: list[C.ConditionRow], systems: list[System]) -> list[str]:
    names = [s.name for s in systems]
    out = ["| factor | level | speakers | " + " | ".join(names) + " |", "|" + "---|" * (3 + len(names))]
    for r in rows:
        out.append(f"| {r.factor} | {r.level} | {r.speakers} | "
                   + " | ".join(_pct(r.results[n].wer) for n in names) + " |")
    return out


def contrast_lines(tests: list[C.GainContrast], a: str, b: str) -> list[str]:
    if not tests:
        return []
    out = [f"| contrast | speakers (degraded / clean side) | {a} -> {b} rel. error reduction, degraded / unseen side "
           f"| same, clean / seen side | difference [95 % speaker-bootstrap CI] | permutation p | Holm-adjusted p |",
           "|---|---|---|---|---|---|---|"]
    for t in tests:
        out.append(f"| {t.group_a} vs {t.group_b} | {t.spk_a} / {t.spk_b} | {t.rer_a:+.1f} % | {t.rer_b:+.1f} % | "
                   f"{t.diff:+.1f} [{t.ci[0]:+.1f}, {t.ci[1]:+.1f}] points | {_p(t.p)} | {_p(t.p_holm)} |")
    return out


def contrast_verdict(tests: list[C.GainContrast], a: str, b: str, alpha: float = 0.05) -> str:
    """One sentence per contrast from the data: larger / smaller / no significant difference."""
    if not tests:
        return "No contrast has at least two speakers on each side: nothing to test."
    parts = []
    for t in tests:
        if t.p_holm < alpha:
            word = "larger" if t.diff > 0 else "smaller"
            parts.append(f"on {t.group_a} speakers the relative gain of {b} over {a} is significantly {word} than on "
                         f"{t.group_b} speakers ({t.rer_a:+.1f} % vs {t.rer_b:+.1f} %, Holm p = {_p(t.p_holm)})")
        else:
            parts.append(f"{t.group_a} vs {t.group_b}: {t.rer_a:+.1f} % vs {t.rer_b:+.1f} %, difference "
                         f"{t.diff:+.1f} points [{t.ci[0]:+.1f}, {t.ci[1]:+.1f}], not significant "
                         f"(p = {_p(t.p)}, Holm {_p(t.p_holm)})")
    sig = [t for t in tests if t.p_holm < alpha and t.diff > 0]
    head = ("**Verdict: the DNN's relative gain is larger on degraded / unseen-voice speakers for "
            + ", ".join(t.contrast for t in sig) + ".** ") if sig else (
        "**Verdict: here no contrast shows a significantly larger relative gain of the DNN on degraded "
        "or unseen-voice speakers** (the seed's robustness claim is not supported at this size). ")
    return head + "; ".join(parts) + "."


def gap_lines(gaps: dict[str, list[C.GapFactor]], dev_all: dict[str, float], test_all: dict[str, float]) -> list[str]:
    names = list(gaps)
    out = ["| factor | dev mix (share of ref. phones) | test mix | " + " | ".join(
        f"{n}: test PER per level | {n}: test PER at dev's mix | {n}: share of gap explained" for n in names) + " |",
           "|" + "---|" * (3 + 3 * len(names))]
    facs = [g.factor for g in gaps[names[0]]]
    for k, f in enumerate(facs):
        g0 = gaps[names[0]][k]
        mix_d = ", ".join(f"{lv} {100 * v:.0f} %" for lv, v in sorted(g0.dev_share.items()))
        mix_t = ", ".join(f"{lv} {100 * v:.0f} %" for lv, v in sorted(g0.test_share.items()))
        cells = []
        for n in names:
            g = gaps[n][k]
            per = ", ".join(f"{lv} {v:.1f}" for lv, v in sorted(g.test_per.items()))
            cells += [per, f"{g.test_std:.2f}", f"{100 * g.explained:+.0f} %"]
        out.append(f"| {f} | {mix_d} | {mix_t} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Overall: " + "; ".join(f"{n} dev {dev_all[n]:.2f} -> test {test_all[n]:.2f} "
                                       f"(gap {test_all[n] - dev_all[n]:+.2f})" for n in names) + ".")
    return out


def adjusted_lines(adj: dict[str, C.AdjustedGap | None]) -> list[str]:
    """The regression table: raw and condition-adjusted gap per system, then each covariate's
    coefficient per system."""
    ok = {n: a for n, a in adj.items() if a is not None}
    if not ok:
        return []
    out = ["| system | test - dev, raw (points) | test - dev at equal conditions [95 % speaker-bootstrap CI] "
           "| share of the gap the conditions account for |", "|---|---|---|---|"]
    for n, a in ok.items():
        share = (a.raw - a.adjusted) / a.raw if a.raw else math.nan
        out.append(f"| {n} | {a.raw:+.2f} | {a.adjusted:+.2f} [{a.ci[0]:+.2f}, {a.ci[1]:+.2f}] | "
                   f"{'-' if math.isnan(share) else f'{100 * share:.0f} %'} |")
    names = list(ok)
    covs = list(dict.fromkeys(c for a in ok.values() for c in a.covariates))
    out += ["", "| covariate (speaker has it) | " + " | ".join(f"{n}: effect on PER (points)" for n in names) + " |",
            "|" + "---|" * (1 + len(names))]
    for c in covs:
        out.append(f"| {c} | " + " | ".join(f"{ok[n].effects[c]:+.1f}" if c in ok[n].effects else "-" for n in names)
                   + " |")
    return out


def gap_verdict(gaps: dict[str, list[C.GapFactor]], tests: dict[str, C.SetGap],
                adj: dict[str, C.AdjustedGap | None] | None = None, share: float = 0.25) -> str:
    """The sentences that say, from the data, whether the dev -> test gap exceeds speaker
    sampling, which factor's mix accounts for most of it (when one accounts for at least
    ``share`` of it), and what held-out voices do."""
    parts = []
    for n, gl in gaps.items():
        t = tests.get(n)
        if t is not None:
            parts.append(f"{n}: test - dev = {t.diff:+.2f} points [{t.ci[0]:+.2f}, {t.ci[1]:+.2f}], speaker-label "
                         f"permutation p = {_p(t.p)}"
                         + (" (no larger than the spread between random splits of these speakers)" if t.p >= 0.05 else ""))
        ok = [g for g in gl if not math.isnan(g.explained)]
        if not ok:
            continue
        top = max(ok, key=lambda g: g.explained)

        def shares(sh: dict[str, float]) -> str:
            return ", ".join(f"{lv} {100 * v:.0f} %" for lv, v in sorted(sh.items()))
        if top.explained >= share:
            parts.append(f"taken one at a time, the factor whose mix accounts for most of {n}'s gap is **{top.factor}** "
                         f"({100 * top.explained:.0f} % of it: test at dev's mix {top.test_std:.2f}; dev "
                         f"{shares(top.dev_share)} vs test {shares(top.test_share)})")
        else:
            parts.append(f"no single factor's mix accounts for as much as {100 * share:.0f} % of {n}'s gap (largest: "
                         f"{top.factor}, {100 * top.explained:.0f} %): test speakers score worse than dev speakers of the "
                         "same condition")
        a = (adj or {}).get(n)
        if a is not None and a.raw:
            top_eff = sorted(a.effects.items(), key=lambda kv: -abs(kv[1]))[:3]
            sig = a.ci[0] > 0 or a.ci[1] < 0
            parts.append(f"at equal conditions (weighted regression over speakers) {n}'s gap is {a.adjusted:+.2f} points "
                         f"[{a.ci[0]:+.2f}, {a.ci[1]:+.2f}] instead of {a.raw:+.2f}: the speakers' conditions account for "
                         f"{100 * (a.raw - a.adjusted) / a.raw:.0f} % of it"
                         + ("" if sig else " and what remains is within speaker-sampling noise")
                         + "; largest condition effects " + ", ".join(f"{k} {v:+.1f}" for k, v in top_eff))
        voice = next((g for g in ok if g.factor == "voice"), None)
        if voice is not None and "held out" in voice.test_per and "seen in training" in voice.test_per:
            parts.append(f"held-out voices {'do not explain' if voice.explained <= 0 else 'explain part of'} it for {n}: "
                         f"test speakers with held-out voices score {voice.test_per['held out']:.2f} vs "
                         f"{voice.test_per['seen in training']:.2f} with voices seen in training, so reweighting to dev "
                         f"(seen voices only) explains {100 * voice.explained:+.0f} % of the gap")
    if not parts:
        return ""
    return "**What separates test from dev:** " + "; ".join(parts) + "."


# ---------------------------------------------------------------- provenance

def provenance_lines(exp: Path, info: dict | None, table: SpeakerTable | None) -> list[str]:
    out = []
    if info is None:
        out += ["No `run_info.json` in this directory (written by `recipes/timit/run.sh` at the start of every run): "
                "commit, config and machine unknown.", ""]
    else:
        m = info.get("machine") or {}
        dirty = info.get("dirty")
        out += [
            f"- code commit: `{info.get('commit') or 'unknown (not a git checkout)'}`"
            + (" **with uncommitted changes to tracked files**" if dirty else (" (no tracked file modified)" if dirty
                                                                           is False else ""))
            + (f"; untracked: {', '.join(f'`{u}`' for u in info['untracked'])}" if info.get("untracked") else ""),
            f"- command: `{info.get('command', '?')}` (started {info.get('started', '?')})",
            f"- seed: {info.get('seed', '?')}",
            f"- corpus: `{info.get('corpus')}`",
            f"- machine: {m.get('cores', '?')} cores"
            + (f" ({m['cpu']}, torch CPU kernels: {m.get('cpu_isa') or '?'})" if m.get("cpu") else "")
            + f", GPU: {m.get('gpu') or 'none'}, torch {m.get('torch', '?')}, "
            f"Python {m.get('python', '?')}",
        ]
        for e in info.get("earlier_runs", []) or []:
            out.append(f"- earlier run into this directory: commit `{e.get('commit')}`"
                       + (" (dirty)" if e.get("dirty") else "") + f", started {e.get('started')}, `{e.get('command')}`")
        out += ["", f"Config file `{info.get('config', '?')}`:", "", "```sh", (info.get("config_text") or "").rstrip(),
                "```", ""]
    corpus = Path(info["corpus"]) if info and info.get("corpus") else None
    digest, what, facts = corpus_identity(exp, corpus)
    out.append(f"Corpus identity: SHA-256 `{digest}` of {what}"
               + (f"; speakers described by {table.source}" if table else "") + ".")
    if facts:
        out += ["", "| set | speakers | utterances | hours |", "|---|---|---|---|"]
        for s, f in facts.items():
            out.append(f"| {s} | {f.speakers} | {f.utts} | {'-' if f.hours is None else f'{f.hours:.2f}'} |")
    out.append("")
    times = read_stage_times(exp)
    out += ["### Wall time and peak memory per stage", ""]
    if times:
        out += ["| # | stage | wall time (s) | peak RSS (MiB) |", "|---|---|---|---|"]
        for t in times:
            out.append(f"| {t.num} | {t.name} | {t.seconds} | {'not recorded' if t.peak_mb is None else t.peak_mb} |")
        peaks = [t.peak_mb for t in times if t.peak_mb is not None]
        out.append(f"| | **total** | {sum(t.seconds for t in times)} | {'max ' + str(max(peaks)) if peaks else '-'} |")
    else:
        out.append("No `stage_times.tsv` in this directory.")
    out += ["", *selection_lines(exp)]
    out += ["", "### Skipped and failed utterances per stage", ""]
    counts, bad = read_counts(exp)
    if counts:
        out += ["| stage / decode dir | what | count | first ids |", "|---|---|---|---|"]
        for c in counts:
            ids = ", ".join(c.ids[:8]) + (" ..." if len(c.ids) > 8 or c.count > len(c.ids[:8]) else "")
            out.append(f"| `{c.where}` | {c.what} | {c.count} | {ids} |")
    else:
        out.append("None recorded: no stage of this run wrote a `log/counts.json`.")
    for b in bad:
        out.append(f"- unreadable counts file: {b}")
    out.append("")
    return out


def _candidate_name(c: dict) -> str:
    if "epoch" in c:
        return "CE model" if c["epoch"] == 0 else f"epoch {c['epoch']}"
    return "starting system" if not c.get("iter") else f"tau {c['tau']:g} iteration {c['iter']}"


def selection_lines(exp: Path) -> list[str]:
    """The settings stages chose on dev (``SYSTEM/selection.json`` of ``asr.seqtrain.select`` and
    ``asr.seqtrain.gmm_select``): every candidate's dev errors and the winner."""
    out = ["### Settings chosen on dev", ""]
    found = sorted(exp.glob("*/selection.json"))
    if not found:
        return out + ["No stage of this run chose a setting on dev (no `*/selection.json`)."]
    out += ["| system | candidates (dev errors) | chosen | improved on the starting model |", "|---|---|---|---|"]
    for path in found:
        try:
            rec = json.loads(path.read_text())
            cands = ", ".join(f"{_candidate_name(c)}: {c['dev_errors']}" for c in rec["candidates"])
            best = rec["chosen"]
            chosen = f"{_candidate_name(best)} ({best['dev_errors']} / {best['dev_ref']})"
            out.append(f"| `{path.parent.name}` | {cands} | {chosen} | {'yes' if rec['improved_on_dev'] else '**no**'} |")
        except (OSError, ValueError, KeyError, TypeError) as e:
            out.append(f"| `{path.parent.name}` | unreadable `{path.name}` ({type(e).__name__}: {e}) | - | - |")
    return out


# ---------------------------------------------------------------- the report

def _rel(p: Path | None, exp: Path) -> str | None:
    return str(p.relative_to(exp)) if p is not None else None


def write_report(exp: str | Path, mode: str = "phone", seed: int = 0, n_boot: int = 1000) -> tuple[Path, str]:
    """Score every system of ``exp``, draw the figures and write ``exp/report.md`` atomically.

    Returns (path of report.md, the headline table as text for printing)."""
    from asr.lang.phones import load_phone_map

    exp = Path(exp)
    if not exp.is_dir():
        raise FileNotFoundError(f"experiment directory {exp} does not exist")
    systems = collect_systems(exp, mode=mode, seed=seed, n_boot=n_boot)
    info = read_run_info(exp)
    unit = "PER (39 phones)" if mode == "phone" else "WER"
    figs = exp / "report_figs"
    figs.mkdir(parents=True, exist_ok=True)
    head = headline_table(systems)
    base = best_gmm(systems)
    lines = [
        f"# Comparison report: `{exp}`",
        "",
        f"Error rates are {unit} in percent, counted as NIST sclite does (ins/del weight 3, sub 4), on the sets the "
        "recipe decoded. The LM weight of every system was chosen on dev and applied unchanged to test. Intervals: "
        "95 % bootstrap over utterances (Bisani & Ney 2004) unless said otherwise. The baseline is the "
        "maximum-likelihood triphone GMM system with the lowest **dev** error "
        f"({'`' + base.name + '`' if base else 'none decoded yet'}).",
        "",
        "## Headline",
        "",
        *head,
        "",
        REL_DEFS,
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
    lines += _condition_sections(exp, systems, info, figs, seed, n_boot)
    lines += _why_sections(exp, systems, figs, mode, load_phone_map().phones39 if mode == "phone" else None)
    table = speaker_table(exp, info.get("corpus") if info else None)
    lines += ["## Provenance", "", *provenance_lines(exp, info, table)]
    out = write_text_atomic(exp / "report.md", "\n".join(lines))
    return out, "\n".join(head)


def _condition_sections(exp: Path, systems: list[System], info: dict | None, figs: Path, seed: int,
                        n_boot: int) -> list[str]:
    out = ["## Where each system wins: PER per speaker condition", ""]
    table = speaker_table(exp, info.get("corpus") if info else None)
    scored = [s for s in systems if s.test is not None and s.dev is not None]
    chain = [s for s in _chain(systems) if s in scored]
    if table is None or not chain:
        return out + ["No speaker description (no `DOC/SPEAKERS.TSV`, no data dirs) or no decoded baseline: "
                      "skipped.", ""]
    rows: dict[str, list[C.ConditionRow]] = {}
    for set_name in ("test", "dev"):
        u2s = read_utt2spk_of(exp, set_name)
        res = {s.name: getattr(s, set_name).result for s in scored}
        if u2s is None or not res:
            continue
        try:
            rows[set_name] = C.condition_rows(res, u2s, table, n_boot=n_boot, seed=seed)
        except ValueError as e:
            out += [f"{set_name}: per-condition analysis skipped: {e}.", ""]
    if "test" not in rows:
        return out
    out += [f"Speakers described by {table.source}. Each factor's levels partition the set, so their utterances and "
            "reference phones add up to the first row. Intervals: 95 % bootstrap over the utterances of the level; "
            "levels with one or two speakers say little about the condition.", ""]
    png = plot_conditions(rows["test"], [s.name for s in chain], figs / "per_condition.png", "test")
    if png is not None:
        out += [f"![PER per condition]({_rel(png, exp)})", ""]
    for set_name in ("test", "dev"):
        if set_name in rows:
            out += [f"### {set_name.capitalize()} set: baseline -> DNN -> sequence training", "",
                    *condition_table(rows[set_name], chain), ""]
    out += ["### Test set: every system", "", *condition_all_systems(rows["test"], scored), ""]
    dnn = next((s for s in chain if s.name == "dnn"), None)
    base = chain[0]
    u2s = read_utt2spk_of(exp, "test")
    out += ["## Is the DNN's relative gain larger on degraded or unseen-voice speakers?", ""]
    if dnn is None or base is dnn or not table.generated:
        out += ["Not tested: needs the baseline, the DBN-DNN and a generated corpus's channel and voice "
                "description.", ""]
    else:
        tests = C.gain_contrasts(base.test.result, dnn.test.result, u2s, table, seed=seed)
        out += [f"{base.name} -> {dnn.name}. Test: the difference between the two groups' relative error "
                "reductions (1 - errors of the DNN / errors of the baseline, pooled over each group's speakers); "
                "speakers are the units. Interval: percentile bootstrap resampling the speakers of each group "
                "(10 000 replicates); p: two-sided permutation test of the group labels over speakers (10 000 "
                "permutations); Holm's adjustment over the contrasts of a table.", "", "### Test set", "",
                *contrast_lines(tests, base.name, dnn.name), *([""] if tests else []),
                contrast_verdict(tests, base.name, dnn.name), ""]
        u2s_dev = read_utt2spk_of(exp, "dev")
        if base.dev is not None and dnn.dev is not None and u2s_dev is not None:
            pooled = C.gain_contrasts(C.concat(base.dev.result, base.test.result),
                                      C.concat(dnn.dev.result, dnn.test.result), {**u2s_dev, **u2s}, table, seed=seed)
            out += ["### Dev and test speakers pooled (more speakers per channel condition; the LM weight was "
                    "chosen on dev)", "", *contrast_lines(pooled, base.name, dnn.name), *([""] if pooled else []),
                    contrast_verdict(pooled, base.name, dnn.name), ""]
    if "dev" in rows:
        names = [s.name for s in chain[:2]]
        gaps = {n: C.dev_test_gap(rows["dev"], rows["test"], n) for n in names}
        if all(gaps.values()):
            dev_all = {n: rows["dev"][0].results[n].wer for n in names}
            test_all = {n: rows["test"][0].results[n].wer for n in names}
            by = {s.name: s for s in chain}
            u2s_dev = read_utt2spk_of(exp, "dev")
            gap_tests = {n: C.set_gap(by[n].dev.result, by[n].test.result, u2s_dev, u2s, seed=seed) for n in names}
            adj = {n: C.adjusted_gap(by[n].dev.result, by[n].test.result, u2s_dev, u2s, table, seed=seed)
                   for n in names}
            out += ["## Dev vs test: what the difference comes from", "",
                    "Direct standardisation, one factor at a time: the test PER recomputed with each level weighted by "
                    "its share of **dev's** reference phones (over the levels present in both sets). The share of the "
                    "gap explained is (test PER - test PER at dev's mix) / (test PER - dev PER); a negative share means "
                    "that factor's mix makes test easier, not harder. Whether the gap exceeds what the choice of "
                    "speakers alone gives: a permutation test of the dev / test labels over all their speakers, with a "
                    "speaker-bootstrap interval of the difference.", "",
                    *gap_lines(gaps, dev_all, test_all), "",
                    "All factors at once: a weighted least-squares fit over the dev and test speakers (weights: "
                    "reference phones) of each speaker's PER on a test indicator and 0/1 condition covariates (a "
                    "covariate that cannot be separated from the others is left out); its test coefficient is the "
                    "test - dev difference between speakers of equal conditions. Interval: the speakers of each set "
                    "resampled with replacement (2 000 replicates).", "",
                    *adjusted_lines(adj), "", gap_verdict(gaps, gap_tests, adj), ""]
    return out


def _why_sections(exp: Path, systems: list[System], figs: Path, mode: str, phones: list[str] | None) -> list[str]:
    out = ["## Why: phone confusions and per-phone errors", ""]
    gmm = best_of(systems, ("gmm", "gmm_seq"))
    dnn = best_of(systems, ("dnn", "seq"))
    if phones is None:
        out += ["Word recognition: no phone confusion matrix.", ""]
    elif gmm is not None:
        pair = [s for s in (gmm, dnn) if s is not None]
        confs = confusions_of(pair, phones)
        if dnn is not None:
            png = plot_confusions((gmm.name, dnn.name), (confs[0], confs[1]), phones, figs / "confusion.png")
            out += [f"Best GMM by dev PER: `{gmm.name}`; best DNN by dev PER: `{dnn.name}`. Test set, "
                    f"{len(phones)} x {len(phones)} matrices normalised per reference phone (rows: P(hypothesis phone | "
                    "reference phone); last column: deletions; insertions are not shown), from the alignment that "
                    "counts the PER.", "", f"![confusion matrices]({_rel(png, exp)})", "",
                    *top_confusion_changes(confs[0], confs[1], phones, gmm.name, dnn.name), ""]
        png = plot_per_phone_errors(pair, confs, phones, figs / "per_phone_errors.png")
        out += [f"![per-phone errors]({_rel(png, exp)})", ""]
    out += ["## Training curves", ""]
    curves = load_curves(exp, [s.name for s in systems if s.neural] + [
        n for n in ("dnn", "dnn_rand") if n not in {s.name for s in systems}])
    png = plot_curves(curves, figs / "training_curves.png", phones_per_frame(exp / "data" / "train"))
    if png is None:
        return out + ["No `log/train_curve.json` in any neural system.", ""]
    out += [f"![training curves]({_rel(png, exp)})", ""]
    for c in curves:
        if c.kind != "ce":
            continue
        n_ep = max(r["epoch"] for r in c.records)
        msg = f"- `{c.system}`: {n_ep} epochs (cap {c.max_epochs if c.max_epochs is not None else 'unknown'})"
        msg += f", rejected by newbob: {', '.join(map(str, c.rejected))}" if c.rejected else ", no epoch rejected"
        if c.stopped_at_cap:
            msg += (" — **stopped at its epoch cap while CV accuracy was still improving**: more epochs would "
                    "likely help")
        out.append(msg + ".")
    out.append("")
    return out


def top_confusion_changes(a, b, phones: list[str], name_a: str, name_b: str, k: int = 8) -> list[str]:
    """The ``k`` (reference, hypothesis) cells whose rate changed most between the systems."""
    import numpy as np

    from asr.report.plots import row_normalised

    d = row_normalised(b) - row_normalised(a)
    labels = list(phones) + ["(deleted)"]
    np.fill_diagonal(d[:, :-1], 0.0)
    flat = np.argsort(-np.abs(d), axis=None)[:k]
    out = [f"Largest changes of an error rate from `{name_a}` to `{name_b}` (percentage points of the "
           "reference phone's occurrences):", ""]
    for idx in flat:
        i, j = np.unravel_index(idx, d.shape)
        out.append(f"- {phones[i]} -> {labels[j]}: {100 * (row_normalised(a)[i, j]):.1f} % -> "
                   f"{100 * (row_normalised(b)[i, j]):.1f} % ({100 * d[i, j]:+.1f})")
    return out
