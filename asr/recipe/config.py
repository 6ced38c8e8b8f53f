"""Typed recipe configuration: one dataclass per group of stages, overridden by a YAML file.

A recipe config (``recipes/timit/conf/*.yaml``) is a small YAML mapping whose keys are the
fields below; a file may start with ``inherit: OTHER.yaml`` (relative to itself) to take that
file's values and override some. Command-line ``--set KEY=VALUE`` (``seq.lr=8``, ``nj=4``)
overrides the file. Every setting is checked against the field's type here, before any stage
runs, and an unknown key is an error naming the file and the key.

Where a setting belongs to one toolkit stage (``MonoConfig.total_gauss``, ``SeqTrainConfig.lr``,
...), the field here defaults to ``None``, meaning *that stage's default*: the option is then
not passed and the stage config's dataclass stays the only place its default lives. Fields
that exist only at the recipe level (which features feed the DNN, whether to realign before
sequence training, ...) have their defaults here.

``python -m asr.recipe.config --config FILE [--set K=V ...] --shell --write-dir DIR`` prints the
resolved settings as shell assignments for ``recipes/timit/run.sh`` (one option array per stage)
and writes ``DIR/resolved.yaml`` plus ``DIR/<stage>.yaml``, the settings each stage ran with,
which run.sh copies into the stage's directory. It imports no torch and runs in a
fraction of a second.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from asr.jobs.atomic import write_text_atomic


class ConfigError(ValueError):
    """A recipe config that cannot be used; the message names the file and the key."""


def _choice(*values: str) -> dict:
    return {"choices": values}


POSITIVE = {"min": 1}                           # field metadata: an integer value must be at least 1
COUNT_OR_AUTO = {"min": 1, "words": ("auto",)}  # ... or the word ``auto``


@dataclass
class CorpusSettings:
    """Stage 1 (``asr corpus synth``); not used when ``run.sh --corpus DIR`` is given."""

    size: str = field(default="default", metadata=_choice("tiny", "small", "default", "full"))


@dataclass
class GmmSettings:
    """Stages 5-8 (mono, tri1 deltas, tri2 LDA+MLLT, tri3 SAT). ``None``: the stage config's
    default (``asr.gmm.stages.MonoConfig`` / ``TriConfig``: Kaldi s5's 1000 Gaussians for mono,
    2500 leaves / 15000 Gaussians as caps for the triphone systems, each stage's iteration count)."""

    iters: int | None = field(default=None, metadata=POSITIVE)          # EM iterations of every GMM stage (realignments kept inside)
    mono_gauss: int | None = field(default=None, metadata=POSITIVE)
    tri1_leaves: int | None = field(default=None, metadata=POSITIVE)
    tri1_gauss: int | None = field(default=None, metadata=POSITIVE)
    tri2_leaves: int | None = field(default=None, metadata=POSITIVE)
    tri2_gauss: int | None = field(default=None, metadata=POSITIVE)
    tri3_leaves: int | None = field(default=None, metadata=POSITIVE)
    tri3_gauss: int | None = field(default=None, metadata=POSITIVE)


@dataclass
class DnnSettings:
    """Stages 9-12: DNN input features, DBN pretraining, CE fine-tuning (and the random-init
    ablation). ``None``: the defaults of ``asr dnn pretrain`` / ``asr dnn train``
    (``PretrainConfig``, ``CETrainConfig``: Kaldi's TIMIT recipe, 6 x 1024, up to 20 epochs)."""

    feats: str = field(default="fmllr", metadata=_choice("fmllr", "fbank"))  # fmllr: tri3 LDA+MLLT+fMLLR (Kaldi)
    layers: int | None = field(default=None, metadata=POSITIVE)
    units: int | str | None = field(default=None, metadata=COUNT_OR_AUTO)   # an integer or "auto" (by training hours: asr.nnet.sizing)
    dbn_epochs: int | None = field(default=None, metadata=POSITIVE)    # CD-1 epochs per Bernoulli RBM (the Gaussian one gets twice as many)
    max_epochs: int | None = field(default=None, metadata=POSITIVE)    # CE epochs cap (newbob stops earlier)
    dropout: float | None = field(default=None, metadata={"min": 0, "below": 1})   # CE hidden-unit dropout (None/0: off, as Kaldi nnet1)
    # matrix products of CE training (stages 11-12) and of DBN pretraining (stage 10), each:
    # float32 | bfloat16 (mixed: float32 parameters) | auto (bfloat16 where the CPU/GPU has it in
    # hardware, float32 elsewhere; asr.jobs.device). Two settings because they differ on dev (README,
    # "Mixed precision", three seeds): bfloat16 CE 1-8 errors behind float32, bfloat16 CD-1 12-26 more
    precision: str = field(default="float32", metadata=_choice("auto", "float32", "bfloat16"))
    pretrain_precision: str = field(default="float32", metadata=_choice("auto", "float32", "bfloat16"))
    random_init_ablation: bool = True  # stage 12: the same network from random weights
    # speed factors of perturbed copies of the training audio joined to CE training (stages 11-12), e.g.
    # [0.9, 1.1] (Ko et al. 2015); made, aligned by tri3 (fMLLR per copy-speaker) and adapted in stage 9
    speed_perturb: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        bad = [f for f in self.speed_perturb if not 0.5 <= f <= 2.0 or f == 1.0]
        if bad or len(set(self.speed_perturb)) != len(self.speed_perturb):
            raise ConfigError(f"dnn.speed_perturb: distinct factors in [0.5, 2] other than 1, got {self.speed_perturb}")
        if self.speed_perturb and self.feats != "fmllr":
            raise ConfigError("dnn.speed_perturb needs dnn.feats: fmllr (perturbed fbank copies are not made)")


@dataclass
class SeqSettings:
    """Stage 13: sequence-discriminative training of the CE DNN. ``den``: ``lattice`` (denominator
    lattices of the CE model) or ``pdf-bigram`` (lattice-free; not for ``mpe``). ``realign`` and
    ``den_lm_order: 1`` are Kaldi's ``train_mpe.sh`` set-up (realign with the CE DNN, unigram
    lattices). ``None``: ``asr.seqtrain.SeqTrainConfig``'s default."""

    criterion: str = field(default="mpe", metadata=_choice("mpe", "mpfe", "smbr", "mmi", "bmmi"))
    den: str = field(default="lattice", metadata=_choice("lattice", "pdf-bigram"))
    lattice_beam: float = 6.0         # also the beam of stage 14's GMM lattices
    realign: bool = False
    den_lm_order: int = field(default=2, metadata=_choice(1, 2))
    epochs: int | None = field(default=None, metadata=POSITIVE)
    lr: float | None = None
    kappa: float | None = None
    ce_smoothing: float | None = None
    utts_per_epoch: int | None = field(default=None, metadata={"min": 0}) # a random subset per epoch (None: all)
    select_epoch: bool = True         # the epoch (0 = the CE model) chosen on dev (asr.seqtrain.select)
    # train on dnn.speed_perturb's copies too (their own denominator lattices, and realignment with realign)
    speed_perturb: bool = False


@dataclass
class BmmiSettings:
    """Stage 14: tri3 + boosted MMI by extended Baum-Welch (the like-for-like discriminative GMM).
    ``taus``: I-smoothing constants tried, tau and iteration chosen on dev. ``None``:
    ``asr.seqtrain.GmmSeqConfig``'s default (Kaldi ``train_mmi.sh``)."""

    enabled: bool = True
    taus: list[int] = field(default_factory=lambda: [100, 400])
    iters: int | None = field(default=None, metadata=POSITIVE)
    boost: float | None = None


@dataclass
class DecodeSettings:
    """The lattice search of every decode of the recipe (dev and test of each system, the dev decodes
    that choose sequence training's epoch and bMMI's τ; not the denominator lattices, whose beam is
    ``seq.lattice_beam``). ``None``: ``asr.decode.DecodeConfig``'s defaults (Kaldi ``decode.sh``:
    beam 13, lattice beam 6)."""

    beam: float | None = field(default=None, metadata={"positive": True})
    lattice_beam: float | None = field(default=None, metadata={"positive": True})


@dataclass
class RecipeConfig:
    """Everything ``recipes/timit/run.sh`` lets a config choose. ``nj``: parallel jobs (an
    integer, or ``auto`` for the number of cores)."""

    seed: int = 1
    nj: int | str = field(default=2, metadata=COUNT_OR_AUTO)
    corpus: CorpusSettings = field(default_factory=CorpusSettings)
    gmm: GmmSettings = field(default_factory=GmmSettings)
    dnn: DnnSettings = field(default_factory=DnnSettings)
    seq: SeqSettings = field(default_factory=SeqSettings)
    bmmi: BmmiSettings = field(default_factory=BmmiSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)

    def __post_init__(self) -> None:
        if self.seq.speed_perturb and not self.dnn.speed_perturb:
            raise ConfigError("seq.speed_perturb: true needs the copies of dnn.speed_perturb (empty)")

    def jobs(self) -> int:
        """``nj`` resolved: ``auto`` is the number of cores this process may run on."""
        if self.nj != "auto":
            return int(self.nj)
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1


# ------------------------------------------------------------------------- reading and checking
def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def _check_value(f: dataclasses.Field, value: Any, hints: dict, where: str) -> Any:
    tp = hints[f.name]
    if not _type_ok(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    words = f.metadata.get("words")
    if words is not None and isinstance(value, str) and value not in words:
        raise ConfigError(f"{where}: expected an integer or {' / '.join(map(repr, words))}, got {value!r}")
    low = f.metadata.get("min")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if low is not None and number and value < low:
        raise ConfigError(f"{where}: must be at least {low}, got {value}")
    below = f.metadata.get("below")
    if below is not None and number and value >= below:
        raise ConfigError(f"{where}: must be below {below}, got {value}")
    if f.metadata.get("positive") and isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
        raise ConfigError(f"{where}: must be positive, got {value}")
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: must be one of {', '.join(map(str, choices))}; got {value!r}")
    if tp is float or (typing.get_origin(tp) in (typing.Union, types.UnionType) and float in typing.get_args(tp)):
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    return value


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _build(cls: type, data: dict, source: str, prefix: str = "") -> Any:
    """An instance of dataclass ``cls`` from the mapping ``data`` (missing keys: defaults)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        where = f"{source}: {prefix}{key}"
        if key not in fields:
            known = ", ".join(prefix + k for k in fields)
            raise ConfigError(f"{where}: unknown setting (known: {known})")
        f = fields[key]
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a mapping of {hints[key].__name__} settings, got {value!r}")
            kwargs[key] = _build(hints[key], value, source, f"{prefix}{key}.")
        else:
            kwargs[key] = _check_value(f, value, hints, where)
    return cls(**kwargs)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, list[Path]]:
    """The mapping of ``path`` with its ``inherit:`` chain merged in; the files read, base first."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: inherit loop ({' -> '.join(map(str, seen + (path,)))})")
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"{path}: recipe configs are YAML files (recipes/timit/conf/*.yaml); "
                          f"the shell configs (*.sh) of earlier versions map one-to-one onto their keys")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe config is a mapping of settings, got {type(data).__name__}")
    parent = data.pop("inherit", None)
    files = [path]
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError(f"{path}: inherit: expected a file name, got {parent!r}")
        base, base_files = _read_yaml(path.parent / parent, seen + (path,))
        _build(RecipeConfig, base, str(base_files[-1]))  # the base must be valid on its own
        data, files = _merge(base, data), base_files + files
    return data, files


def parse_override(text: str) -> dict:
    """``a.b=VALUE`` -> ``{"a": {"b": VALUE}}`` with VALUE read as YAML (``8`` an int, ``true`` a bool)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text}: expected KEY=VALUE (e.g. seq.lr=8)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text}: value is not valid YAML: {e}") from None
    out: dict = value
    for part in reversed(key.strip().split(".")):
        out = {part: out}
    return out


def load_config(path: str | Path, overrides: list[str] = ()) -> tuple[RecipeConfig, list[Path]]:
    """The config of ``path`` (its ``inherit`` chain merged in) with ``--set`` overrides applied.
    Returns the config and the files it was read from (base first)."""
    data, files = _read_yaml(Path(path))
    cfg = _build(RecipeConfig, data, str(files[-1]))
    for text in overrides:
        data = _merge(data, parse_override(text))
        cfg = _build(RecipeConfig, data, f"--set {text}")
    return cfg, files


# ---------------------------------------------------------------------------- stage options
def _flags(**kv: Any) -> list[str]:
    """``--key value`` for each setting that is not None (None: the stage's own default)."""
    out = []
    for k, v in kv.items():
        if v is not None:
            out += [f"--{k.replace('_', '-')}", _fmt(v)]
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, list):
        return ",".join(_fmt(x) for x in v)
    return str(v)


def stage_options(cfg: RecipeConfig) -> dict[str, list[str]]:
    """The command-line options each stage passes to its ``asr`` command (run.sh's arrays)."""
    g, d, s, b = cfg.gmm, cfg.dnn, cfg.seq, cfg.bmmi
    nj = cfg.jobs()
    gmm = _flags(nj=nj, seed=cfg.seed, iters=g.iters)
    return {
        "corpus": _flags(size=cfg.corpus.size, seed=cfg.seed, nj=nj),
        "mono": gmm + _flags(gauss=g.mono_gauss),
        "tri1": gmm + _flags(leaves=g.tri1_leaves, gauss=g.tri1_gauss),
        "tri2": gmm + _flags(leaves=g.tri2_leaves, gauss=g.tri2_gauss),
        "tri3": gmm + _flags(leaves=g.tri3_leaves, gauss=g.tri3_gauss),
        "dbn": _flags(layers=d.layers, units=d.units, epochs=d.dbn_epochs, seed=cfg.seed,
                     precision=d.pretrain_precision),
        "dnn": _flags(layers=d.layers, units=d.units, max_epochs=d.max_epochs, dropout=d.dropout, seed=cfg.seed,
                      precision=d.precision),
        "seq": _flags(seed=cfg.seed, epochs=s.epochs, lr=s.lr, kappa=s.kappa, ce_smoothing=s.ce_smoothing,
                      utts_per_epoch=s.utts_per_epoch),
        "bmmi": ["--criterion", "bmmi"] + _flags(select_taus=b.taus, iters=b.iters, boost=b.boost),
        "decode": _flags(beam=cfg.decode.beam, lattice_beam=cfg.decode.lattice_beam),
    }


# which settings each stage reads (written to the stage's directory as the config it ran with)
STAGE_SETTINGS = {
    "corpus": ("seed", "nj", "corpus"), "mono": ("seed", "nj", "gmm.iters", "gmm.mono_gauss", "decode"),
    **{f"tri{k}": ("seed", "nj", "gmm.iters", f"gmm.tri{k}_leaves", f"gmm.tri{k}_gauss", "decode") for k in (1, 2, 3)},
    "fmllr": ("dnn.feats",), "fmllr_sp": ("dnn.speed_perturb",), "dbn": ("seed", "dnn.feats", "dnn.layers", "dnn.units", "dnn.dbn_epochs",
                                                                                "dnn.pretrain_precision"),
    "dnn": ("seed", "dnn", "decode"), "dnn_rand": ("seed", "dnn", "decode"), "seq": ("seed", "nj", "seq", "decode"),
    "tri3_bmmi": ("nj", "seq.lattice_beam", "bmmi", "decode"),
}


def stage_settings(cfg: RecipeConfig, stage: str) -> dict:
    """The resolved settings ``stage`` reads, as a nested mapping (None: the stage's default)."""
    full = dataclasses.asdict(cfg)
    out: dict = {}
    for key in STAGE_SETTINGS[stage]:
        parts = key.split(".")
        value = full
        for p in parts:
            value = value[p]
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    if "nj" in out:
        out["nj"] = cfg.jobs()
    return out


def shell_assignments(cfg: RecipeConfig) -> str:
    """Bash assignments of the recipe-level choices and one option array per stage."""
    scalars = {
        "seed": cfg.seed, "nj": cfg.jobs(), "corpus_size": cfg.corpus.size, "dnn_feats": cfg.dnn.feats,
        "dnn_rand_ablation": cfg.dnn.random_init_ablation, "dnn_speed_perturb": " ".join(map(_fmt, cfg.dnn.speed_perturb)), "seq_criterion": cfg.seq.criterion,
        "seq_den": cfg.seq.den, "seq_lattice_beam": cfg.seq.lattice_beam, "seq_realign": cfg.seq.realign,
        "seq_den_lm_order": cfg.seq.den_lm_order, "seq_select_epoch": cfg.seq.select_epoch,
        "seq_speed_perturb": cfg.seq.speed_perturb,
        "gmm_bmmi": cfg.bmmi.enabled,
    }
    lines = [f"{k}={shlex.quote(_fmt(v))}" for k, v in scalars.items()]
    for stage, opts in stage_options(cfg).items():
        lines.append(f"{stage}_opts=({' '.join(shlex.quote(o) for o in opts)})")
    return "\n".join(lines) + "\n"


def to_yaml(data: dict, header: str = "") -> str:
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def write_resolved(cfg: RecipeConfig, files: list[Path], overrides: list[str], out_dir: str | Path) -> None:
    """``out_dir/resolved.yaml`` (the whole config) and ``out_dir/<stage>.yaml`` per stage."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = "# resolved recipe config, from " + " <- ".join(map(str, files))
    header += "".join(f" --set {o}" for o in overrides) + "\n"
    write_text_atomic(out_dir / "resolved.yaml", to_yaml(dataclasses.asdict(cfg), header))
    for stage in STAGE_SETTINGS:
        name = f"dnn_{cfg.seq.criterion}" if stage == "seq" else stage  # stage 13's directory name
        write_text_atomic(out_dir / f"{name}.yaml", to_yaml(stage_settings(cfg, stage),
                                                          f"# settings of stage {name} (null: the stage's default)\n"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asr.recipe.config", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="recipe config (YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting (repeatable), e.g. --set seq.lr=8")
    p.add_argument("--shell", action="store_true", help="print bash assignments for run.sh")
    p.add_argument("--write-dir", default=None, help="write resolved.yaml and <stage>.yaml here")
    args = p.parse_args(argv)
    try:
        cfg, files = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.write_dir:
        write_resolved(cfg, files, args.overrides, args.write_dir)
    if args.shell:
        sys.stdout.write(shell_assignments(cfg))
    else:
        sys.stdout.write(to_yaml(dataclasses.asdict(cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
