"""Stage runners ``mono`` / ``tri1`` / ``tri2`` / ``tri3``: read directories, train with
:mod:`asr.gmm.train` (transforms from :mod:`asr.gmm.adapt`), write a self-contained ``exp/<name>/``
(:mod:`asr.gmm.system`; Kaldi ``steps/train_*.sh``).

``exp/<name>/``: ``final.pt`` (topology, context dependency, transition model, GMMs, feature
pipeline incl. LDA+MLLT matrix), ``trans.pt`` (tri3: fMLLR per training speaker),
``ali_pdf.ark`` / ``ali_phone.ark`` / ``ali_state.ark`` (Kaldi int vectors), ``log/train.log``
(one JSON record per iteration), ``log/failed_utts.txt``, ``config.json`` and ``.done``.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from asr.gmm.adapt import estimate_alignment_model, estimate_lda_matrix, estimate_speaker_fmllr, mllt_step
from asr.gmm.model import DiagGmmSet
from asr.gmm.pipeline import FeaturePipeline
from asr.gmm.system import (
    GmmSystem, TrainData, gmm_device, load_system, load_train_data, one_thread, phone_ids, read_alignments,
    write_alignments,
)
from asr.gmm.train import (
    JobRunner, TrainConfig, TrainState, build_tree_from_alignment, init_gmm_from_alignment, mono_init,
    silence_weights, train_viterbi, utterance_chains,
)
from asr.hmm import Topology, TransitionModel
from asr.jobs.atomic import write_text_atomic
from asr.jobs.safeio import save_data
from asr.jobs.stage import finished, mark_done


# ------------------------------------------------------------------------------------ configs
@dataclass
class MonoConfig(TrainConfig):
    """``train_mono.sh``: flat start, realign often early, mix up to ``total_gauss``; the final
    alignment boosts silence by 1.25 (the TIMIT recipe's ``align_si.sh --boost-silence 1.25``)."""

    num_iters: int = 40
    realign_iters: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 35, 38)
    total_gauss: int = 1000
    max_iter_inc: int = 30
    final_boost_silence: float = 1.25


@dataclass
class TriConfig(TrainConfig):
    """``train_deltas.sh`` (tri1): new tree from the previous alignment, then 35 iterations.

    ``num_leaves`` / ``total_gauss`` are caps: the tree stops splitting when the best likelihood
    gain is below ``tree_thresh`` (Kaldi ``build-tree --thresh``, 300), then merges leaves that
    cost less than ``cluster_thresh`` (-1: the smallest split gain); mixing up stops at
    ``split_min_count`` frames per Gaussian. On a small corpus both stop below the caps, as
    Kaldi's tree stopped at 734 of 2500 leaves on 0.59 h."""

    num_iters: int = 35
    realign_iters: tuple[int, ...] = (10, 20, 30)
    total_gauss: int = 15000
    max_iter_inc: int = 25
    num_leaves: int = 2500
    tree_thresh: float = 300.0
    cluster_thresh: float = -1.0
    tree_min_count: float = 0.0


@dataclass
class LdaMlltConfig(TriConfig):
    """``train_lda_mllt.sh`` (tri2): splice +-``context`` (3 in the TIMIT recipe), LDA to
    ``lda_dim``, MLLT on ``mllt_iters``."""

    context: int = 3
    lda_dim: int = 40
    mllt_iters: tuple[int, ...] = (2, 4, 6, 12)


@dataclass
class SatConfig(TriConfig):
    """``train_sat.sh`` (tri3): per-speaker fMLLR (silence frames weighted
    ``fmllr_silence_weight``) re-estimated on ``fmllr_iters``; mixing-up power 0.2. At the end
    the speaker-independent alignment model (Kaldi ``final.alimdl``: the SAT Gaussians
    re-estimated on unadapted features) is estimated for the first decoding pass."""

    power: float = 0.2
    fmllr_iters: tuple[int, ...] = (2, 4, 6, 12)
    fmllr_update_iters: int = 10
    fmllr_silence_weight: float = 0.0
    fmllr_min_count: float = 50.0
    align_fmllr: bool = False
    """Finish as Kaldi's TIMIT recipe runs ``align_fmllr.sh exp/tri3 exp/tri3_ali`` before the DNN
    and boosted MMI: every training speaker's transform estimated afresh for the *final* model
    (Gaussian posteriors from an alignment of the unadapted features by the alignment model,
    silence weighted 0), then the final alignment on the features it gives; ``trans.pt`` and the
    alignments (the DNN's training inputs and targets) are those. Off (``asr gmm tri3
    --align-fmllr`` turns it on): the transforms of the last SAT re-estimation (iteration 12) and
    the final model's alignment on them. tri3 itself is the same either way. Measured on dev
    (same seeds, only the training transforms and alignments differ; 0.5-1 % of the frames
    realigned): seed-23 corpus 6 x 512 CE from the same DBN 1385 -> 1369 errors, random init
    1387 -> 1376; default corpus 4 x 512 random init 828 -> 845: within noise, so not the default."""


STAGE_CONFIGS = {"mono": MonoConfig, "tri1": TriConfig, "tri2": LdaMlltConfig, "tri3": SatConfig}
PREVIOUS = {"tri1": "mono", "tri2": "tri1", "tri3": "tri2"}


def _check_previous(prev_dir: Path | None, stage: str) -> Path:
    want = PREVIOUS[stage]
    if prev_dir is None:
        raise ValueError(f"`asr gmm {stage}` needs --ali pointing at a finished `{want}` stage")
    if not finished(prev_dir) or not (prev_dir / "final.pt").is_file():
        raise FileNotFoundError(f"{prev_dir} is not a finished stage (no .done / final.pt): run "
                                f"`asr gmm {want} --out {prev_dir} ...` first")
    return prev_dir


class _Logger:
    """Per-iteration records of ``train_viterbi`` to ``OUT/log/train.log`` (JSON lines) and a
    progress bar on stderr (the algorithm itself draws nothing)."""

    def __init__(self, out: Path, desc: str, total: int) -> None:
        (out / "log").mkdir(parents=True, exist_ok=True)
        self.path = out / "log" / "train.log"
        self.path.write_text("")
        self.desc, self.total, self.bar = desc, total, None

    def __call__(self, rec: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if "loglike_per_frame" in rec:     # one EM iteration done (hooks log other records)
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=self.total, desc=self.desc, unit="iter", dynamic_ncols=True, mininterval=1.0)
            self.bar.update(1)
            if rec["iter"] + 1 >= self.total:
                self.bar.close()


def _finish(out: Path, stage: str, state: TrainState, pipeline: FeaturePipeline, data: TrainData,
            alis: dict[str, Tensor], failed: list[str], silence: int, cfg_dict: dict,
            fmllr: dict[str, Tensor] | None = None, si_model: str | None = None,
            ali_gmm: DiagGmmSet | None = None, fmllr_kept: list[str] | None = None) -> GmmSystem:
    sys_ = GmmSystem(state.topo, state.ctx, state.trans, state.gmm.to("cpu"), pipeline, stage, [silence],
                     fmllr, si_model, out, None if ali_gmm is None else ali_gmm.to("cpu"))
    chains = utterance_chains({u: data.phones[u] for u in alis}, state.ctx, state.topo)
    write_alignments(out, data.phones, alis, chains, state.topo)
    if fmllr is not None:
        save_data(fmllr, out / "trans.pt")
    save_data(sys_.to_dict(), out / "final.pt")
    bad = sorted(set(failed) | set(data.skipped))
    write_text_atomic(out / "log" / "failed_utts.txt", "".join(f"{u}\n" for u in bad))
    from asr.jobs.stage import write_counts

    counts = {"skipped_utts": bad}
    if fmllr is not None:
        counts["fmllr_identity_speakers"] = sorted(set(data.utt2spk.values()) - set(fmllr))
        counts["fmllr_kept_previous"] = sorted(fmllr_kept or [])
    write_counts(out, counts)
    if bad:
        print(f"asr gmm {stage}: {len(bad)} utterance(s) skipped (could not be aligned or no valid "
              f"transcript), listed in {out / 'log' / 'failed_utts.txt'}: {', '.join(bad[:5])}"
              + (" ..." if len(bad) > 5 else ""))
    write_text_atomic(out / "config.json", json.dumps(cfg_dict, indent=1, default=str) + "\n")
    mark_done(out, cfg_dict)
    return sys_


def _start(out: Path) -> None:
    from asr.jobs.stage import clear_done

    out.mkdir(parents=True, exist_ok=True)
    clear_done(out)


# ------------------------------------------------------------------------------------ stages
@one_thread
def run_mono(data_dir: str | Path, lang_dir: str | Path, out_dir: str | Path, cfg: MonoConfig | None = None,
             nj: int = 1, seed: int = 0, device: str | None = None) -> GmmSystem:
    """Monophone training (Kaldi ``train_mono.sh``) on CMN'd MFCC + deltas."""
    cfg = cfg or MonoConfig()
    out = Path(out_dir)
    _check_lang(lang_dir)
    dev = gmm_device(device, nj)
    _start(out)
    data = load_train_data(data_dir)
    pipeline = FeaturePipeline("delta", raw_dim=next(iter(data.raw.values())).shape[1])
    feats = {u: pipeline.apply(x) for u, x in data.raw.items()}
    _, sil = phone_ids()
    topo = Topology(max(phone_ids()[0].values()))
    state = mono_init(feats, topo)
    state.gmm = state.gmm.to(dev)
    gen = torch.Generator().manual_seed(seed)
    runner = JobRunner(data.utt2spk, nj, dev, log_dir=out / "log", work_dir=out)
    res = train_viterbi(feats, data.phones, state, cfg, runner, gen, log=_Logger(out, "mono", cfg.num_iters),
                        silence=[sil])
    return _finish(out, "mono", res.state, pipeline, data, res.alis, res.failed,
                   sil, _cfg_dict("mono", cfg, data_dir, lang_dir, None, seed))


def _cfg_dict(stage: str, cfg, data_dir, lang_dir, ali_dir, seed) -> dict:
    return {"stage": stage, "data": str(data_dir), "lang": str(lang_dir),
            "ali": None if ali_dir is None else str(ali_dir), "seed": seed, **asdict(cfg)}


def _check_lang(lang_dir: str | Path) -> None:
    """The lang dir must use this model's phone set (phones.txt lists all 48 phones)."""
    p = Path(lang_dir) / "phones.txt"
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: build the lang dir with `asr lang phones|words` first")
    have = {line.split()[0] for line in p.read_text().splitlines() if line.split()}
    miss = sorted(set(phone_ids()[0]) - have)
    if miss:
        raise ValueError(f"{p}: phone set differs from the model phone set (missing {miss[:5]})")


def _tri_common(data_dir, lang_dir, ali_dir, out_dir, stage: str, cfg: TriConfig, nj: int, seed: int,
                device: str | None):
    prev = _check_previous(Path(ali_dir) if ali_dir else None, stage)
    _check_lang(lang_dir)
    psys = load_system(prev)
    dev = gmm_device(device, nj)
    out = Path(out_dir)
    _start(out)
    data = load_train_data(data_dir, raw_dim=psys.pipeline.raw_dim)
    alis, missing = read_alignments(prev, data.phones, psys.topo)
    data.skipped += missing
    for u in missing:          # no alignment from the previous stage: skipped (and listed)
        for table in (data.phones, data.raw, data.utt2spk):
            table.pop(u, None)
    return psys, dev, out, data, alis


def _new_tree_state(feats, data: TrainData, alis, topo: Topology, cfg: TriConfig, sil: int, dev,
                    log: Callable[[dict], None] | None = None) -> TrainState:
    ctx, facts = build_tree_from_alignment(feats, data.phones, alis, topo, cfg.num_leaves, [sil], cfg.tree_thresh,
                                           cfg.cluster_thresh, cfg.tree_min_count)
    if log is not None:
        log({"tree": facts})
    chains = utterance_chains(data.phones, ctx, topo)
    gmm = init_gmm_from_alignment(feats, chains, alis, ctx.num_pdfs, cfg.min_var)
    trans = TransitionModel(ctx.num_pdfs)
    trans.update([chains[u][a] for u, a in sorted(alis.items())], [a for _, a in sorted(alis.items())])
    return TrainState(topo, ctx, trans, gmm.to(dev))


@one_thread
def run_tri1(data_dir, lang_dir, ali_dir, out_dir, cfg: TriConfig | None = None, nj: int = 1, seed: int = 0,
             device: str | None = None) -> GmmSystem:
    """Tree-tied triphones on deltas (Kaldi ``train_deltas.sh``), tree from ``ali_dir``'s alignment."""
    cfg = cfg or TriConfig()
    psys, dev, out, data, alis = _tri_common(data_dir, lang_dir, ali_dir, out_dir, "tri1", cfg, nj, seed, device)
    pipeline = FeaturePipeline("delta", psys.pipeline.raw_dim)
    feats = {u: pipeline.apply(x) for u, x in data.raw.items()}
    sil = psys.silence[0]
    log = _Logger(out, "tri1", cfg.num_iters)
    state = _new_tree_state(feats, data, alis, psys.topo, cfg, sil, dev, log)
    runner = JobRunner(data.utt2spk, nj, dev, log_dir=out / "log", work_dir=out)
    res = train_viterbi(feats, data.phones, state, cfg, runner, torch.Generator().manual_seed(seed),
                        alis=alis, log=log, silence=[sil])
    return _finish(out, "tri1", res.state, pipeline, data, res.alis, res.failed, sil,
                   _cfg_dict("tri1", cfg, data_dir, lang_dir, ali_dir, seed))


@one_thread
def run_tri2(data_dir, lang_dir, ali_dir, out_dir, cfg: LdaMlltConfig | None = None, nj: int = 1, seed: int = 0,
             device: str | None = None) -> GmmSystem:
    """LDA+MLLT triphones (Kaldi ``train_lda_mllt.sh``): splice +-``cfg.context`` of the CMN'd MFCC, LDA to 40
    with pdf classes from ``ali_dir``'s alignment, new tree, MLLT on ``cfg.mllt_iters``."""
    cfg = cfg or LdaMlltConfig()
    psys, dev, out, data, alis = _tri_common(data_dir, lang_dir, ali_dir, out_dir, "tri2", cfg, nj, seed, device)
    sil = psys.silence[0]
    base = FeaturePipeline("delta", psys.pipeline.raw_dim, cfg.context)
    spliced = {u: base.spliced(x) for u, x in data.raw.items()}
    pchains = utterance_chains(data.phones, psys.ctx, psys.topo)
    weights = {u: silence_weights(data.phones[u], a, psys.topo, [sil]) for u, a in alis.items()}
    lda = estimate_lda_matrix(spliced, {u: pchains[u][a] for u, a in alis.items()}, weights, cfg.lda_dim)
    pipeline = base.with_matrix(lda)
    feats = {u: s @ lda.T for u, s in spliced.items()}
    log = _Logger(out, "tri2", cfg.num_iters)
    state = _new_tree_state(feats, data, alis, psys.topo, cfg, sil, dev, log)
    chains = utterance_chains(data.phones, state.ctx, state.topo)
    holder = {"pipeline": pipeline}

    def hook(it: int, st: TrainState, cur_alis: dict[str, Tensor]):
        if it not in cfg.mllt_iters:
            return None
        cur = {u: s @ holder["pipeline"].matrix.T for u, s in spliced.items()}
        A = mllt_step(st, cur, chains, cur_alis, weights)
        holder["pipeline"] = base.with_matrix(A @ holder["pipeline"].matrix)
        return {u: s @ holder["pipeline"].matrix.T for u, s in spliced.items()}

    runner = JobRunner(data.utt2spk, nj, dev, log_dir=out / "log", work_dir=out)
    res = train_viterbi(feats, data.phones, state, cfg, runner, torch.Generator().manual_seed(seed),
                        alis=alis, hook=hook, log=log, silence=[sil])
    return _finish(out, "tri2", res.state, holder["pipeline"], data, res.alis, res.failed, sil,
                   _cfg_dict("tri2", cfg, data_dir, lang_dir, ali_dir, seed))


@one_thread
def run_tri3(data_dir, lang_dir, ali_dir, out_dir, cfg: SatConfig | None = None, nj: int = 1, seed: int = 0,
             device: str | None = None) -> GmmSystem:
    """SAT (Kaldi ``train_sat.sh``): fMLLR per speaker on top of ``ali_dir``'s LDA+MLLT features,
    estimated first with the previous (speaker-independent) model, then re-estimated with the SAT
    model on ``cfg.fmllr_iters`` (silence frames weighted ``cfg.fmllr_silence_weight``); new tree
    on the fMLLR features; finally the alignment model for the first decoding pass."""
    cfg = cfg or SatConfig()
    psys, dev, out, data, alis = _tri_common(data_dir, lang_dir, ali_dir, out_dir, "tri3", cfg, nj, seed, device)
    if psys.pipeline.kind != "lda":
        raise ValueError(f"{ali_dir} is a {psys.stage} system on deltas: train tri3 on top of tri2 (LDA+MLLT)")
    sil = psys.silence[0]
    log = _Logger(out, "tri3", cfg.num_iters)
    pipeline = psys.pipeline
    base = {u: pipeline.apply(x) for u, x in data.raw.items()}

    def sil_weights(cur_alis: dict[str, Tensor]) -> dict[str, Tensor]:
        return {u: silence_weights(data.phones[u], a, psys.topo, [sil], cfg.fmllr_silence_weight)
                for u, a in cur_alis.items()}

    holder: dict = {}

    def estimate(gmm: DiagGmmSet, chains: dict[str, Tensor], cur_alis: dict[str, Tensor], it: int,
                 prev: dict[str, Tensor] | None) -> dict[str, Tensor]:
        skipped: list[str] = []
        fm = estimate_speaker_fmllr(gmm, base, {u: chains[u][a] for u, a in cur_alis.items()}, data.utt2spk,
                                    cfg.fmllr_update_iters, prev=prev, min_count=cfg.fmllr_min_count,
                                    frame_weights=sil_weights(cur_alis), skipped=skipped, nj=nj)
        log({"iter": it, "fmllr_speakers": len(fm), "fmllr_kept_previous": skipped})
        holder["kept"] = skipped
        _report_kept(f"iteration {it}", skipped, "singular statistics", "previous transform", cfg.fmllr_min_count)
        return fm

    pchains = utterance_chains(data.phones, psys.ctx, psys.topo)
    holder["fmllr"] = estimate(psys.gmm, pchains, alis, -1, None)

    def adapted() -> dict[str, Tensor]:
        return _speaker_adapted(base, holder["fmllr"], data.utt2spk)

    feats = adapted()
    state = _new_tree_state(feats, data, alis, psys.topo, cfg, sil, dev, log)
    chains = utterance_chains(data.phones, state.ctx, state.topo)

    def hook(it: int, st: TrainState, cur_alis: dict[str, Tensor]):
        if it not in cfg.fmllr_iters:
            return None
        holder["fmllr"] = estimate(st.gmm, chains, cur_alis, it, holder["fmllr"])
        return adapted()

    runner = JobRunner(data.utt2spk, nj, dev, log_dir=out / "log", work_dir=out)
    res = train_viterbi(feats, data.phones, state, cfg, runner, torch.Generator().manual_seed(seed),
                        alis=alis, hook=hook, log=log, silence=[sil])
    final = adapted()
    ali_gmm = estimate_alignment_model(res.state.gmm, final, base, {u: chains[u][a] for u, a in res.alis.items()},
                                       cfg.min_var)
    fmllr, alis, failed, kept = holder["fmllr"], res.alis, res.failed, holder.get("kept")
    if cfg.align_fmllr:
        fmllr, alis, failed, kept = align_fmllr(res.state, ali_gmm, base, data, chains, sil, cfg, fmllr, alis, failed,
                                                runner)
        log({"align_fmllr": True, "fmllr_speakers": len(fmllr), "fmllr_kept_previous": kept})
        _report_kept("align_fmllr", kept, "singular statistics or no aligned utterance", "training transform",
                     cfg.fmllr_min_count)
    return _finish(out, "tri3", res.state, pipeline, data, alis, failed, sil,
                   _cfg_dict("tri3", cfg, data_dir, lang_dir, ali_dir, seed), fmllr=fmllr,
                   si_model=str(Path(ali_dir).resolve()), ali_gmm=ali_gmm, fmllr_kept=kept)


def _speaker_adapted(feats: dict[str, Tensor], fmllr: dict[str, Tensor], utt2spk: dict[str, str]
                     ) -> dict[str, Tensor]:
    """Each utterance's features through its speaker's fMLLR (unchanged for a speaker without one)."""
    from asr.transforms import apply_fmllr

    return {u: apply_fmllr(x, fmllr[utt2spk[u]]) if utt2spk[u] in fmllr else x for u, x in feats.items()}


def _report_kept(when: str, kept: list[str], why: str, which: str, min_count: float) -> None:
    """Name on stdout the speakers whose fMLLR was not (re-)estimated and kept ``which`` transform."""
    if kept:
        print(f"asr gmm tri3: {when}: fMLLR of {len(kept)} speaker(s) not estimated (at most {min_count:g} "
              f"non-silence frames or {why}), {which} kept: {', '.join(kept[:5])}" + (" ..." if len(kept) > 5 else ""))


def align_fmllr(state: TrainState, ali_gmm: DiagGmmSet, si_feats: dict[str, Tensor], data: TrainData,
                chains: dict[str, Tensor], silence: int, cfg: SatConfig, prev: dict[str, Tensor],
                alis: dict[str, Tensor], failed: list[str], runner: JobRunner
                ) -> tuple[dict[str, Tensor], dict[str, Tensor], list[str], list[str]]:
    """Kaldi ``align_fmllr.sh`` on the training data of a SAT system: (1) align the unadapted
    features ``si_feats`` with the alignment model ``ali_gmm``; (2) per speaker, fMLLR for the final
    model ``state.gmm`` from those alignments' Gaussian posteriors under ``ali_gmm``, silence frames
    weighted ``cfg.fmllr_silence_weight``; (3) align the adapted features with the final model.
    A speaker whose transform cannot be estimated (too few frames, singular statistics) keeps its
    transform ``prev`` from training and is listed; an utterance that fails an alignment keeps
    its alignment ``alis``. Returns ``(transforms, alignments, failed utterances, kept speakers)``;
    ``runner`` is closed."""
    try:
        runner.set_data(si_feats, chains)
        pre, _, _, _ = runner.align(ali_gmm, state.trans, cfg.align_batch)
        weights = {u: silence_weights(data.phones[u], a, state.topo, [silence], cfg.fmllr_silence_weight)
                   for u, a in pre.items()}
        kept: list[str] = []
        fm = estimate_speaker_fmllr(state.gmm, si_feats, {u: chains[u][a] for u, a in pre.items()}, data.utt2spk,
                                    cfg.fmllr_update_iters, prev=prev, min_count=cfg.fmllr_min_count,
                                    frame_weights=weights, skipped=kept, post_gmm=ali_gmm, nj=runner.nj)
        for spk, w in prev.items():             # every utterance of the speaker failed step (1)
            if spk not in fm:
                fm[spk] = w
                kept.append(spk)
        runner.set_data(_speaker_adapted(si_feats, fm, data.utt2spk), chains)
        new, bad, _, _ = runner.align(state.gmm, state.trans, cfg.align_batch)
    finally:
        runner.close()
    for u in bad:
        if u in alis:
            new[u] = alis[u]
    return fm, new, sorted(set(failed) | (set(bad) - set(new))), sorted(kept)


RUNNERS = {"mono": run_mono, "tri1": run_tri1, "tri2": run_tri2, "tri3": run_tri3}
