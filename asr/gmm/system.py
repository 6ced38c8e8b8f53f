"""A trained GMM-HMM system and the data it trains on: ``GmmSystem`` / ``load_system`` (an
``exp/<name>/`` directory), ``TrainData`` / ``load_train_data`` (features + phone transcripts of a
data dir), the alignment files between stages, and the device / thread choice of a GMM run.

``exp/<name>/``: ``final.pt`` (topology, context dependency, transition model, GMMs, feature
pipeline incl. LDA+MLLT matrix), ``trans.pt`` (tri3: fMLLR per training speaker),
``ali_pdf.ark`` / ``ali_phone.ark`` / ``ali_state.ark`` (Kaldi int vectors).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from asr.gmm.model import DiagGmmSet, pick_device
from asr.gmm.pipeline import FeaturePipeline
from asr.gmm.train import chain_ali_from_labels
from asr.hmm import ContextDependency, Topology, TransitionModel
from asr.hmm.align import frame_labels
from asr.jobs.atomic import atomic_path


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
    import contextlib

    import kaldi_io

    with contextlib.ExitStack() as stack:      # all three renamed on success, no temporary left on failure
        fs = [stack.enter_context(open(stack.enter_context(atomic_path(out_dir / n)), "wb"))
              for n in ("ali_pdf.ark", "ali_phone.ark", "ali_state.ark")]
        for u in sorted(alis):
            ph, st = frame_labels(alis[u], phones[u], topo)
            for f, v in zip(fs, (chains[u][alis[u]], ph, st)):
                kaldi_io.write_vec_int(f, v.numpy().astype("int32"), key=u)


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
