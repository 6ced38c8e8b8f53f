"""Viterbi (hard-alignment) EM training of GMM-HMM systems on tensors.

Library layer of the stages: everything here takes feature tensors / phone sequences and
returns models and alignments; directories are handled in :mod:`asr.gmm.stages` / :mod:`asr.gmm.system`.

Alignments are kept as *chain-state* indices per frame (``LongTensor (T,)`` into the
left-to-right chain of the utterance's phone sequence). They do not depend on the context
dependency, so an alignment made with one tree converts to another tree by re-reading the pdf
of each chain state (Kaldi ``convert-ali``).

The schedule follows Kaldi's ``train_mono.sh`` / ``train_deltas.sh``: realign on
``realign_iters``, accumulate with the current alignment, ML update, and mix up by
``(total_gauss - initial) / max_iter_inc`` Gaussians per iteration.
Per-utterance work (alignment, accumulation) runs in parallel jobs via :func:`asr.jobs.map_jobs`.
"""
from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from asr.gmm.model import DiagGmmSet, GmmAccs, global_stats
from asr.hmm import ContextDependency, Topology, TransitionModel
from asr.hmm.align import frame_labels

# Features / chains shared with forked job processes (inherited at fork, never pickled).
_STORE: dict[str, dict[str, dict[str, Tensor]]] = {}
_TOKENS = itertools.count()


@dataclass
class TrainConfig:
    """Viterbi-EM schedule (Kaldi ``train_*.sh`` options)."""

    num_iters: int = 30
    """EM iterations."""
    realign_iters: tuple[int, ...] = (10, 20)
    """Iterations at whose start the data are re-aligned with the current model."""
    total_gauss: int = 1000
    """Target total number of Gaussians reached by mixing up."""
    max_iter_inc: int = 20
    """Last iteration that increases the number of Gaussians."""
    min_count: float = 10.0
    """Gaussians with less occupancy are not updated (removed when their pdf has others)."""
    min_var: float = 1e-3
    """Variance floor (Kaldi ``--min-variance``)."""
    power: float = 0.25
    """Mixing up: per-pdf Gaussian targets proportional to occupancy^power (Kaldi ``--power``)."""
    perturb: float = 0.01
    """Mixing up: +-perturb standard deviations between the two halves of a split Gaussian
    (Kaldi ``gmm-est --perturb-factor``)."""
    split_min_count: float = 20.0
    """Mixing up: at most occupancy / split_min_count Gaussians per pdf (Kaldi ``--min-count``)."""
    align_batch: int = 64
    """Utterances per padded Viterbi batch."""
    final_realign: bool = True
    """Re-align the data with the final model before writing the alignments the next stage
    trains on (Kaldi runs ``align_si.sh`` / ``align_fmllr.sh`` between stages)."""
    final_boost_silence: float = 1.0
    """Factor on the likelihoods of silence pdfs in that final alignment (Kaldi
    ``align_si.sh --boost-silence``; 1.25 after the monophones in the TIMIT recipe)."""

    def __post_init__(self) -> None:
        self.realign_iters = tuple(int(i) for i in self.realign_iters)
        if self.num_iters < 1:
            raise ValueError("num_iters must be >= 1")

    def with_iters(self, num_iters: int) -> "TrainConfig":
        """The same schedule shortened (or lengthened) to ``num_iters`` EM iterations: mixing up
        ends by 3/4 of them (Kaldi's ``max_iter_inc`` ratio, never later than configured);
        realignments at iterations past the end simply do not happen."""
        return replace(self, num_iters=num_iters,
                       max_iter_inc=min(self.max_iter_inc, max(1, int(num_iters * 0.75))))


@dataclass
class TrainState:
    """A GMM-HMM system under training (tensors only)."""

    topo: Topology
    ctx: ContextDependency
    trans: TransitionModel
    gmm: DiagGmmSet


@dataclass
class EmResult:
    """Outcome of :func:`train_viterbi`."""

    state: TrainState
    alis: dict[str, Tensor]
    failed: list[str]
    history: list[dict] = field(default_factory=list)
    """One record per EM iteration."""


def utterance_chains(phones: dict[str, Tensor], ctx: ContextDependency, topo: Topology) -> dict[str, Tensor]:
    """Pdf id of every chain state for each utterance (``ctx.pdf_sequence``)."""
    out = {}
    for u, p in phones.items():
        try:
            out[u] = ctx.pdf_sequence(p, topo)
        except ValueError as e:
            raise ValueError(f"utterance {u}: {e}") from e
    return out


def chain_ali_from_labels(phones: Tensor, phone_ali: Tensor, state_ali: Tensor, topo: Topology,
                          utt: str = "?") -> Tensor:
    """Invert :func:`asr.hmm.align.frame_labels`: recover the chain-state alignment from per-frame phone and
    hmm-state ids (a new phone starts where the phone changes or the state index drops).
    Raises ValueError naming ``utt`` if the labels do not spell the transcript ``phones``."""
    T = phone_ali.numel()
    if T == 0 or state_ali.numel() != T:
        raise ValueError(f"utterance {utt}: empty or inconsistent phone/state alignment")
    start = torch.ones(T, dtype=torch.bool)
    start[1:] = (phone_ali[1:] != phone_ali[:-1]) | (state_ali[1:] < state_ali[:-1])
    seg = torch.cumsum(start.long(), 0) - 1
    seg_phones = phone_ali[start]
    if not torch.equal(seg_phones, phones.long()):
        raise ValueError(f"utterance {utt}: alignment phones differ from the transcript "
                         f"({seg_phones.numel()} vs {phones.numel()} phones)")
    n = topo.num_states[phones]
    offset = torch.cumsum(n, 0) - n
    if bool((state_ali >= n[seg]).any()):
        raise ValueError(f"utterance {utt}: alignment state index beyond the topology")
    return offset[seg] + state_ali


# ---------------------------------------------------------------------------------------------
# jobs (module level, picklable)

@dataclass
class _Job:
    token: str
    utts: list[str]
    gmm: dict
    trans: dict | None = None
    alis: dict[str, Tensor] | None = None
    batch: int = 64
    pdf_bias: Tensor | None = None
    data_path: str | None = None
    """File holding this split's features and chains (Dask backend); None: the in-memory store."""


_LOADED: dict[str, dict[str, dict[str, Tensor]]] = {}


def _job_data(job: _Job) -> dict[str, dict[str, Tensor]]:
    """The features and chains of ``job``'s utterances: from the forked parent's memory (local
    backend) or from the file the runner wrote for the job's split (Dask: a worker on another
    machine reads it from the shared experiment directory, as Kaldi's jobs read ``split<N>/``)."""
    if job.data_path is not None:
        if job.data_path not in _LOADED:
            from asr.jobs.safeio import load_data

            _LOADED.clear()         # one split at a time per worker process
            _LOADED[job.data_path] = load_data(job.data_path, what="GMM job data")
        return _LOADED[job.data_path]
    try:
        return _STORE[job.token]
    except KeyError:
        raise RuntimeError("training features are not in this worker's memory: GMM training "
                           "jobs on the local backend need the fork executor") from None


def chain_state_loglikes(gmm: DiagGmmSet, x: Tensor, chain: Tensor, pdf_bias: Tensor | None = None) -> Tensor:
    """``(T, S)`` log-likelihoods of each state of ``chain (S,)`` (pdf ids) for frames ``x (T, D)``,
    plus ``pdf_bias (num_pdfs,)`` if given: the emissions :func:`asr.hmm.align.viterbi_align_states`
    takes. Each distinct pdf of the chain is evaluated once; no ``(T, num_pdfs)`` matrix is built
    (with 1,400 pdfs that matrix cost ~1 GB per alignment job on 0.9 h of audio)."""
    used, inv = torch.unique(chain, return_inverse=True)
    ll = gmm.loglikes_pdfs(x, used).cpu()
    if pdf_bias is not None:
        ll += pdf_bias[used]
    return ll[:, inv.cpu()]


def _align_job(job: _Job) -> tuple[dict[str, Tensor], list[str], float, int]:
    """Viterbi-align ``job.utts``; returns (chain-state alis, failed utts, total score, frames)."""
    from asr.hmm.align import viterbi_align_states

    st = _job_data(job)
    gmm = DiagGmmSet.from_dict(job.gmm)
    trans = TransitionModel.from_dict(job.trans)
    ems = [chain_state_loglikes(gmm, st["feats"][u], st["chains"][u], job.pdf_bias) for u in job.utts]
    res = viterbi_align_states(ems, [st["chains"][u] for u in job.utts], trans, batch_size=job.batch)
    alis, failed, score, frames = {}, [], 0.0, 0
    for u, r in zip(job.utts, res):
        if r is None:
            failed.append(u)
        else:
            alis[u] = r.states
            score += r.score
            frames += int(r.states.numel())
    return alis, failed, score, frames


def _acc_job(job: _Job) -> tuple[GmmAccs, float, int]:
    """E-step with fixed alignments: Gaussian statistics, total log-likelihood, frames."""
    st = _job_data(job)
    gmm = DiagGmmSet.from_dict(job.gmm)
    utts = [u for u in job.utts if u in job.alis]
    accs = GmmAccs.zeros(gmm.num_gauss, gmm.dim)
    if not utts:
        return accs, 0.0, 0
    x = torch.cat([st["feats"][u] for u in utts])
    pdfs = torch.cat([st["chains"][u][job.alis[u]] for u in utts])
    ll = gmm.accumulate(accs, x, pdfs)
    return accs, ll, int(x.shape[0])


class JobRunner:
    """Runs alignment / accumulation over speaker-split jobs. Jobs carry the model and alignments;
    the features reach them through the forked parent's memory (local backend) or through one file
    per split under ``work_dir`` (Dask backend: workers may be other processes or machines)."""

    def __init__(self, utt2spk: dict[str, str], nj: int = 1, device: torch.device | None = None,
                 log_dir: str | Path | None = None, work_dir: str | Path | None = None) -> None:
        """``log_dir``: each job writes ``align.<n>.<job>.log`` / ``acc.<n>.<job>.log`` there
        (``n`` counts the calls, as Kaldi's ``log/acc.$iter.JOB.log``). ``work_dir``: with the Dask
        backend (``ASR_BACKEND=dask``) the features of each split are written under
        ``work_dir/.jobdata/`` for the workers to read (required then; removed by ``close``)."""
        from asr.jobs import split_by_speaker

        self.log_dir = log_dir
        self.files = os.environ.get("ASR_BACKEND", "local") == "dask"
        if self.files and work_dir is None:
            raise ValueError("GMM training on the Dask backend needs a work_dir shared with the workers")
        self.work_dir = None if work_dir is None else Path(work_dir) / ".jobdata"
        self.calls = {"align": 0, "acc": 0}
        self.device = device or torch.device("cpu")
        # CUDA work stays in this process (no fork with an initialised CUDA context).
        self.nj = 1 if self.device.type == "cuda" else max(1, nj)
        self.splits = split_by_speaker(utt2spk, self.nj)
        self.paths: list[str | None] = [None] * len(self.splits)
        self.token = ""

    def set_data(self, feats: dict[str, Tensor], chains: dict[str, Tensor]) -> None:
        """Publish the current model-space features and chains to the jobs."""
        self.close()
        self.token = f"tok{next(_TOKENS)}"
        dev = self.device
        if self.files:
            from asr.jobs.safeio import save_data

            self.paths = []
            for k, utts in enumerate(self.splits):
                path = self.work_dir / f"{os.getpid()}.{self.token}.{k + 1}.pt"
                save_data({"feats": {u: feats[u].cpu() for u in utts if u in feats},
                           "chains": {u: chains[u] for u in utts if u in chains}}, path)
                self.paths.append(str(path))
        else:
            self.paths = [None] * len(self.splits)
            _STORE[self.token] = {"feats": {u: f.to(dev) for u, f in feats.items()}, "chains": chains}

    def close(self) -> None:
        _STORE.pop(self.token, None)
        for p in self.paths:
            if p is not None:
                Path(p).unlink(missing_ok=True)
        self.paths = [None] * len(self.splits)

    def _log(self, task: str) -> dict:
        self.calls[task] += 1
        return {} if self.log_dir is None else {"log_dir": self.log_dir, "task": f"{task}.{self.calls[task]}"}

    def _jobs(self, gmm: DiagGmmSet, trans: TransitionModel | None, alis, batch: int,
              pdf_bias: Tensor | None = None) -> list[_Job]:
        g = gmm.to_dict() if self.device.type == "cpu" else {k: (v.to(self.device) if isinstance(v, Tensor) else v)
                                                              for k, v in gmm.to_dict().items()}
        out = []
        for utts, path in zip(self.splits, self.paths):
            a = None if alis is None else {u: alis[u] for u in utts if u in alis}
            out.append(_Job(self.token, utts, g, None if trans is None else trans.to_dict(), a, batch, pdf_bias,
                            path))
        return out

    def align(self, gmm: DiagGmmSet, trans: TransitionModel, batch: int = 64,
              desc: str | None = None, pdf_bias: Tensor | None = None) -> tuple[dict[str, Tensor], list[str], float, int]:
        """Viterbi-align every utterance; ``pdf_bias (num_pdfs,)`` is added to the log-likelihoods
        (e.g. ``log 1.25`` on silence pdfs: Kaldi ``gmm-boost-silence``)."""
        from asr.jobs import map_jobs

        res = map_jobs(_align_job, self._jobs(gmm, trans, None, batch, pdf_bias), nj=self.nj, desc=desc,
                       **self._log("align"))
        alis, failed, score, frames = {}, [], 0.0, 0
        for a, f, s, n in res:
            alis.update(a)
            failed += f
            score += s
            frames += n
        return alis, sorted(failed), score, frames

    def accumulate(self, gmm: DiagGmmSet, alis: dict[str, Tensor],
                   desc: str | None = None) -> tuple[GmmAccs, float, int]:
        from asr.jobs import map_jobs

        res = map_jobs(_acc_job, self._jobs(gmm, None, alis, 64), nj=self.nj, desc=desc, **self._log("acc"))
        accs = GmmAccs.zeros(gmm.num_gauss, gmm.dim, gmm.device)
        ll, n = 0.0, 0
        for a, l, k in res:
            accs.add_(a)
            ll += l
            n += k
        return accs, ll, n


# ---------------------------------------------------------------------------------------------

def equal_alignments(feats: dict[str, Tensor], chains: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Flat-start alignments (``asr.hmm.align.equal_align``); utterances with fewer frames than
    chain states are returned in the failure list."""
    from asr.hmm.align import equal_align

    alis, failed = {}, []
    for u in sorted(feats):
        T, S = int(feats[u].shape[0]), int(chains[u].numel())
        if S == 0 or T < S:
            failed.append(u)
        else:
            alis[u] = equal_align(T, S)
    return alis, failed


def init_gmm_from_alignment(feats: dict[str, Tensor], chains: dict[str, Tensor], alis: dict[str, Tensor],
                            num_pdfs: int, min_var: float = 1e-3) -> DiagGmmSet:
    """One Gaussian per pdf estimated from the aligned frames (Kaldi ``gmm-init-model``);
    pdfs without frames get the global mean / variance."""
    used = [u for u in sorted(alis)]
    mean, var = global_stats([feats[u] for u in used])
    gmm = DiagGmmSet.single(mean, var, num_pdfs)
    accs = GmmAccs.zeros(num_pdfs, gmm.dim)
    x = torch.cat([feats[u] for u in used])
    pdfs = torch.cat([chains[u][alis[u]] for u in used])
    accs.accumulate(x, pdfs[:, None], torch.ones(x.shape[0], 1))
    return gmm.update(accs, min_var=min_var, min_count=1.0, remove_low_count=False)


IterHook = Callable[[int, TrainState, dict[str, Tensor]], "dict[str, Tensor] | None"]


def train_viterbi(feats: dict[str, Tensor], phones: dict[str, Tensor], state: TrainState,
                  cfg: TrainConfig, runner: JobRunner, generator: torch.Generator,
                  alis: dict[str, Tensor] | None = None, hook: IterHook | None = None,
                  log: Callable[[dict], None] | None = None, silence: list[int] = ()) -> EmResult:
    """Viterbi EM of ``state`` on ``feats`` (utt -> ``(T, D)``) with transcripts ``phones``
    (utt -> LongTensor of phone ids).

    ``alis`` (chain-state alignments) default to equal alignment (flat start). ``hook(it, state,
    alis)`` runs at the start of each iteration after any realignment; it may change
    ``state.gmm`` in place and return new features (e.g. MLLT / fMLLR re-estimation) or None.
    Utterances that cannot be aligned are skipped and listed in ``EmResult.failed``. With
    ``cfg.final_realign`` the returned alignments come from the final model (silence phones
    ``silence`` boosted by ``cfg.final_boost_silence``). ``log(record)`` gets each iteration's
    record (the caller logs it and draws any progress bar).
    """
    chains = utterance_chains(phones, state.ctx, state.topo)
    failed: list[str] = []
    if alis is None:
        alis, failed = equal_alignments(feats, chains)
    else:
        missing = sorted(set(feats) - set(alis))
        failed += missing
        alis = {u: a for u, a in alis.items() if u in feats}
    runner.set_data(feats, chains)
    start = state.gmm.num_gauss
    inc = max(0.0, (cfg.total_gauss - start) / max(1, cfg.max_iter_inc))
    target = float(start)
    history = []
    try:
        for it in range(cfg.num_iters):
            rec: dict = {"iter": it}
            if it in cfg.realign_iters:
                new, bad, score, n = runner.align(state.gmm, state.trans, cfg.align_batch)
                for u in bad:           # keep the previous alignment of an utterance that failed now
                    if u in alis:
                        new[u] = alis[u]
                alis = new
                failed = sorted(set(failed) | (set(bad) - set(new)))
                rec.update(realigned=True, align_score_per_frame=score / max(n, 1), align_failed=len(bad))
            if hook is not None:
                new_feats = hook(it, state, alis)
                if new_feats is not None:
                    feats = new_feats
                    runner.set_data(feats, chains)
            accs, ll, n = runner.accumulate(state.gmm, alis)
            if n == 0:
                raise ValueError("no aligned frames to train on")
            state.trans.update([chains[u][a] for u, a in sorted(alis.items())],
                               [a for _, a in sorted(alis.items())])
            pdf_occ = accs.pdf_occupancy(state.gmm.gauss2pdf, state.gmm.num_pdfs)
            state.gmm = state.gmm.update(accs, min_var=cfg.min_var, min_count=cfg.min_count)
            if it < cfg.max_iter_inc and inc > 0:
                target = min(float(cfg.total_gauss), target + inc)
                state.gmm = state.gmm.split(int(round(target)), pdf_occ, generator, power=cfg.power,
                                            perturb=cfg.perturb, min_count=cfg.split_min_count)
            rec.update(loglike_per_frame=ll / n, frames=n, utts=len(alis), num_gauss=state.gmm.num_gauss)
            history.append(rec)
            if log is not None:
                log(rec)
        if cfg.final_realign:
            bias = None
            if cfg.final_boost_silence != 1.0 and len(silence):
                sil_pdf = torch.isin(state.ctx.pdf2phone, torch.tensor(list(silence), dtype=torch.long))
                bias = sil_pdf.float() * math.log(cfg.final_boost_silence)
            new, bad, score, n = runner.align(state.gmm, state.trans, cfg.align_batch, pdf_bias=bias)
            for u in bad:
                if u in alis:
                    new[u] = alis[u]
            alis = new
            failed = sorted(set(failed) | (set(bad) - set(new)))
            final_align = {"final_align": True, "align_score_per_frame": score / max(n, 1),
                           "align_failed": len(bad), "boost_silence": cfg.final_boost_silence}
            if log is not None:
                log(final_align)
    finally:
        runner.close()
    return EmResult(state, alis, failed, history)


def mono_init(feats: dict[str, Tensor], topo: Topology) -> TrainState:
    """Flat start (Kaldi ``gmm-init-mono``): every monophone pdf = the global mean / variance."""
    ctx = ContextDependency.monophone(topo)
    mean, var = global_stats(list(feats.values()))
    return TrainState(topo, ctx, TransitionModel(ctx.num_pdfs), DiagGmmSet.single(mean, var, ctx.num_pdfs))


def build_tree_from_alignment(feats: dict[str, Tensor], phones: dict[str, Tensor], alis: dict[str, Tensor],
                              topo: Topology, max_leaves: int, silence: list[int], thresh: float = 300.0,
                              cluster_thresh: float = -1.0, min_count: float = 0.0) -> tuple[ContextDependency, dict]:
    """Decision-tree tied triphones from an alignment (Kaldi ``acc-tree-stats`` + ``cluster-phones``
    + ``build-tree --thresh --cluster-thresh``, silence context-independent) using
    :mod:`asr.hmm.tree`. Returns the context dependency and facts about the tree (leaves before
    and after clustering, smallest split)."""
    from asr.hmm.tree import accumulate_tree_stats, grow_tree, make_questions

    utts = sorted(alis)
    labels = [frame_labels(alis[u], phones[u], topo) for u in utts]
    stats = accumulate_tree_stats([feats[u] for u in utts], [p for p, _ in labels], [s for _, s in labels])
    questions = make_questions(stats, topo.num_phones, silence)
    tree = grow_tree(stats, questions, topo, max_leaves, thresh=thresh, cluster_thresh=cluster_thresh,
                     ci_phones=silence, min_count=min_count)
    facts = {"tree_leaves": tree.num_leaves, "tree_pdfs": tree.num_pdfs, "max_leaves": max_leaves,
             "smallest_split": tree.smallest_split, "splits": len(tree.split_gains),
             "merges": len(tree.cluster_costs), "frames": float(stats.count.sum())}
    return tree.to_context_dependency(), facts


def silence_weights(phones: Tensor, ali: Tensor, topo: Topology, silence: list[int],
                    weight: float = 0.0) -> Tensor:
    """1.0 per frame, ``weight`` on silence phones (Kaldi ``weight-silence-post``)."""
    ph, _ = frame_labels(ali, phones, topo)
    sil = torch.isin(ph, torch.tensor(silence, dtype=torch.long))
    return torch.where(sil, torch.tensor(float(weight), dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))

