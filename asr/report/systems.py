"""Collect the decoded systems of an experiment directory and score them side by side.

A *system* is an ``exp/<name>/`` directory with ``decode_dev/`` and ``decode_test/``
sub-directories written by ``asr.decode.decode_and_score`` (``hyp.<lmwt>.txt``,
``best_lmwt``, ``scoring``). Scores are recomputed here from the hypotheses so that
intervals and significance tests use the very same counts as the ``%WER`` lines.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from asr.lang.phones import load_phone_map
from asr.score import ScoreResult, bootstrap_ci, fold39, read_text, score

# (directory name, row label in the report, kind) in the order of the mission's stages.
SYSTEMS: list[tuple[str, str, str]] = [
    ("mono", "GMM-HMM monophone (ML)", "gmm"),
    ("tri1", "CD-GMM-HMM tri1: deltas (ML)", "gmm"),
    ("tri2", "CD-GMM-HMM tri2: LDA+MLLT (ML)", "gmm"),
    ("tri3", "CD-GMM-HMM tri3: LDA+MLLT+SAT (ML)", "gmm"),
    ("tri3_bmmi", "CD-GMM-HMM tri3 + boosted MMI (EBW)", "gmm_seq"),
    ("dnn_rand", "CD-DNN-HMM, random init (ML / frame CE)", "dnn"),
    ("dnn", "CD-DNN-HMM, DBN-pretrained (ML / frame CE)", "dnn"),
    ("dnn_mpe", "CD-DNN-HMM (MPE)", "seq"),
    ("dnn_mpfe", "CD-DNN-HMM (MPFE: frame-level MPE)", "seq"),
    ("dnn_smbr", "CD-DNN-HMM (sMBR)", "seq"),
    ("dnn_mmi", "CD-DNN-HMM (MMI)", "seq"),
    ("dnn_bmmi", "CD-DNN-HMM (boosted MMI)", "seq"),
]


@dataclass
class SetScore:
    """Score of one system on one set (dev or test)."""

    result: ScoreResult
    lmwt: str
    ci: tuple[float, float]
    hyp: dict[str, list[str]] = field(repr=False)
    ref: dict[str, list[str]] = field(repr=False)


@dataclass
class System:
    name: str
    label: str
    kind: str
    dev: SetScore | None
    test: SetScore | None
    checkpoint: str

    @property
    def neural(self) -> bool:
        return self.kind in ("dnn", "seq")


def _chosen_hyp(decode_dir: Path) -> tuple[Path, str] | None:
    """The hypothesis file of the LM weight the decode dir settled on."""
    best = decode_dir / "best_lmwt"
    if best.is_file():
        lmwt = best.read_text().strip()
        p = decode_dir / f"hyp.{lmwt}.txt"
        if p.is_file():
            return p, lmwt
    hyps = sorted(decode_dir.glob("hyp.*.txt"))
    if len(hyps) == 1:
        return hyps[0], hyps[0].name[len("hyp."):-len(".txt")]
    return None


def _ref_path(exp: Path, set_name: str, mode: str) -> Path:
    base = exp / "data" / set_name
    return base / ("text.39" if mode == "phone" else "text.wrd")


def score_decode_dir(decode_dir: Path, ref_path: Path, mode: str = "phone",
                     n_boot: int = 1000, seed: int = 0) -> SetScore | None:
    """Score the chosen hypotheses of ``decode_dir`` against ``ref_path`` (sclite counts)."""
    found = _chosen_hyp(decode_dir)
    if found is None or not ref_path.is_file():
        return None
    hyp_path, lmwt = found
    ref = read_text(ref_path)
    hyp = read_text(hyp_path)
    if mode == "phone":
        pm = load_phone_map()
        hyp = {u: fold39(t, pm) for u, t in hyp.items()}
        ref = {u: fold39(t, pm) for u, t in ref.items()}
    res = score(ref, hyp)
    ci = bootstrap_ci(res, n=n_boot, seed=seed)
    return SetScore(result=res, lmwt=lmwt, ci=ci, hyp=hyp, ref=ref)


def _checkpoint_of(sysdir: Path) -> str:
    """Which checkpoint produced a row (and what it was initialised from, when recorded)."""
    for name in ("final.pt", "final.mdl", "model.pt"):
        if (sysdir / name).is_file():
            ck = f"{sysdir.name}/{name}"
            break
    else:
        ck = sysdir.name
    cfg = sysdir / "config.json"
    if cfg.is_file():
        try:
            c = json.loads(cfg.read_text())
        except json.JSONDecodeError:
            c = {}
        for key in ("dbn", "init_dbn", "init", "model", "ali"):
            v = c.get(key)
            if isinstance(v, str) and v:
                ck += f" ({key}: {Path(v).name if key != 'ali' else Path(v).name})"
                break
    return ck


def collect_systems(exp: str | Path, mode: str = "phone", n_boot: int = 1000,
                    seed: int = 0) -> list[System]:
    """All systems of ``exp`` that have at least one scored decode dir, in stage order; a
    directory not in ``SYSTEMS`` that has decode dirs is added after them (kind "other")."""
    exp = Path(exp)
    out: list[System] = []
    known = {n for n, _, _ in SYSTEMS}
    extra = sorted(d.name for d in exp.iterdir() if d.is_dir() and d.name not in known
                   and ((d / "decode_dev").is_dir() or (d / "decode_test").is_dir())) if exp.is_dir() else []
    for name, label, kind in [*SYSTEMS, *((n, n, "other") for n in extra)]:
        sysdir = exp / name
        if not sysdir.is_dir():
            continue
        dev = score_decode_dir(sysdir / "decode_dev", _ref_path(exp, "dev", mode), mode, n_boot, seed)
        test = score_decode_dir(sysdir / "decode_test", _ref_path(exp, "test", mode), mode, n_boot, seed)
        if dev is None and test is None:
            continue
        out.append(System(name, label, kind, dev, test, _checkpoint_of(sysdir)))
    return out


def best_gmm(systems: list[System]) -> System | None:
    """The baseline row: the maximum-likelihood triphone GMM system with the lowest *dev*
    error (chosen on dev, never on test; discriminatively trained GMMs are not baselines);
    the monophone only if no triphone system exists."""
    tri = [s for s in systems if s.kind == "gmm" and s.name != "mono" and s.dev is not None]
    pool = tri or [s for s in systems if s.kind == "gmm" and s.dev is not None]
    if not pool:
        return None
    return min(pool, key=lambda s: s.dev.result.wer)


def best_of(systems: list[System], kinds: tuple[str, ...]) -> System | None:
    """The system of one of ``kinds`` with the lowest *dev* error that has a test score."""
    pool = [s for s in systems if s.kind in kinds and s.dev is not None and s.test is not None]
    return min(pool, key=lambda s: s.dev.result.wer) if pool else None


def read_utt2spk_of(exp: Path, set_name: str) -> dict[str, str] | None:
    """``EXP/data/<set>/utt2spk`` or None."""
    from asr.score import read_utt2spk

    p = Path(exp) / "data" / set_name / "utt2spk"
    return read_utt2spk(p) if p.is_file() else None
