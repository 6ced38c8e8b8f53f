"""Sequence-discriminative training of the hybrid DNN (MPE / sMBR / MMI / bMMI) after CE.

Per minibatch of utterances: the network gives scaled log-likelihoods ll = log p(s|x) − log p(s)
(B, T, P); ``sequence_objective`` runs the numerator (reference alignment constrained) and
denominator forward-backward over the lattice-free denominator (pdf-bigram HMM or ε-free graph),
or ``lattice_objective`` over each utterance's denominator lattice (arc-level MPE), and returns ∂F/∂ll; the network is
updated with the surrogate loss −Σ ∂F/∂ll · ll / frames (+ optional CE frame smoothing,
Su et al. 2013: loss = (1−H)·seq + H·CE). Like Kaldi ``nnet-train-mpe-sequential`` the priors
stay fixed. Epoch checkpoints (plain data, ``asr.jobs.safeio``) are resumed from. A non-finite
network output, objective or loss stops training with ``StageFailed`` naming the epoch and the
utterances (no ``final.pt`` is written); utterances left out (no lattice, a lattice with a
non-finite total score, no reference path) are named in the log and counted in
``out_dir/log/counts.json``.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from asr.jobs.atomic import write_json_atomic
from asr.jobs.safeio import load_data, save_data
from asr.jobs.stage import StageFailed, describe_ids, write_counts
from asr.nnet.frames import FrameData
from asr.nnet.model import HybridDNN, save_model
from asr.nnet.train import frame_accuracy
from asr.seqtrain.fb import DenGraph
from asr.seqtrain.objective import sequence_objective
from asr.seqtrain.lattice import DenLattice, lattice_objective
from asr.seqtrain.pdfhmm import PdfHmmDen

Denominator = DenGraph | PdfHmmDen | dict[str, DenLattice]


@dataclass
class SeqTrainConfig:
    """criterion: mpe (arc-level, lattices only) | mpfe | smbr | mmi | bmmi; kappa: acoustic scale; boost: b of bMMI;
    ce_smoothing: H of F-smoothing; utts_per_epoch: random subset per epoch (None = all)."""

    criterion: str = "mpe"
    epochs: int = 2
    lr: float = 0.02
    momentum: float = 0.0
    kappa: float = 0.1
    boost: float = 0.1
    ce_smoothing: float = 0.1
    batch_utts: int = 8
    utts_per_epoch: int | None = None
    exclude_silence: bool = False
    seed: int = 777


def check_config(cfg: SeqTrainConfig) -> None:
    """Refuse settings the criterion would ignore (a parameter accepted and ignored is a bug):
    ``exclude_silence`` does nothing to MMI, and arc-level MPE's accuracies are fixed when the
    lattices are made (``asr seq lattices``), so neither takes it."""
    if cfg.criterion not in ("mpe", "mpfe", "smbr", "mmi", "bmmi"):
        raise ValueError(f"unknown criterion {cfg.criterion!r} (mpe|mpfe|smbr|mmi|bmmi)")
    if cfg.exclude_silence and cfg.criterion == "mmi":
        raise ValueError("--exclude-silence has no effect on MMI (it changes accuracies: mpfe, smbr, and "
                         "bmmi's boosting)")
    if cfg.exclude_silence and cfg.criterion == "mpe":
        raise ValueError("--exclude-silence cannot change arc-level MPE: its phone accuracies are computed "
                         "when the lattices are made (`asr seq lattices`); use --criterion mpfe or smbr to "
                         "exclude silence")
    if cfg.epochs < 1 or cfg.batch_utts < 1 or cfg.lr <= 0 or cfg.kappa <= 0:
        raise ValueError(f"epochs, batch_utts, lr and kappa must be positive: {cfg}")
    if not 0.0 <= cfg.ce_smoothing < 1.0:
        raise ValueError(f"ce_smoothing must be in [0, 1), got {cfg.ce_smoothing}")


def _pad_batch(model: HybridDNN, data: FrameData, rows_of: list[Tensor], device: torch.device
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Network output for a batch of utterances: (logits (N, P) of the concatenated frames,
    lengths (B,), padded position index (N,) into B*T, padded refs (B, T))."""
    rows = torch.cat(rows_of)
    lengths = torch.tensor([len(r) for r in rows_of])
    t_max = int(lengths.max())
    x = data.spliced(rows).to(device)
    logits = model(x)
    pos = torch.cat([i * t_max + torch.arange(len(r)) for i, r in enumerate(rows_of)])
    ref = torch.zeros(len(rows_of) * t_max, dtype=torch.long)
    ref[pos] = data.targets[rows]
    return logits, lengths, pos, ref.view(len(rows_of), t_max)


def train_sequence(model: HybridDNN, train: FrameData, cv: FrameData, graph: Denominator, cfg: SeqTrainConfig,
                   out_dir: str | Path, pdf2phone: Tensor | None = None, silence_phones: list[int] | None = None,
                   device: torch.device | str = "cpu", log: Callable[[str], None] = print,
                   phone_class: Tensor | None = None) -> list[dict]:
    """Sequence-train ``model`` in place; returns the per-epoch curve (epoch, objective per frame,
    cv_frame_acc, no_num_path, seconds, utts/s) also written to ``out_dir/log/train_curve.json``.
    Writes ``out_dir/ckpt/epochNNN.pt`` each epoch (resumed from) and ``out_dir/final.pt``.

    ``graph``: one lattice-free denominator for all utterances, or a dict utt -> ``DenLattice``
    (training utterances without a lattice are skipped, reported by id with a count).
    ``phone_class`` (num_phones+1,): phone id -> class matched by the lattice frame criteria
    (e.g. the 48->39 folding; default identity).

    Raises ``StageFailed`` (naming epoch and utterances) when the network output, the objective,
    its gradient or the loss is not finite, or when no utterance contributed to an epoch."""
    out = Path(out_dir)
    device = torch.device(device)
    lattices = graph if isinstance(graph, dict) else None
    check_config(cfg)
    if cfg.exclude_silence and (not silence_phones or pdf2phone is None):
        raise ValueError("exclude_silence needs the silence phones and the pdf -> phone map (--ali as a GMM exp dir)")
    if lattices is None:
        graph.validate(model.cfg.num_pdfs)
    elif pdf2phone is None and cfg.criterion in ("mpfe", "bmmi"):
        raise ValueError(f"criterion {cfg.criterion} needs the pdf -> phone map")
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    sil = torch.tensor(silence_phones or [], dtype=torch.long) if cfg.exclude_silence else None
    pdf_class = sil_class = None
    if lattices is not None and pdf2phone is not None:
        pc = phone_class if phone_class is not None else torch.arange(int(pdf2phone.max()) + 1)
        pdf_class = pc[pdf2phone]
        sil_class = pc[sil] if sil is not None else None
    usable = torch.ones(len(train.utts), dtype=torch.bool)
    skipped: list[str] = []
    if lattices is not None:
        usable = torch.tensor([u in lattices and lattices[u].num_frames == int(n)
                               for u, n in zip(train.utts, train.lengths.tolist())], dtype=torch.bool)
        skipped = [u for u, ok in zip(train.utts, usable.tolist()) if not ok]
        if skipped:
            log(f"training utterances with no denominator lattice (or one of another length), "
                f"skipped: {describe_ids(skipped)}")
        if not bool(usable.any()):
            raise ValueError("no training utterance has a denominator lattice")
    starts = torch.cumsum(train.lengths, 0) - train.lengths
    history: list[dict] = []
    done_epochs = 0
    cks = sorted((out / "ckpt").glob("epoch*.pt"))
    if cks:
        ck = load_data(cks[-1], map_location=device, what="sequence-training checkpoint")
        same = {k: v for k, v in asdict(cfg).items() if k != "epochs"}
        if {k: v for k, v in ck.get("config", {}).items() if k != "epochs"} != same:
            raise ValueError(f"{cks[-1]} was written with another config ({ck.get('config')}); remove "
                             f"{out / 'ckpt'} or use a new output dir")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        history, done_epochs = ck["history"], ck["epoch"]
        log(f"resuming from {cks[-1]}")
    else:
        acc0, _ = frame_accuracy(model, cv, device)
        history.append({"epoch": 0, "objective": None, "cv_frame_acc": acc0, "criterion": cfg.criterion})
        log(f"epoch 0: cv frame acc {acc0:.4f}")
    log_priors = model.log_priors
    # utterances left out of an update: no reference path in a lattice-free denominator, or a
    # lattice whose total score is not finite (lattice denominators); counted over all epochs
    dropped: dict[str, list[str]] = {"no_num_path": [], "nonfinite_lattices": []}
    drop_kind = "nonfinite_lattices" if lattices is not None else "no_num_path"

    def record_counts() -> None:
        write_counts(out, {"no_lattice": skipped, **{k: sorted(set(v)) for k, v in dropped.items()}})

    def fail(msg: str, utts: list[str]) -> None:
        record_counts()
        log(f"{msg}: {describe_ids(utts)}")
        kept = (f"epoch {epoch - 1} is checkpointed under {out / 'ckpt'}" if epoch > 1 else "no epoch finished")
        raise StageFailed(f"{msg} (utterances {describe_ids(utts)}); {kept}; no final model was written")

    for epoch in range(done_epochs + 1, cfg.epochs + 1):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(len(train.utts), generator=g)
        order = order[usable[order]]
        if cfg.utts_per_epoch:
            order = order[:cfg.utts_per_epoch]
        # batch utterances of similar length together (less padding), batches in random order
        order = order[torch.argsort(train.lengths[order], stable=True)]
        batches = [order[i:i + cfg.batch_utts] for i in range(0, len(order), cfg.batch_utts)]
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g)]
        t0 = time.time()
        obj_sum, frames, no_path = 0.0, 0, []
        model.train()
        for bi in batches:
            names = [train.utts[i] for i in bi.tolist()]
            rows_of = [torch.arange(int(starts[i]), int(starts[i] + train.lengths[i])) for i in bi.tolist()]
            logits, lengths, pos, ref = _pad_batch(model, train, rows_of, device)
            logp = torch.log_softmax(logits, -1)
            ll = logp - log_priors
            bad_rows = (~torch.isfinite(ll.detach()).all(1)).cpu().long()
            bad_out = torch.zeros(len(rows_of), dtype=torch.long).index_add_(
                0, torch.repeat_interleave(torch.arange(len(rows_of)), lengths), bad_rows) > 0
            if bool(bad_out.any()):
                fail(f"non-finite network output at epoch {epoch}",
                     [u for u, b in zip(names, bad_out.tolist()) if b])
            padded = torch.zeros(len(rows_of) * int(lengths.max()), ll.shape[1], device=ll.device)
            padded[pos.to(ll.device)] = ll.detach()          # the objective runs where the network does
            padded = padded.view(len(rows_of), -1, ll.shape[1])
            if lattices is not None:
                so = lattice_objective([lattices[u] for u in names], padded, lengths, ref,
                                       criterion=cfg.criterion, kappa=cfg.kappa, boost=cfg.boost,
                                       pdf_class=pdf_class, silence_classes=sil_class)
            else:
                so = sequence_objective(graph, padded, lengths, ref, criterion=cfg.criterion, kappa=cfg.kappa,
                                        boost=cfg.boost, pdf2phone=pdf2phone, silence_phones=sil)
            no_path.extend(u for u, b in zip(names, so.no_num_path.tolist()) if b)
            # left-out utterances contribute nothing (their gradient may be NaN: 0 * NaN)
            grad = torch.where(so.no_num_path.view(-1, 1, 1), torch.zeros_like(so.grad), so.grad)
            bad_obj = (~torch.isfinite(so.objective) | ~torch.isfinite(grad).flatten(1).all(1)) & ~so.no_num_path
            if bool(bad_obj.any()):
                fail(f"non-finite {cfg.criterion} objective or gradient at epoch {epoch}",
                     [u for u, b in zip(names, bad_obj.tolist()) if b])
            ok_frames = int(lengths[~so.no_num_path].sum())
            if ok_frames == 0:
                continue
            gflat = grad.reshape(-1, ll.shape[1])[pos.to(grad.device)].to(device)
            keep = torch.repeat_interleave(~so.no_num_path.to(device), lengths.to(device))
            loss = -(gflat * ll).sum() / ok_frames
            if cfg.ce_smoothing > 0:
                tgt = train.targets[torch.cat(rows_of)].to(device)
                ce = nn.functional.nll_loss(logp[keep], tgt[keep], reduction="sum") / ok_frames
                loss = (1 - cfg.ce_smoothing) * loss + cfg.ce_smoothing * ce
            if not torch.isfinite(loss):
                fail(f"non-finite training loss at epoch {epoch}", names)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            obj_sum += float(so.objective.sum())
            frames += ok_frames
        secs = time.time() - t0
        dropped[drop_kind].extend(no_path)
        if no_path:
            why = ("the lattice's total score is not finite" if lattices is not None
                   else "the reference has no path in the denominator graph")
            log(f"epoch {epoch}: utterances left out of the update, {why}: {describe_ids(no_path)}")
        if frames == 0:
            fail(f"epoch {epoch}: no utterance contributed to the {cfg.criterion} objective", no_path)
        acc, cv_loss = frame_accuracy(model, cv, device)
        n_utts = sum(len(b) for b in batches)
        rec = {"epoch": epoch, "criterion": cfg.criterion, "objective": obj_sum / max(frames, 1),
               "cv_frame_acc": acc, "cv_loss": cv_loss, "utterances": n_utts, "frames": frames,
               "no_num_path": len(no_path), "seconds": secs, "utts_per_s": n_utts / max(secs, 1e-9)}
        history.append(rec)
        log(f"epoch {epoch}: {cfg.criterion} objective/frame {rec['objective']:.4f} cv frame acc {acc:.4f} "
            f"({n_utts} utts, {rec['utts_per_s']:.2f} utt/s)")
        save_data({"model": model.state_dict(), "opt": opt.state_dict(), "history": history, "epoch": epoch,
                   "config": asdict(cfg)}, out / "ckpt" / f"epoch{epoch:03d}.pt")
    record_counts()
    model.cpu()
    save_model(model, out / "final.pt", extra={"history": history, "config": asdict(cfg)})
    write_json_atomic(out / "log" / "train_curve.json", history, indent=1)
    model.to(device)
    return history
