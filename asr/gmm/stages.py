"""Stage runners ``mono`` / ``tri1`` / ``tri2`` / ``tri3``: read directories, train with
:mod:`asr.gmm.train`, write a self-contained ``exp/<name>/`` (Kaldi ``steps/train_*.sh``).

``exp/<name>/``: ``final.pt`` (topology, context dependency, transition model, GMMs, feature
pipeline incl. LDA+MLLT matrix), ``trans.pt`` (tri3: fMLLR per training speaker),
``ali_pdf.ark`` / ``ali_phone.ark`` / ``ali_state.ark`` (Kaldi int vectors), ``log/train.log``
(one JSON record per iteration), ``log/failed_utts.txt``, ``config.json`` and ``.done``.
"""
from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from asr.gmm.model import DiagGmmSet, pick_device
from asr.jobs.atomic import write_text_atomic
from asr.jobs.safeio import save_data
from asr.gmm.pipeline import FeaturePipeline
from asr.gmm.train import (
    JobRunner, TrainConfig, TrainState, build_tree_from_alignment, chain_ali_from_labels,
    gaussian_posteriors_sparse, init_gmm_from_alignment, mono_init, silence_weights, train_viterbi,
    utterance_chains,
)
from asr.hmm import ContextDependency, Topology, TransitionModel
from asr.hmm.align import frame_labels


def one_thread(fn):
    """Run a stage with one torch thread per process (Kaldi: one thread per job; ``--nj`` gives
    parallelism). Small-matrix work (Viterbi steps, fMLLR/MLLT row updates) is ~100x slower
    when intra-op threads contend for shared cores."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(n)
    return wrapper


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


STAGE_CONFIGS = {"mono": MonoConfig, "tri1": TriConfig, "tri2": LdaMlltConfig, "tri3": SatConfig}
PREVIOUS = {"tri1": "mono", "tri2": "tri1", "tri3": "tri2"}


def gmm_device(name: str | None, nj: int) -> torch.device:
    """The device of a GMM training run. Its jobs are processes that cannot share a CUDA context,
    so several jobs run on the CPU: without ``--device`` that is the choice (said on stderr when
    CUDA was available), and ``--device cuda`` with ``nj > 1`` is an error rather than a silent
    switch to one job."""
    import sys

    if name is None and nj > 1:
        if torch.cuda.is_available():
            print(f"asr gmm: {nj} jobs run on the CPU (GMM jobs are processes; --device cuda --nj 1 "
                  "uses the GPU in one process)", file=sys.stderr)
        return torch.device("cpu")
    dev = pick_device(name)
    if dev.type == "cuda" and nj > 1:
        raise ValueError(f"--device cuda runs one job in this process; use --nj 1 (got --nj {nj}) "
                         "or --device cpu")
    return dev


# ------------------------------------------------------------------------------------ data
@dataclass
class TrainData:
    """Raw (CMN'd) features, transcripts as phone ids and the speaker map of a data dir."""

    raw: dict[str, Tensor]
    phones: dict[str, Tensor]
    utt2spk: dict[str, str]
    skipped: list[str] = field(default_factory=list)


def read_transcripts(data_dir: str | Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``(text utt -> 48-set phones, utt2spk)`` of a data dir."""
    from asr.datadir import read_data_dir

    dd = read_data_dir(data_dir)
    return {u: list(t) for u, t in dd.text.items()}, dict(dd.utt2spk)


def phone_ids() -> tuple[dict[str, int], int]:
    """Phone -> id (1..48) and the silence id."""
    from asr.lang.phones import SILENCE, load_phone_set

    ids = {p: i + 1 for i, p in enumerate(load_phone_set())}
    return ids, ids[SILENCE]


def load_train_data(data_dir: str | Path, raw_dim: int | None = None) -> TrainData:
    """Features (per-speaker CMN) + transcripts. Utterances with unknown phones or without features
    are skipped with their ids recorded; a feature dimension other than ``raw_dim`` is an error."""
    from asr.features import load_feats

    text, utt2spk = read_transcripts(data_dir)
    raw = load_feats(data_dir, cmvn=True)
    ids, _ = phone_ids()
    phones, skipped = {}, []
    for u in sorted(raw):
        toks = text.get(u)
        if not toks or any(t not in ids for t in toks) or u not in utt2spk:
            skipped.append(u)
            continue
        phones[u] = torch.tensor([ids[t] for t in toks], dtype=torch.long)
    if not phones:
        raise ValueError(f"{data_dir}: no utterance with features and a valid transcript")
    dims = {int(x.shape[1]) for x in raw.values()}
    if len(dims) != 1 or (raw_dim is not None and dims != {raw_dim}):
        raise ValueError(f"{data_dir}: feature dimension {sorted(dims)} does not match the model's "
                         f"{raw_dim}; re-run `asr feats` with the type the previous stage used "
                         "or retrain from `asr gmm mono`")
    return TrainData({u: raw[u] for u in phones}, phones, {u: utt2spk[u] for u in phones}, skipped)


# ------------------------------------------------------------------------------------ model dir
@dataclass
class GmmSystem:
    """A trained GMM-HMM system loaded from ``exp/<name>/`` (see :func:`load_system`)."""

    topo: Topology
    ctx: ContextDependency
    trans: TransitionModel
    gmm: DiagGmmSet
    pipeline: FeaturePipeline
    stage: str
    silence: list[int]
    fmllr: dict[str, Tensor] | None = None
    si_model: str | None = None
    exp_dir: Path | None = None
    ali_gmm: DiagGmmSet | None = None
    """SAT systems: the speaker-independent alignment model (same Gaussians, unadapted features)."""

    @property
    def num_pdfs(self) -> int:
        return self.ctx.num_pdfs

    def features(self, data_dir: str | Path, utts: list[str] | None = None,
                 fmllr: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Model features ``{utt: (T, dim)}`` of ``data_dir`` through the saved pipeline; with
        ``fmllr`` (speaker -> ``(dim, dim+1)``) each utterance gets its speaker's transform."""
        from asr.features import load_feats

        raw = load_feats(data_dir, cmvn=True, utts=utts)
        utt2spk = read_transcripts(data_dir)[1] if fmllr is not None else {}
        out = {}
        for u, x in raw.items():
            if x.shape[1] != self.pipeline.raw_dim:
                raise ValueError(f"{data_dir}: utterance {u} has {x.shape[1]}-dim features, model "
                                 f"{self.exp_dir} expects {self.pipeline.raw_dim}")
            w = None if fmllr is None else fmllr.get(utt2spk.get(u, ""))
            out[u] = self.pipeline.apply(x, w)
        return out

    def loglikes(self, feats: Tensor) -> Tensor:
        """``(T, dim)`` -> ``(T, num_pdfs)`` acoustic log-likelihoods."""
        return self.gmm.loglikes(feats)

    def to_dict(self) -> dict:
        return {"topo": self.topo.to_dict(), "ctx": self.ctx.to_dict(), "trans": self.trans.to_dict(),
                "gmm": self.gmm.to_dict(), "pipeline": self.pipeline.to_dict(), "stage": self.stage,
                "silence": self.silence, "si_model": self.si_model,
                "ali_gmm": None if self.ali_gmm is None else self.ali_gmm.to("cpu").to_dict()}


def load_system(exp_dir: str | Path, device: torch.device | str = "cpu") -> GmmSystem:
    """Load ``exp_dir/final.pt`` (and ``trans.pt`` when present)."""
    exp_dir = Path(exp_dir)
    f = exp_dir / "final.pt"
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found: train it with `asr gmm {exp_dir.name} ...` first")
    from asr.jobs.safeio import load_data

    d = load_data(f, what="GMM system")
    fm = None
    if (exp_dir / "trans.pt").is_file():
        fm = load_data(exp_dir / "trans.pt", what="fMLLR transforms")
    ali = d.get("ali_gmm")
    return GmmSystem(Topology.from_dict(d["topo"]), ContextDependency.from_dict(d["ctx"]),
                     TransitionModel.from_dict(d["trans"]), DiagGmmSet.from_dict(d["gmm"]).to(device),
                     FeaturePipeline.from_dict(d["pipeline"]), d["stage"], list(d["silence"]), fm,
                     d.get("si_model"), exp_dir, None if ali is None else DiagGmmSet.from_dict(ali).to(device))


def write_alignments(out_dir: Path, phones: dict[str, Tensor], alis: dict[str, Tensor],
                     chains: dict[str, Tensor], topo: Topology) -> None:
    """``ali_pdf.ark``, ``ali_phone.ark``, ``ali_state.ark`` (kaldi-io int vectors, sorted keys)."""
    import kaldi_io

    names = ("ali_pdf.ark", "ali_phone.ark", "ali_state.ark")
    fs = [open(out_dir / (n + ".tmp"), "wb") for n in names]
    try:
        for u in sorted(alis):
            ph, st = frame_labels(alis[u], phones[u], topo)
            for f, v in zip(fs, (chains[u][alis[u]], ph, st)):
                kaldi_io.write_vec_int(f, v.numpy().astype("int32"), key=u)
    finally:
        for f in fs:
            f.close()
    for n in names:
        os.replace(out_dir / (n + ".tmp"), out_dir / n)


def read_alignments(exp_dir: Path, phones: dict[str, Tensor], topo: Topology) -> tuple[dict[str, Tensor], list[str]]:
    """Chain-state alignments from ``ali_phone.ark`` + ``ali_state.ark`` of a previous stage, for
    the utterances in ``phones``; returns (alis, utts without a usable alignment)."""
    import kaldi_io

    ph = {k: torch.from_numpy(v.astype("int64")) for k, v in kaldi_io.read_vec_int_ark(str(exp_dir / "ali_phone.ark"))}
    st = {k: torch.from_numpy(v.astype("int64")) for k, v in kaldi_io.read_vec_int_ark(str(exp_dir / "ali_state.ark"))}
    alis, missing = {}, []
    for u in sorted(phones):
        if u not in ph or u not in st:
            missing.append(u)
            continue
        alis[u] = chain_ali_from_labels(phones[u], ph[u], st[u], topo, utt=u)
    return alis, missing


def _check_previous(prev_dir: Path | None, stage: str) -> Path:
    want = PREVIOUS[stage]
    if prev_dir is None:
        raise ValueError(f"`asr gmm {stage}` needs --ali pointing at a finished `{want}` stage")
    if not (prev_dir / ".done").is_file() or not (prev_dir / "final.pt").is_file():
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
    from asr.jobs.stage import mark_done

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
    runner = JobRunner(data.utt2spk, nj, dev)
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
    runner = JobRunner(data.utt2spk, nj, dev)
    res = train_viterbi(feats, data.phones, state, cfg, runner, torch.Generator().manual_seed(seed),
                        alis=alis, log=log, silence=[sil])
    return _finish(out, "tri1", res.state, pipeline, data, res.alis, res.failed, sil,
                   _cfg_dict("tri1", cfg, data_dir, lang_dir, ali_dir, seed))


def estimate_lda_matrix(spliced: dict[str, Tensor], labels: dict[str, Tensor], weights: dict[str, Tensor],
                        out_dim: int) -> Tensor:
    """LDA ``(out_dim, D)`` from spliced frames with class = pdf id (silence weighted 0)."""
    from asr.transforms import LdaStats, estimate_lda

    utts = sorted(labels)
    st = LdaStats(next(iter(spliced.values())).shape[1])
    st.accumulate(torch.cat([spliced[u] for u in utts]).double(), torch.cat([labels[u] for u in utts]),
                  torch.cat([weights[u] for u in utts]))
    return estimate_lda(st, out_dim).float()


def mllt_step(state: TrainState, feats: dict[str, Tensor], chains: dict[str, Tensor], alis: dict[str, Tensor],
              weights: dict[str, Tensor]) -> Tensor:
    """One MLLT estimation (Gales 1999) from soft Gaussian posteriors of the aligned pdfs; transforms
    the model in place (means ``A mu``, variances ``diag(A W A^T)``) and returns ``A (D, D)``."""
    from asr.transforms import MlltStats, estimate_mllt

    gmm = state.gmm
    utts = sorted(alis)
    x = torch.cat([feats[u] for u in utts]).to(gmm.device)
    pdfs = torch.cat([chains[u][alis[u]] for u in utts])
    w = torch.cat([weights[u] for u in utts]).to(gmm.device)
    g, p, _ = gmm.gauss_posteriors(x, pdfs)
    keep = (g >= 0) & (p * w[:, None] > 1e-4)
    rows = torch.arange(x.shape[0], device=gmm.device).unsqueeze(1).expand_as(g)[keep]
    st = MlltStats(gmm.dim, gmm.num_gauss)
    ids, pw = g[keep].cpu(), (p * w[:, None])[keep].double().cpu()
    rows = rows.cpu()
    x = x.cpu()
    step = 8192                  # bounded memory: the per-pair outer products are (step, D, D)
    for i in range(0, ids.numel(), step):
        st.accumulate(x[rows[i:i + step]].double(), ids[i:i + step], pw[i:i + step])
    A = estimate_mllt(st, iters=10)
    counts = st.counts
    ok = counts > 1.0
    mean = st.sums[ok] / counts[ok, None]
    cov = st.scatter[ok] / counts[ok, None, None] - mean[:, :, None] * mean[:, None, :]
    means = (gmm.means.double().cpu() @ A.T)
    vars_ = gmm.vars.double().cpu().clone()
    vars_[ok] = torch.einsum("rd,jde,re->jr", A, cov, A).clamp_min(1e-3)
    state.gmm = DiagGmmSet(means.float(), vars_.float(), gmm.log_weights.cpu(), gmm.gauss2pdf.cpu(),
                           gmm.num_pdfs).to(gmm.device)
    return A.float()


@one_thread
def run_tri2(data_dir, lang_dir, ali_dir, out_dir, cfg: LdaMlltConfig | None = None, nj: int = 1, seed: int = 0,
             device: str | None = None) -> GmmSystem:
    """LDA+MLLT triphones (Kaldi ``train_lda_mllt.sh``): splice +-4 of the CMN'd MFCC, LDA to 40
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

    runner = JobRunner(data.utt2spk, nj, dev)
    res = train_viterbi(feats, data.phones, state, cfg, runner, torch.Generator().manual_seed(seed),
                        alis=alis, hook=hook, log=log, silence=[sil])
    return _finish(out, "tri2", res.state, holder["pipeline"], data, res.alis, res.failed, sil,
                   _cfg_dict("tri2", cfg, data_dir, lang_dir, ali_dir, seed))


def estimate_speaker_fmllr(gmm: DiagGmmSet, feats: dict[str, Tensor], pdf_alis: dict[str, Tensor],
                           utt2spk: dict[str, str], iters: int = 10,
                           prev: dict[str, Tensor] | None = None, min_count: float = 50.0,
                           frame_weights: dict[str, Tensor] | None = None,
                           skipped: list[str] | None = None) -> dict[str, Tensor]:
    """Per-speaker fMLLR ``W (D, D+1)`` (Gales 1998) from untransformed ``feats`` and the Gaussian
    posteriors of the aligned pdfs, each frame weighted by ``frame_weights`` (e.g. 0 on silence:
    Kaldi ``weight-silence-post``). A speaker with at most ``min_count`` weighted frames or singular
    statistics keeps ``prev`` / the identity and is appended to ``skipped``."""
    from asr.transforms import FmllrStats, apply_fmllr, estimate_fmllr, identity_fmllr

    spk2utts: dict[str, list[str]] = {}
    for u in sorted(pdf_alis):
        spk2utts.setdefault(utt2spk[u], []).append(u)
    means, vars_ = gmm.means.double().cpu(), gmm.vars.double().cpu()
    out = {}
    for spk, utts in spk2utts.items():
        w0 = identity_fmllr(gmm.dim) if prev is None or spk not in prev else prev[spk].double()
        x = torch.cat([feats[u] for u in utts])
        pdfs = torch.cat([pdf_alis[u] for u in utts])
        post = gaussian_posteriors_sparse(gmm, apply_fmllr(x, w0).to(gmm.device), pdfs)
        if frame_weights is not None:
            fw = torch.cat([frame_weights[u] for u in utts]).double()
            post = torch.sparse_coo_tensor(post.indices(), post.values() * fw[post.indices()[0]], post.shape,
                                           check_invariants=False)
        st = FmllrStats(gmm.dim)
        st.accumulate(x.double(), post, means, vars_)
        try:
            w = estimate_fmllr(st, iters=iters, w0=w0, min_count=min_count)
        except ValueError:
            w = w0
        if st.beta <= min_count or w is w0:
            if skipped is not None:
                skipped.append(spk)
        out[spk] = w.float()
    return out


def estimate_alignment_model(sat_gmm: DiagGmmSet, adapted: dict[str, Tensor], si_feats: dict[str, Tensor],
                             pdf_alis: dict[str, Tensor], min_var: float) -> DiagGmmSet:
    """Kaldi's SAT alignment model (``gmm-acc-stats-twofeats`` + ``gmm-est``, ``final.alimdl``):
    Gaussian posteriors of the aligned pdfs computed by the SAT model on the adapted features,
    statistics gathered on the speaker-independent features. Same Gaussians (one to one) as the
    SAT model, so posteriors from a first pass with it serve to estimate fMLLR for the SAT model."""
    from asr.gmm.model import GmmAccs

    accs = GmmAccs.zeros(sat_gmm.num_gauss, sat_gmm.dim, sat_gmm.device)
    for u in sorted(pdf_alis):
        g, p, _ = sat_gmm.gauss_posteriors(adapted[u].to(sat_gmm.device), pdf_alis[u].to(sat_gmm.device))
        accs.accumulate(si_feats[u].to(sat_gmm.device), g, p)
    return sat_gmm.update(accs, min_var=min_var, min_count=0.0, remove_low_count=False)


@one_thread
def run_tri3(data_dir, lang_dir, ali_dir, out_dir, cfg: SatConfig | None = None, nj: int = 1, seed: int = 0,
             device: str | None = None) -> GmmSystem:
    """SAT (Kaldi ``train_sat.sh``): fMLLR per speaker on top of ``ali_dir``'s LDA+MLLT features,
    estimated first with the previous (speaker-independent) model, then re-estimated with the SAT
    model on ``cfg.fmllr_iters`` (silence frames weighted ``cfg.fmllr_silence_weight``); new tree
    on the fMLLR features; finally the alignment model for the first decoding pass."""
    from asr.transforms import apply_fmllr

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
                                    frame_weights=sil_weights(cur_alis), skipped=skipped)
        log({"iter": it, "fmllr_speakers": len(fm), "fmllr_kept_previous": skipped})
        holder["kept"] = skipped
        if skipped:
            print(f"asr gmm tri3: iteration {it}: fMLLR of {len(skipped)} speaker(s) not estimated (at most "
                  f"{cfg.fmllr_min_count:g} non-silence frames or singular statistics), previous transform "
                  f"kept: {', '.join(skipped[:5])}" + (" ..." if len(skipped) > 5 else ""))
        return fm

    pchains = utterance_chains(data.phones, psys.ctx, psys.topo)
    holder["fmllr"] = estimate(psys.gmm, pchains, alis, -1, None)

    def adapted() -> dict[str, Tensor]:
        return {u: apply_fmllr(x, holder["fmllr"][data.utt2spk[u]]) if data.utt2spk[u] in holder["fmllr"] else x
                for u, x in base.items()}

    feats = adapted()
    state = _new_tree_state(feats, data, alis, psys.topo, cfg, sil, dev, log)
    chains = utterance_chains(data.phones, state.ctx, state.topo)

    def hook(it: int, st: TrainState, cur_alis: dict[str, Tensor]):
        if it not in cfg.fmllr_iters:
            return None
        holder["fmllr"] = estimate(st.gmm, chains, cur_alis, it, holder["fmllr"])
        return adapted()

    runner = JobRunner(data.utt2spk, nj, dev)
    res = train_viterbi(feats, data.phones, state, cfg, runner, torch.Generator().manual_seed(seed),
                        alis=alis, hook=hook, log=log, silence=[sil])
    final = adapted()
    ali_gmm = estimate_alignment_model(res.state.gmm, final, base, {u: chains[u][a] for u, a in res.alis.items()},
                                       cfg.min_var)
    return _finish(out, "tri3", res.state, pipeline, data, res.alis, res.failed, sil,
                   _cfg_dict("tri3", cfg, data_dir, lang_dir, ali_dir, seed), fmllr=holder["fmllr"],
                   si_model=str(Path(ali_dir).resolve()), ali_gmm=ali_gmm, fmllr_kept=holder.get("kept"))


RUNNERS = {"mono": run_mono, "tri1": run_tri1, "tri2": run_tri2, "tri3": run_tri3}
