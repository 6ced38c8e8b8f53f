"""Stage runners of the hybrid DNN (directories in, directory out): ``pretrain``, ``train``,
``decode``, ``export``, ``align``. The CLI (``asr/cli/dnn.py``) is a thin face over these."""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from asr.datadir.table import read_table
from asr.jobs.atomic import write_json_atomic, write_text_atomic
from asr.nnet.frames import (DISABLED_LOG_PRIOR, FrameData, build_frame_data, pdf_log_priors,
                             split_cv_speakers)
from asr.nnet.io import load_features, loglike_job, read_alignments, write_alignments, write_matrices
from asr.nnet.model import HybridDNN, NetConfig, atomic_torch_save, init_kaldi_proto, load_model
from asr.nnet.pretrain import PretrainConfig, dbn_linears, pretrain_dbn_on_frames
from asr.nnet.train import CEResult, CETrainConfig, train_ce

# Acoustic scale of hybrid decoding and denominator lattices: Kaldi's TIMIT nnet1 recipe
# (egs/timit/s5/local/nnet/run_dnn.sh: decode.sh and make_denlats.sh with --acwt 0.2). On the
# default corpus's dev set the CE DNN scored 16.34 / 16.32 / 16.30 % PER at 0.1 / 0.2 / 0.4, and the
# dev decode took 500 / 45 / 15 s: a flat DNN posterior at 0.1 leaves the 13-unit beam almost unpruned.
DNN_ACWT = 0.2

Log = Callable[[str], None]


def read_utt2spk(data_dir: str | Path) -> dict[str, str]:
    """``DATA_DIR/utt2spk`` as {utterance: speaker}."""
    return read_table(Path(data_dir) / "utt2spk", what="utterance", columns=2)


@dataclass
class Targets:
    """pdf alignments (utt -> (T,)), the pdf count and, when the GMM system is available, the
    pdf -> phone map (num_pdfs,) and its silence phone ids."""

    alis: dict[str, Tensor]
    num_pdfs: int
    pdf2phone: Tensor | None = None
    silence: list[int] = field(default_factory=list)
    source: str = ""


def gmm_system_dir(ali: str | Path) -> Path:
    """The GMM exp dir whose tree defines the pdfs of an alignment dir: ``ali`` itself, or for a
    DNN realignment (``asr dnn align``) the system its ``gmm_system`` file names."""
    ali = Path(ali)
    if not (ali / "final.pt").is_file() and (ali / "gmm_system").is_file():
        return Path((ali / "gmm_system").read_text().strip())
    return ali


def load_targets(ali: str | Path, num_pdfs: int | None = None) -> Targets:
    """``ali``: a GMM exp dir (``ali_pdf.ark`` + ``final.pt``, pdf count checked against its tree)
    or a Kaldi ``ali-to-pdf`` style int-vector ark (pdf count from ``num_pdfs`` or max id + 1)."""
    ali = Path(ali)
    if ali.is_dir():
        ark = ali / "ali_pdf.ark"
        alis = read_alignments(ark)
        pdf2phone, silence = None, []
        gmm_dir = gmm_system_dir(ali)
        if (gmm_dir / "final.pt").is_file():
            from asr.gmm.system import load_system

            sys_ = load_system(gmm_dir)
            if num_pdfs is not None and num_pdfs != sys_.num_pdfs:
                raise ValueError(f"--num-pdfs {num_pdfs} does not match the tree of {ali} ({sys_.num_pdfs} pdfs)")
            num_pdfs = sys_.num_pdfs
            pdf2phone, silence = sys_.ctx.pdf2phone.clone(), list(sys_.silence)
    else:
        ark = ali
        alis = read_alignments(ark)
        pdf2phone, silence = None, []
    top = max((int(a.max()) for a in alis.values() if a.numel()), default=-1)
    if num_pdfs is None:
        num_pdfs = top + 1
    if top >= num_pdfs:
        bad = next(u for u, a in alis.items() if a.numel() and int(a.max()) >= num_pdfs)
        raise ValueError(f"{ark}: utterance {bad} has pdf id {top} but the model has {num_pdfs} pdfs "
                         "(alignment from another tree?)")
    return Targets(alis, num_pdfs, pdf2phone, silence, str(ark))


def _write_json(path: Path, obj) -> None:
    write_json_atomic(path, obj, indent=1, default=str)


def _report_skipped(fd: FrameData, what: str, log: Log) -> None:
    if fd.skipped:
        ex = ", ".join(f"{u} ({r})" for u, r in list(fd.skipped.items())[:5])
        log(f"{what}: skipped {len(fd.skipped)} utterance(s): {ex}{' ...' if len(fd.skipped) > 5 else ''}")


def run_pretrain(data_dir: str | Path, out_dir: str | Path, cfg: PretrainConfig, left: int = 5, right: int = 5,
                 device: torch.device | str = "cpu", log: Log = print) -> Path:
    """DBN pretraining on all frames of ``data_dir``; writes ``out_dir/dbn.pt``
    (``asr.generative.save``; meta: splice context, input dim, spliced mean/var)."""
    from asr.generative import save

    out = Path(out_dir)
    feats = load_features(data_dir)
    fd = build_frame_data(feats, None, left, right)
    mean, var = fd.spliced_moments()
    log(f"pretraining DBN {fd.index.shape[1] * fd.feats.shape[1]}-{'-'.join(map(str, cfg.hidden))} "
        f"on {fd.num_frames} frames of {len(fd.utts)} utterances")
    t0 = time.time()
    dbn = pretrain_dbn_on_frames(
        fd, mean, var, cfg, device,
        callback=lambda layer, ep, m, r: log(
            f"  RBM {layer} epoch {ep}: " + " ".join(f"{k} {v:.4g}" for k, v in m.items() if k != "epoch")),
        ckpt_dir=out / "ckpt", log=log)
    path = save(dbn.cpu(), out / "dbn.pt", meta={"left": left, "right": right, "input_dim": fd.feats.shape[1],
                                                 "in_mean": mean, "in_var": var, "config": asdict(cfg),
                                                 "frames": fd.num_frames, "seconds": time.time() - t0})
    log(f"DBN saved to {path} ({time.time() - t0:.1f} s)")
    return path


@dataclass
class DnnTrainConfig:
    """``asr dnn train`` settings: architecture (with a DBN, the DBN defines it), CV split, CE
    schedule. ``output_bias_lr_coef`` None = Kaldi's prototype: 0.1 for a randomly initialised
    network (``make_nnet_proto.py`` with hidden layers), 1.0 on a DBN (``--hid-layers 0``)."""

    hidden: tuple[int, ...] = (1024,) * 6
    left: int = 5
    right: int = 5
    cv_fraction: float = 0.1
    seed: int = 777
    output_bias_lr_coef: float | None = None
    ce: CETrainConfig = field(default_factory=CETrainConfig)


def _dbn_path(p: str | Path) -> Path:
    p = Path(p)
    if p.is_dir():
        p = p / "dbn.pt"
    if not p.is_file():
        # accept "exp/dbn/final" style references
        for cand in (p.with_suffix(".pt"), p.parent / "dbn.pt"):
            if cand.is_file():
                return cand
        raise FileNotFoundError(f"no DBN checkpoint at {p}")
    return p


def check_against_dbn(dbn_dir: str | Path, layers: int | None, units: int | None, context: int | None) -> None:
    """Hidden layers, units per layer and splice context asked of a network fine-tuned from the DBN at
    ``dbn_dir`` must be the DBN's own (None: not asked); a mismatch is a ``ValueError`` naming both."""
    from asr.generative import load_checkpoint

    dbn, meta = load_checkpoint(_dbn_path(dbn_dir), expect="DBN")
    hidden = list(dbn.sizes[1:])
    if layers is not None and layers != len(hidden):
        raise ValueError(f"--layers {layers} but the DBN {dbn_dir} has {len(hidden)} hidden layers")
    if units is not None and any(h != units for h in hidden):
        raise ValueError(f"--units {units} but the DBN {dbn_dir} has layers {hidden}")
    if context is not None and context != int(meta["left"]):
        raise ValueError(f"--context {context} but the DBN {dbn_dir} was trained with ±{meta['left']}")


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def add_extra_training_data(feats: dict[str, Tensor], alis: dict[str, Tensor], train_utts: list[str],
                            extra: list[tuple[str | Path, str | Path]], num_pdfs: int,
                            log: Log = print) -> list[str]:
    """Join perturbed copies (``asr data perturb``: data dirs with ``utt2orig``) to the training
    side: for each ``(data dir, alignment dir)`` of ``extra``, the copies of ``train_utts`` are
    added to ``feats`` / ``alis`` (in place); copies of cross-validation utterances are left out,
    so the CV set and its speakers stay unseen. Returns the training utterances, copies included."""
    from asr.datadir.perturb import read_utt2orig

    keep = set(train_utts)
    out = list(train_utts)
    for data_dir, ali_dir in extra:
        orig = read_utt2orig(data_dir)
        if not orig:
            raise ValueError(f"{data_dir}: no utt2orig (not made by `asr data perturb`): extra training "
                             "data must name the utterance each copy was made from")
        tg = load_targets(ali_dir)
        if tg.num_pdfs != num_pdfs:
            raise ValueError(f"{ali_dir}: {tg.num_pdfs} pdfs, the main alignments have {num_pdfs} "
                             "(extra data must be aligned with the same tree)")
        wanted = sorted(u for u, o in orig.items() if o in keep)
        clash = [u for u in wanted if u in feats]
        if clash:
            raise ValueError(f"{data_dir}: utterance {clash[0]} is already in the training data")
        x = load_features(data_dir, [u for u in wanted if u in tg.alis])
        feats.update(x)
        alis.update({u: tg.alis[u] for u in x})
        out += sorted(x)
        log(f"extra training data {data_dir}: {len(x)} of {len(orig)} utterances (copies of the training "
            f"side; {len(orig) - len(wanted)} of cross-validation utterances left out, "
            f"{len(wanted) - len(x)} not aligned)")
    return sorted(out)


def run_train(data_dir: str | Path, ali: str | Path, out_dir: str | Path, cfg: DnnTrainConfig,
              dbn: str | Path | None = None, device: torch.device | str = "cpu", log: Log = print,
              extra: list[tuple[str | Path, str | Path]] | None = None) -> CEResult:
    """Frame-CE fine-tuning of a DBN-initialised (``dbn``) or randomly initialised (Kaldi prototype,
    ``init_kaldi_proto``) DNN on the pdf alignments ``ali``; ``cv_fraction`` of the speakers held
    out for newbob (Kaldi ``subset_data_dir_tr_cv.sh``). Priors are the pdf frequencies of all
    aligned frames (train and CV, as Kaldi's ``analyze-counts`` over the alignment dir); pdfs never
    seen are disabled (``pdf_log_priors``). Writes (rank 0 only under DDP) ``out_dir/final.pt``
    (model with normalisation and priors), ``ckpt/``, ``log/train_curve.json``, ``config.json``,
    ``pdf2phone.pt``. ``extra``: (data dir, alignment dir) pairs of perturbed copies joined to the
    training side only (:func:`add_extra_training_data`). Raises ``CETrainingError`` when training
    diverges or never improves."""
    out = Path(out_dir)
    rank = _rank()
    tg = load_targets(ali)
    feats = load_features(data_dir)
    utt2spk = read_utt2spk(data_dir)
    utt2spk = {u: s for u, s in utt2spk.items() if u in feats}
    tr, cv = split_cv_speakers(utt2spk, cfg.cv_fraction, cfg.seed)
    if extra:
        feats = dict(feats)
        tg.alis = dict(tg.alis)
        tr = add_extra_training_data(feats, tg.alis, tr, extra, tg.num_pdfs, log)
    left, right, hidden = cfg.left, cfg.right, tuple(cfg.hidden)
    norm = None
    linears = None
    if dbn is not None:
        from asr.generative import load_checkpoint

        dbn_mod, meta = load_checkpoint(_dbn_path(dbn), expect="DBN")
        left, right = int(meta["left"]), int(meta["right"])
        hidden = tuple(int(h) for h in dbn_mod.sizes[1:])
        norm = (meta["in_mean"], meta["in_var"])
        linears = dbn_linears(dbn_mod)
        log(f"initialising from DBN {dbn} ({'-'.join(map(str, hidden))}, context -{left}/+{right})")
    train = build_frame_data(feats, tg.alis, left, right, tg.num_pdfs, utts=tr)
    cvd = build_frame_data(feats, tg.alis, left, right, tg.num_pdfs, utts=cv)
    _report_skipped(train, "train", log)
    _report_skipped(cvd, "cv", log)
    missing = [u for u in tg.alis if u not in feats]
    if missing:
        log(f"{len(missing)} aligned utterance(s) have no features in {data_dir}, e.g. {missing[0]}")
    input_dim = train.feats.shape[1]
    if norm is not None and norm[0].numel() != (left + right + 1) * input_dim:
        raise ValueError(f"DBN {dbn} expects {norm[0].numel()}-dim spliced input, data {data_dir} gives "
                         f"{(left + right + 1) * input_dim}")
    coef = cfg.output_bias_lr_coef
    if coef is None:
        coef = 1.0 if linears is not None else 0.1
    ce = replace(cfg.ce, output_bias_lr_coef=coef)
    g = torch.Generator().manual_seed(cfg.seed)
    model = HybridDNN(NetConfig(input_dim=input_dim, num_pdfs=tg.num_pdfs, hidden=hidden, left=left, right=right))
    init_kaldi_proto(model, g, hidden=linears is None)
    if linears is not None:
        model.init_from_linears(linears)
    model.set_normalisation(*(norm if norm is not None else train.spliced_moments()))
    priors = pdf_log_priors(torch.cat([train.targets, cvd.targets]), tg.num_pdfs)
    model.log_priors.copy_(priors)
    unseen = [int(i) for i in torch.nonzero(priors == DISABLED_LOG_PRIOR).flatten()]
    log(f"train: {train.num_frames} frames / {len(train.utts)} utts; cv: {cvd.num_frames} frames / "
        f"{len(cvd.utts)} utts ({len(set(utt2spk[u] for u in cvd.utts))} speakers); {tg.num_pdfs} pdfs, "
        f"{len(unseen)} never aligned (disabled){': ' + ' '.join(map(str, unseen[:10])) if unseen else ''}"
        f"{' ...' if len(unseen) > 10 else ''}")
    if rank == 0:
        _write_json(out / "config.json", {"data": str(data_dir), "ali": str(ali), "dbn": str(dbn) if dbn else None,
                                          "extra": [[str(d), str(a)] for d, a in extra or []],
                                          "config": asdict(replace(cfg, output_bias_lr_coef=coef, ce=ce)),
                                          "num_pdfs": tg.num_pdfs, "disabled_pdfs": unseen,
                                          "skipped": {**train.skipped, **cvd.skipped}})
    t0 = time.time()
    res = train_ce(model, train, cvd, ce, out, device=device, log=log)
    log(f"CE training done in {time.time() - t0:.1f} s ({res.stop_reason} after {res.summary['epochs_run']} "
        f"epoch(s); best cv loss {res.summary['best_cv_loss']:.4f}, frame acc {res.summary['best_cv_frame_acc']:.4f})")
    if tg.pdf2phone is not None and rank == 0:
        atomic_torch_save({"pdf2phone": tg.pdf2phone, "silence": tg.silence}, out / "pdf2phone.pt")
    return res


def run_decode(model_dir: str | Path, graph_dir: str | Path, data_dir: str | Path, out_dir: str | Path,
               nj: int = 1, lmwt: float | None = None, acwt: float = DNN_ACWT, mode: str = "phone",
               mbr: bool = True, mbr_beam: float | None = None, beam: float | None = None,
               lattice_beam: float | None = None):
    """Hybrid decoding with ``asr.decode.decode_and_score`` (LM weight tuned when ``lmwt`` is None;
    ``mbr``, ``mbr_beam``, ``beam``, ``lattice_beam``: see ``DecodeConfig``, None its default)."""
    from asr.decode import DecodeConfig, decode_and_score

    model_path = Path(model_dir) / "final.pt" if Path(model_dir).is_dir() else Path(model_dir)
    load_model(model_path)  # fail early with a clear message
    job = functools.partial(loglike_job, str(model_path), str(data_dir))
    beams = {k: v for k, v in (("beam", beam), ("lattice_beam", lattice_beam)) if v is not None}
    cfg = DecodeConfig(acwt=acwt, mbr=mbr, mbr_beam=mbr_beam, **beams)
    return decode_and_score(graph_dir, data_dir, out_dir, job, cfg, nj=nj, lmwt=lmwt, mode=mode)


def run_export(model: str | Path, data_dir: str | Path, out_ark: str | Path, logposts: bool = False) -> int:
    """Write per-utterance (T, num_pdfs) scaled log-likelihoods (or log-posteriors) as a Kaldi ark."""
    load_model(model)  # a bad model file fails here, before the output is opened
    feats = load_features(data_dir)
    return write_matrices(loglike_job(str(model), str(data_dir), sorted(feats), logposts=logposts), out_ark)


def run_align(model: str | Path, data_dir: str | Path, ali_dir: str | Path, out_dir: str | Path,
              log: Log = print) -> dict[str, int]:
    """Realign the training data with the DNN (Viterbi over each utterance's state chain from the
    GMM system's alignment, as Kaldi ``align_nnet.sh``): writes ``out_dir/ali_pdf.ark``.
    The chain of an utterance is its phone-level state sequence recovered from the previous
    alignment (consecutive (phone, hmm-state) runs collapsed), so the transcript is kept."""
    from asr.gmm.system import load_system
    from asr.hmm.align import viterbi_align

    sys_ = load_system(ali_dir)
    m = load_model(model)
    pdf_alis = read_alignments(Path(ali_dir) / "ali_pdf.ark")
    st_alis = read_alignments(Path(ali_dir) / "ali_state.ark")
    feats = load_features(data_dir)
    utts = sorted(u for u in pdf_alis if u in feats and u in st_alis)
    chains, lls = [], []
    for u in utts:
        p, s = pdf_alis[u], st_alis[u]
        change = torch.ones_like(p, dtype=torch.bool)
        change[1:] = (p[1:] != p[:-1]) | (s[1:] != s[:-1])
        chains.append(p[change])
        lls.append(m.loglikes(feats[u])[:len(p)])
    res = viterbi_align(lls, chains, sys_.trans)
    out, failed = {}, []
    for u, r in zip(utts, res):
        if r is None:
            failed.append(u)
        else:
            out[u] = r.pdfs
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_alignments(out, Path(out_dir) / "ali_pdf.ark")
    # the tree / pdf->phone map of these pdfs
    write_text_atomic(Path(out_dir) / "gmm_system", str(Path(ali_dir).resolve()) + "\n")
    if failed:
        log(f"realignment failed for {len(failed)} utterance(s), e.g. {failed[:5]}")
    return {"aligned": len(out), "failed": len(failed)}
