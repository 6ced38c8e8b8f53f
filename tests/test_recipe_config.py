"""The typed recipe config (asr/recipe/config.py) and run.sh's skip-if-done logic (issue 15).

The rerun tests drive the real ``recipes/timit/run.sh`` in a fake checkout whose ``asr`` only
records its arguments, so they check which stages a changed setting reruns in seconds."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asr.nnet.sizing import units_for_hours
from asr.recipe.config import ConfigError, load_config, main, stage_options, stage_settings

TOP = Path(__file__).resolve().parents[1]
CONF = TOP / "recipes" / "timit" / "conf"


# ------------------------------------------------------------------------------ the config files
@pytest.mark.parametrize("name", ["tiny", "default", "timit", "full"])
def test_shipped_configs_load(name):
    cfg, files = load_config(CONF / f"{name}.yaml")
    assert files[-1] == (CONF / f"{name}.yaml").resolve()
    assert cfg.seed == 1 and cfg.jobs() >= 1


def test_full_inherits_timit_and_overrides_two_settings():
    full, files = load_config(CONF / "full.yaml")
    timit, _ = load_config(CONF / "timit.yaml")
    assert [f.name for f in files] == ["timit.yaml", "full.yaml"]
    assert full.corpus.size == "full" and full.dnn.units == 1024 and timit.dnn.units == "auto"
    assert full.seq == timit.seq and full.gmm == timit.gmm and full.bmmi == timit.bmmi


def test_default_config_passes_the_dev_chosen_settings():
    cfg, _ = load_config(CONF / "default.yaml")
    opts = stage_options(cfg)
    assert opts["seq"] == ["--seed", "1", "--epochs", "2", "--lr", "16", "--kappa", "0.2", "--ce-smoothing", "0"]
    assert opts["dbn"] == ["--layers", "4", "--units", "512", "--epochs", "8", "--seed", "1", "--precision", "float32"]
    assert opts["dnn"][-2:] == ["--precision", "float32"]
    assert opts["mono"] == ["--nj", "2", "--seed", "1", "--gauss", "1000"]
    assert opts["bmmi"] == ["--criterion", "bmmi", "--select-taus", "100,400", "--iters", "4", "--boost", "0.1"]


def test_unset_stage_settings_are_not_passed(tmp_path):
    """None means the stage's own default: the option is left out, so the stage's dataclass stays
    the only place that default lives."""
    f = tmp_path / "c.yaml"
    f.write_text("seed: 3\n")
    cfg, _ = load_config(f)
    opts = stage_options(cfg)
    assert opts["seq"] == ["--seed", "3"]
    assert opts["tri2"] == ["--nj", "2", "--seed", "3"]
    assert stage_settings(cfg, "tri2") == {"seed": 3, "nj": 2, "gmm": {"iters": None, "tri2_leaves": None,
                                                                       "tri2_gauss": None},
                                           "decode": {"beam": None, "lattice_beam": None}}
    assert opts["decode"] == []          # Kaldi's beams: nothing passed, the stages' hashes unchanged


def test_decode_beams_reach_every_decode_of_the_recipe(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("decode:\n  beam: 10\n  lattice_beam: 4\n")
    cfg, _ = load_config(f)
    assert stage_options(cfg)["decode"] == ["--beam", "10", "--lattice-beam", "4"]
    assert stage_settings(cfg, "dnn")["decode"] == {"beam": 10.0, "lattice_beam": 4.0}
    run_sh = (TOP / "recipes" / "timit" / "run.sh").read_text()
    # every decoding command of the recipe (and the dev decodes of the two selections) takes them
    for cmd in ("gmm decode", "dnn decode", "seq gmm-train"):
        lines = [ln for ln in run_sh.splitlines() if f'"$asr" {cmd}' in ln or f'$asr" {cmd}' in ln]
        assert lines, cmd
    assert run_sh.count('"${decode_opts[@]}"') >= 7


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("text,where", [
    ("seq:\n  lr: fast\n", "seq.lr: expected float or null"),
    ("seq:\n  learning_rate: 8\n", "seq.learning_rate: unknown setting"),
    ("gmm:\n  tri1_leaves: 0\n", "gmm.tri1_leaves: must be at least 1"),
    ("decode:\n  beam: 0\n", "decode.beam: must be positive"),
    ("decode:\n  lattice_beam: -2.5\n", "decode.lattice_beam: must be positive"),
    ("dnn:\n  feats: mfcc\n", "dnn.feats: must be one of fmllr, fbank"),
    ("dnn:\n  dropout: 1.0\n", "dnn.dropout: must be below 1"),
    ("dnn:\n  dropout: -0.1\n", "dnn.dropout: must be at least 0"),
    ("nj: many\n", "nj: expected an integer or 'auto'"),
    ("bmmi:\n  enabled: yes please\n", "bmmi.enabled: expected bool"),
    ("seq: 4\n", "seq: expected a mapping"),
    ("- 1\n", "a recipe config is a mapping"),
])
def test_bad_settings_name_the_file_and_the_key(tmp_path, text, where):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert str(f) in str(e.value) and where in str(e.value), str(e.value)


def test_precisions_reach_their_own_stage_and_rerun_exactly_those():
    base, _ = load_config(CONF / "default.yaml")
    ce, _ = load_config(CONF / "default.yaml", ["dnn.precision=bfloat16"])
    assert stage_options(ce)["dnn"][-2:] == ["--precision", "bfloat16"]
    assert stage_options(ce)["dbn"][-2:] == ["--precision", "float32"]
    assert stage_settings(ce, "dbn") == stage_settings(base, "dbn")      # CE's precision leaves the DBN alone
    assert stage_settings(ce, "dnn") != stage_settings(base, "dnn")
    pre, _ = load_config(CONF / "default.yaml", ["dnn.pretrain_precision=bfloat16"])
    assert stage_options(pre)["dbn"][-2:] == ["--precision", "bfloat16"]
    assert stage_options(pre)["dnn"][-2:] == ["--precision", "float32"]
    assert stage_settings(pre, "dbn")["dnn"]["pretrain_precision"] == "bfloat16"
    assert stage_settings(pre, "dbn") != stage_settings(base, "dbn")
    for key in ("dnn.precision", "dnn.pretrain_precision"):
        with pytest.raises(ConfigError, match=key):
            load_config(CONF / "default.yaml", [f"{key}=half"])


def test_dropout_reaches_the_ce_stages_only_when_set():
    cfg, _ = load_config(CONF / "default.yaml", ["dnn.dropout=0.2"])
    opts = stage_options(cfg)["dnn"]
    assert opts[opts.index("--dropout") + 1] == "0.2"
    cfg, _ = load_config(CONF / "default.yaml")
    assert "--dropout" not in stage_options(cfg)["dnn"]   # unset: the stage hash of earlier runs holds


def test_speed_perturbation_reaches_stage_9_and_the_ce_stages(fake_top, tmp_path):
    cfg, _ = load_config(CONF / "default.yaml", ["dnn.speed_perturb=[0.9, 1.1]"])
    assert cfg.dnn.speed_perturb == [0.9, 1.1]
    for bad in ("[1.0]", "[0.9, 0.9]", "[3]"):
        with pytest.raises(ConfigError, match="speed_perturb"):
            load_config(CONF / "default.yaml", [f"dnn.speed_perturb={bad}"])
    with pytest.raises(ConfigError, match="needs dnn.feats: fmllr"):
        load_config(CONF / "default.yaml", ["dnn.speed_perturb=[0.9]", "dnn.feats=fbank"])
    config = tmp_path / "sp.yaml"
    config.write_text(f"inherit: {fake_top / 'recipes' / 'timit' / 'conf' / 'default.yaml'}\n"
                      "dnn:\n  speed_perturb: [0.9, 1.1]\n")
    exp = tmp_path / "exp"
    _, calls = _stages_run(fake_top, exp, config)
    sp = exp / "data" / "sp"
    for f in ("0.9", "1.1"):
        assert f"asr data perturb {exp}/data/train {sp}/train_sp{f} --speed {f}" in calls
        assert f"asr gmm align --model {exp}/tri3 --data {sp}/train_sp{f} --out {sp}/ali_sp{f}" in calls
    extra = (f"--extra-data {sp}/fmllr_sp0.9 --extra-ali {sp}/ali_sp0.9 "
             f"--extra-data {sp}/fmllr_sp1.1 --extra-ali {sp}/ali_sp1.1")
    ce = [c for c in calls if c.startswith("asr dnn train")]
    assert len(ce) == 2 and all(extra in c for c in ce)
    assert not any("--extra" in c for c in calls if c.startswith(("asr dnn pretrain", "asr seq")))
    # seq.speed_perturb: the sequence stage makes each copy's lattices and trains on the copies too
    with pytest.raises(ConfigError, match="seq.speed_perturb"):
        load_config(CONF / "default.yaml", ["seq.speed_perturb=true"])
    config.write_text(config.read_text() + "seq:\n  speed_perturb: true\n")
    _, calls = _stages_run(fake_top, exp, config)
    for f in ("0.9", "1.1"):
        assert any(c.startswith(f"asr seq lattices --model {exp}/dnn --graph {exp}/tri3/graph --data {sp}/fmllr_sp{f} "
                                f"--ali {sp}/ali_sp{f} --out {exp}/dnn_denlats_sp{f}") for c in calls), calls
    seq = [c for c in calls if c.startswith("asr seq train")]
    assert len(seq) == 1
    assert (f"--extra-data {sp}/fmllr_sp0.9 --extra-ali {sp}/ali_sp0.9 --extra-lattices {exp}/dnn_denlats_sp0.9 "
            f"--extra-data {sp}/fmllr_sp1.1 --extra-ali {sp}/ali_sp1.1 --extra-lattices {exp}/dnn_denlats_sp1.1") in seq[0]
    assert not any(c.startswith(("asr dnn pretrain", "asr dnn train")) for c in calls)   # stages 10-12 kept


def test_overrides_beat_the_file_and_are_checked(tmp_path):
    cfg, _ = load_config(CONF / "default.yaml", ["seq.lr=8", "nj=4", "dnn.units=auto"])
    assert cfg.seq.lr == 8.0 and cfg.nj == 4 and cfg.dnn.units == "auto" and cfg.seq.kappa == 0.2
    with pytest.raises(ConfigError, match=r"--set seq\.lr=x: seq\.lr: expected float"):
        load_config(CONF / "default.yaml", ["seq.lr=x"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(CONF / "default.yaml", ["seq.lr"])


def test_shell_configs_and_inherit_loops_are_refused(tmp_path):
    sh = tmp_path / "old.sh"
    sh.write_text("seed=1\n")
    with pytest.raises(ConfigError, match="recipe configs are YAML"):
        load_config(sh)
    (tmp_path / "a.yaml").write_text("inherit: b.yaml\n")
    (tmp_path / "b.yaml").write_text("inherit: a.yaml\n")
    with pytest.raises(ConfigError, match="inherit loop"):
        load_config(tmp_path / "a.yaml")


def test_cli_writes_the_resolved_config_and_one_file_per_stage(tmp_path, capsys):
    assert main(["--config", str(CONF / "full.yaml"), "--set", "seq.lr=8", "--shell",
                 "--write-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "seq_opts=(--seed 1 --epochs 2 --lr 8 --kappa 0.2 --ce-smoothing 0)" in out
    resolved = yaml.safe_load((tmp_path / "resolved.yaml").read_text())
    assert resolved["seq"]["lr"] == 8.0 and resolved["corpus"]["size"] == "full"
    assert "timit.yaml <- " in (tmp_path / "resolved.yaml").read_text().splitlines()[0]
    assert yaml.safe_load((tmp_path / "dnn_mpe.yaml").read_text())["seq"]["lr"] == 8.0
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2


def test_auto_units_by_training_hours():
    assert units_for_hours(0.59) == 512 and units_for_hours(1.494) == 512
    assert units_for_hours(1.499) == 1024   # rounded to 1.50 h first, as the recipe always did
    assert units_for_hours(1.5) == 1024 and units_for_hours(3.1) == 1024


# ----------------------------------------------------- run.sh: a changed setting reruns its stages
STUB = """#!/bin/bash
echo "asr $*" >> "$STUB_LOG"
exit 0
"""


@pytest.fixture()
def fake_top(tmp_path) -> Path:
    """A checkout with the real run.sh, configs and asr package, whose `asr` command only logs."""
    top = tmp_path / "top"
    (top / "recipes" / "timit").mkdir(parents=True)
    shutil.copy(TOP / "recipes" / "timit" / "run.sh", top / "recipes" / "timit" / "run.sh")
    shutil.copytree(CONF, top / "recipes" / "timit" / "conf")
    (top / "asr").symlink_to(TOP / "asr")
    (top / ".venv" / "bin").mkdir(parents=True)
    (top / ".venv" / "bin" / "python").symlink_to(sys.executable)
    stub = top / ".venv" / "bin" / "asr"
    stub.write_text(STUB)
    stub.chmod(0o755)
    return top


def _stages_run(top: Path, exp: Path, config: Path, *extra: str) -> tuple[list[str], list[str]]:
    """Run the fake recipe; returns (names of the stages that ran, asr commands issued)."""
    log = exp.parent / "asr_calls.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "STUB_LOG": str(log), "PYTHONPATH": str(TOP)}
    r = subprocess.run(["bash", str(top / "recipes" / "timit" / "run.sh"), "--stage", "1", "--config", str(config),
                        "--exp", str(exp), *extra], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    ran = re.findall(r"stage \d+ \((\w+)\): finished", r.stderr)
    return ran, log.read_text().splitlines() if log.exists() else []


ALL = ["corpus", "data", "feats", "lang", "mono", "tri1", "tri2", "tri3", "fmllr", "dbn", "dnn", "dnn_rand",
       "dnn_mpe", "tri3_bmmi"]


@pytest.mark.parametrize("setting,reruns", [
    ("seq.lr: 4", ["dnn_mpe"]),
    ("bmmi.iters: 1", ["tri3_bmmi"]),
    ("dnn.dbn_epochs: 1", ["dbn", "dnn", "dnn_mpe"]),
    ("dnn.max_epochs: 2", ["dnn", "dnn_rand", "dnn_mpe"]),
    # stage 9's fmllr_sp makes the copies; the DBN reads only the original features and is kept
    ("dnn.speed_perturb: [0.9, 1.1]", ["fmllr_sp", "dnn", "dnn_rand", "dnn_mpe"]),
    ("gmm.tri2_gauss: 1500", ["tri2", "tri3", "fmllr", "dbn", "dnn", "dnn_rand", "dnn_mpe", "tri3_bmmi"]),
])
def test_changing_one_yaml_setting_reruns_exactly_the_stages_that_depend_on_it(fake_top, tmp_path, setting, reruns):
    config = tmp_path / "my.yaml"
    config.write_text("inherit: " + str(fake_top / "recipes" / "timit" / "conf" / "default.yaml") + "\n")
    exp = tmp_path / "exp"
    ran, calls = _stages_run(fake_top, exp, config)
    assert ran == ALL
    assert any(c.startswith("asr seq train") for c in calls)
    assert yaml.safe_load((exp / "tri3" / "stage_config.yaml").read_text())["gmm"]["tri3_leaves"] == 2500
    ran, _ = _stages_run(fake_top, exp, config)
    assert ran == []                                  # nothing changed: everything skipped
    key, value = setting.split(": ")
    section, name = key.split(".")
    config.write_text(config.read_text() + f"{section}:\n  {name}: {value}\n")
    ran, calls = _stages_run(fake_top, exp, config)
    assert ran == reruns
    # the stage's directory records the settings it ran with
    first = {"fmllr": exp / "data" / "fmllr", "fmllr_sp": exp / "data" / "sp"}.get(reruns[0], exp / reruns[0])
    stage_cfg = yaml.safe_load((first / "stage_config.yaml").read_text())
    assert stage_cfg[section][name] == yaml.safe_load(value)
