"""Frame cross-entropy fine-tuning with Kaldi nnet1's "newbob" schedule, epoch checkpoints and DDP.

Schedule (``steps/nnet/train_scheduler.sh``, defaults kept): after each epoch the mean CE loss on
the held-out (CV) frames is measured; an epoch that does not lower the best CV loss so far is
rejected (training continues from the last accepted model) unless ``epoch <= min_epochs`` or
``epoch <= keep_lr_epochs``. With ``rel_impr = (loss_prev - loss) / loss_prev`` (``loss`` = the
best CV loss after the epoch, so 0 for a rejected epoch): once ``rel_impr < start_halving_impr``
(0.01) the learning rate is multiplied by ``halving_factor`` (0.5) after every epoch, and training
stops when, while halving, ``rel_impr < end_halving_impr`` (0.001), or after ``max_epochs`` (20).
If no epoch improved on the initial model the run fails, as Kaldi's does.

Learning rate: Kaldi's ``nnet-train-frmshuff`` sums the gradient over the minibatch (``Xent`` diff
``y - t`` per frame, ``AffineTransform::Update`` subtracts ``lr`` times the summed correlation);
our loss is the minibatch *mean*, so Kaldi's ``--learn-rate 0.008`` with ``--minibatch-size 256``
is ``lr = 0.008 · 256 = 2.048`` here, momentum 0, no L2. Each epoch starts with fresh momentum
buffers (Kaldi runs one process per epoch).

Precision: ``CETrainConfig.precision = "bfloat16"`` runs the training pass's forward and backward
products under ``torch.autocast`` (bfloat16 inputs, float32 accumulation; parameters, SGD updates,
the loss and the CV pass stay float32): ~1.7x the frames per second of float32 on a CPU with
AVX512-BF16, the newbob decisions still on a float32 CV loss.

Distributed: when ``torch.distributed`` is initialised (e.g. under ``torchrun``), each rank takes
the rows ``rank::world`` of every global minibatch and the model is wrapped in
``DistributedDataParallel``; the loss is scaled so the averaged gradient equals the one of the
single-process run with the same global batch. Only rank 0 writes files.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from asr.jobs.atomic import write_json_atomic
from asr.jobs.device import choose_device
from asr.nnet.frames import FrameData
from asr.nnet.model import HybridDNN, atomic_torch_save, load_data_file, save_model

KALDI_LEARN_RATE = 0.008     # train.sh --learn-rate, per frame of a summed minibatch gradient
KALDI_MINIBATCH = 256        # train_scheduler.sh --minibatch-size


@dataclass
class CETrainConfig:
    """Cross-entropy fine-tuning hyperparameters (loss = mean CE over the global minibatch);
    defaults are Kaldi ``train.sh`` / ``train_scheduler.sh``."""

    lr: float = KALDI_LEARN_RATE * KALDI_MINIBATCH   # per-mean step = Kaldi's per-sum 0.008 x 256
    momentum: float = 0.0
    batch_size: int = KALDI_MINIBATCH                # global minibatch (frames)
    max_epochs: int = 20                             # max_iters
    min_epochs: int = 0                              # min_iters: accept and keep going regardless
    keep_lr_epochs: int = 0                          # keep_lr_iters: fixed lr, no rejection
    start_halving_impr: float = 0.01                 # relative CV-loss improvement that starts halving
    end_halving_impr: float = 0.001                  # ... and that ends training while halving
    halving_factor: float = 0.5
    output_bias_lr_coef: float = 1.0                 # make_nnet_proto's output <BiasLearnRateCoef>
    seed: int = 777
    frames_per_epoch: int | None = None              # subsample this many shuffled frames per epoch (None = all)
    dropout: float = 0.0                             # hidden-unit dropout while training (not Kaldi nnet1's; 0 = off)
    precision: str = "float32"                       # training products: float32 | bfloat16 (autocast; CV loss in float32)


@dataclass
class CEResult:
    history: list[dict] = field(default_factory=list)
    stop_reason: str = ""
    summary: dict = field(default_factory=dict)


class CETrainingError(RuntimeError):
    """CE training did not produce a model: a non-finite loss (``epoch``, ``step`` set) or no epoch
    that improved the CV loss. The last good model has been kept (in memory and ``final.pt``)."""

    def __init__(self, message: str, epoch: int, step: int | None = None):
        super().__init__(message)
        self.epoch = epoch
        self.step = step


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def frame_accuracy(model: HybridDNN, data: FrameData, device: torch.device, batch: int = 4096) -> tuple[float, float]:
    """(frame accuracy, mean CE loss) of ``model`` on labelled frames, no gradient."""
    assert data.targets is not None
    correct, loss, n = 0, 0.0, data.num_frames
    model.eval()
    with torch.no_grad():
        for s in range(0, n, batch):
            rows = torch.arange(s, min(n, s + batch))
            x = data.spliced(rows).to(device)
            y = data.targets[rows].to(device)
            logits = model(x)
            correct += int((logits.argmax(-1) == y).sum())
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
    return correct / n, loss / n


def epoch_permutation(num_frames: int, seed: int, epoch: int, limit: int | None = None) -> Tensor:
    """The seeded frame order of an epoch (shuffling across utterances); a pure function of
    (seed, epoch) so a resumed run replays exactly the same batches."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(num_frames, generator=g)
    return perm[:limit] if limit else perm


def _checkpoint_path(out_dir: Path, epoch: int) -> Path:
    return out_dir / "ckpt" / f"epoch{epoch:03d}.pt"


def _latest_checkpoint(out_dir: Path) -> Path | None:
    cks = sorted((out_dir / "ckpt").glob("epoch*.pt"))
    return cks[-1] if cks else None


def _optimizer(model: HybridDNN, cfg: CETrainConfig, lr: float) -> torch.optim.SGD:
    """SGD with the output bias in its own group (``lr_coef``); fresh momentum buffers."""
    out_bias = [m for m in model.body if isinstance(m, nn.Linear)][-1].bias
    rest = [p for p in model.parameters() if p is not out_bias]
    groups = [{"params": rest, "lr_coef": 1.0}, {"params": [out_bias], "lr_coef": cfg.output_bias_lr_coef}]
    for g in groups:
        g["lr"] = lr * g["lr_coef"]
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)


def newbob_update(state: dict, epoch: int, cv_loss: float, cfg: CETrainConfig) -> tuple[bool, float]:
    """One decision of Kaldi's ``train_scheduler.sh`` after ``epoch`` gave ``cv_loss``.

    ``state`` holds ``best_loss`` (CV loss of the last accepted model), ``lr``, ``halving``,
    ``done``, ``stop_reason``, ``epoch``; it is updated in place (the lr for the next epoch, the
    stop). Returns (accepted, rel_impr) with ``rel_impr = (loss_prev - best_loss) / loss_prev``
    after the decision (0 for a rejected epoch, which therefore starts the halving, or ends
    training when already halving)."""
    loss_prev = state["best_loss"]
    accepted = cv_loss < loss_prev or epoch <= cfg.keep_lr_epochs or epoch <= cfg.min_epochs
    if accepted:
        state["best_loss"] = cv_loss
    rel_impr = (loss_prev - state["best_loss"]) / loss_prev
    state["epoch"] = epoch
    if epoch > cfg.keep_lr_epochs:
        finishing = state["halving"] and rel_impr < cfg.end_halving_impr
        if finishing and epoch > cfg.min_epochs:
            state["done"], state["stop_reason"] = True, "converged"
        elif not finishing:        # (finishing within min_epochs: Kaldi `continue`s, lr unchanged)
            if rel_impr < cfg.start_halving_impr:
                state["halving"] = True
            if state["halving"]:
                state["lr"] *= cfg.halving_factor
    if not state["done"] and epoch >= cfg.max_epochs:
        state["done"], state["stop_reason"] = True, "max_epochs"
    return accepted, rel_impr


def summarise(history: list[dict], cfg: CETrainConfig, stop_reason: str) -> dict:
    """Top-level facts of a CE run for ``log/train_curve.json`` (read by the report)."""
    epochs = [h for h in history if h["epoch"] > 0]
    accepted = [h for h in history if h["accepted"]]
    best = min(accepted, key=lambda h: h["cv_loss"]) if accepted else None
    last = epochs[-1] if epochs else None
    halving = [h["epoch"] for h in epochs if h.get("halving")]
    improving = bool(last and last["accepted"] and (last.get("rel_impr") or 0.0) >= cfg.end_halving_impr)
    return {"schedule": "newbob on relative CV loss improvement (Kaldi steps/nnet/train_scheduler.sh)",
            "max_epochs": cfg.max_epochs, "min_epochs": cfg.min_epochs, "keep_lr_epochs": cfg.keep_lr_epochs,
            "start_halving_impr": cfg.start_halving_impr, "end_halving_impr": cfg.end_halving_impr,
            "halving_factor": cfg.halving_factor, "initial_lr": cfg.lr, "momentum": cfg.momentum,
            "batch_size": cfg.batch_size, "epochs_run": len(epochs), "stop_reason": stop_reason,
            "stopped_at_cap_while_improving": stop_reason == "max_epochs" and improving,
            "halving_from_epoch": halving[0] if halving else None,
            "final_lr": last["lr"] if last else cfg.lr,
            "best_epoch": best["epoch"] if best else None,
            "best_cv_loss": best["cv_loss"] if best else None,
            "best_cv_frame_acc": best["cv_frame_acc"] if best else None,
            "rejected_epochs": [h["epoch"] for h in epochs if not h["accepted"]]}


def _write_curve(out_dir: Path, history: list[dict], summary: dict) -> None:
    write_json_atomic(out_dir / "log" / "train_curve.json", {**summary, "epochs": history}, indent=1)


class _HiddenDropout:
    """Dropout on every hidden layer's output while the model is in training mode (Srivastava et
    al. 2014; inverted scaling, so evaluation needs nothing), as forward hooks on the body's
    sigmoids: the saved model's layout is unchanged. Masks come from a generator seeded per
    epoch (``reseed``), so a resumed run replays the same masks. A context manager: the hooks
    are removed on leaving it, however the training loop ends."""

    def __init__(self, model: HybridDNN, p: float):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p, self.gen, self.handles = p, None, []
        if p > 0:
            self.handles = [m.register_forward_hook(self._hook) for m in model.body if isinstance(m, nn.Sigmoid)]

    def reseed(self, seed: int, device: torch.device) -> None:
        if self.p > 0:
            self.gen = torch.Generator(device=device).manual_seed(seed)

    def _hook(self, module: nn.Module, inputs: tuple, out: Tensor) -> Tensor | None:
        if not module.training:
            return None
        keep = torch.empty_like(out).bernoulli_(1.0 - self.p, generator=self.gen)
        return out * keep / (1.0 - self.p)

    def __enter__(self) -> "_HiddenDropout":
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def train_ce(model: HybridDNN, train: FrameData, cv: FrameData, cfg: CETrainConfig, out_dir: str | Path,
             device: torch.device | str = "cpu", log: Callable[[str], None] = print,
             stop_after_steps: int | None = None, check_every: int = 100) -> CEResult:
    """Fine-tune ``model`` (in place) with frame CE + newbob; resumes from ``out_dir/ckpt``.

    Writes (rank 0) ``out_dir/ckpt/epochNNN.pt`` after every epoch (last accepted model, schedule
    state, history), ``out_dir/final.pt`` (via ``save_model``) and ``out_dir/log/train_curve.json``
    (``summarise`` facts + per-epoch records: epoch, lr, train_loss, train_frame_acc (of the
    training pass, while the model changes, as Kaldi reports it), cv_frame_acc, cv_loss, rel_impr,
    accepted, halving, seconds (wall), cpu_seconds (process), frames_per_s).

    The loss is checked every ``check_every`` steps and at the end of each epoch (one host sync
    each). A non-finite loss restores the model of the last accepted epoch, writes it as
    ``final.pt`` with the curve, and raises ``CETrainingError`` naming the epoch; so does a run in
    which no epoch improved the initial CV loss. ``stop_after_steps`` simulates a kill mid-epoch
    (for tests): returns without checkpointing.
    """
    out_dir = Path(out_dir)
    device = torch.device(device)
    if cfg.precision not in ("float32", "bfloat16"):
        raise ValueError(f"CETrainConfig.precision must be float32 or bfloat16, got {cfg.precision!r}")
    low = cfg.precision == "bfloat16"
    rank, world = _dist()
    model.to(device)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    state = {"epoch": 0, "lr": cfg.lr, "halving": False, "best_loss": None, "history": [], "done": False,
             "stop_reason": ""}
    ck_path = _latest_checkpoint(out_dir)
    if ck_path is not None:
        ck = load_data_file(ck_path, "CE training checkpoint", device)
        # settings added since a checkpoint was written count as their defaults
        if not isinstance(ck, dict) or {**asdict(CETrainConfig()), **(ck.get("config") or {})} != asdict(cfg):
            raise ValueError(f"{ck_path} was written with another training config "
                             f"({ck.get('config') if isinstance(ck, dict) else None}); "
                             f"remove {out_dir / 'ckpt'} or use a new output dir")
        model.load_state_dict(ck["model"])
        state = ck["state"]
        log(f"resuming from {ck_path} (epoch {state['epoch']} done, lr {state['lr']:.4g})")
    elif rank == 0:
        acc0, loss0 = frame_accuracy(model, cv, device)
        state["best_loss"] = loss0
        state["history"].append({"epoch": 0, "lr": cfg.lr, "train_loss": None, "train_frame_acc": None,
                                 "cv_frame_acc": acc0, "cv_loss": loss0, "rel_impr": None, "accepted": True,
                                 "halving": False, "seconds": None, "cpu_seconds": None,
                                 "frames_per_s": None})
        log(f"epoch 0: cv frame acc {acc0:.4f} cv loss {loss0:.4f}")
    if world > 1:  # everybody starts from the same history (rank 0 evaluated epoch 0)
        box = [state]
        dist.broadcast_object_list(box, src=0)
        state = box[0]
    feats, index = train.feats.to(device), train.index.to(device)
    targets = train.targets.to(device)
    steps = 0
    failure: CETrainingError | None = None
    with _HiddenDropout(model, cfg.dropout) as drop:
        while not state["done"] and state["epoch"] < cfg.max_epochs:
            epoch = state["epoch"] + 1
            opt = _optimizer(model, cfg, state["lr"])
            good_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
            perm = epoch_permutation(train.num_frames, cfg.seed, epoch, cfg.frames_per_epoch).to(device)
            drop.reseed(cfg.seed * 1_000_003 + epoch + 7919 * (rank + 1), device)
            model.train()
            t_start, c_start = time.perf_counter(), time.process_time()
            tot = torch.zeros((), device=device, dtype=torch.float64)
            correct = torch.zeros((), device=device, dtype=torch.long)
            nfr = 0
            n_steps = math.ceil(len(perm) / cfg.batch_size)
            for i, s in enumerate(range(0, len(perm), cfg.batch_size)):
                rows = perm[s:s + cfg.batch_size]
                gb = len(rows)
                mine = rows[rank::world]
                x = feats[index[mine]].reshape(len(mine), -1)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=low):
                    logits = net(x)
                logits = logits.float()
                y = targets[mine]
                loss_sum = nn.functional.cross_entropy(logits, y, reduction="sum")
                (loss_sum * (world / gb)).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                # a frame is right when its target's logit is the largest (amax: a tenth of argmax's time
                # on (256, 1356), 2 % of a step; the two differ only on exact ties)
                lg = logits.detach()
                right = (lg.gather(1, y[:, None]).squeeze(1) >= lg.amax(1)).sum()
                stats = torch.stack([loss_sum.detach().double(), right.double()])
                if world > 1:
                    dist.all_reduce(stats)
                tot += stats[0]
                correct += stats[1].long()
                nfr += gb
                steps += 1
                if (i + 1) % check_every == 0 or i + 1 == n_steps:
                    if not bool(torch.isfinite(tot)):
                        model.load_state_dict(good_model)
                        failure = CETrainingError(
                            f"non-finite loss at epoch {epoch} (by step {i + 1} of {n_steps}): stopped; kept the "
                            f"model of epoch {max(h['epoch'] for h in state['history'] if h['accepted'])}",
                            epoch=epoch, step=i + 1)
                        break
                if stop_after_steps is not None and steps >= stop_after_steps:
                    return CEResult(history=state["history"])
            if failure is not None:
                state["stop_reason"] = "diverged"
                log(str(failure))
                break
            secs, cpu_secs = time.perf_counter() - t_start, time.process_time() - c_start
            acc, cv_loss = frame_accuracy(model, cv, device)
            rec = {"epoch": epoch, "lr": state["lr"], "train_loss": float(tot) / max(nfr, 1),
                   "train_frame_acc": int(correct) / max(nfr, 1), "cv_frame_acc": acc, "cv_loss": cv_loss,
                   "halving": state["halving"], "seconds": secs, "cpu_seconds": cpu_secs,
                   "frames_per_s": nfr / max(secs, 1e-9)}
            accepted, rel_impr = newbob_update(state, epoch, cv_loss, cfg)
            if not accepted:
                model.load_state_dict(good_model)
            rec.update(rel_impr=rel_impr, accepted=accepted)
            state["history"].append(rec)
            log(f"epoch {epoch}: lr {rec['lr']:.4g} train loss {rec['train_loss']:.4f} acc {rec['train_frame_acc']:.4f}"
                f" | cv loss {cv_loss:.4f} acc {acc:.4f} (rel. impr. {rel_impr:+.4f}) "
                f"{'accepted' if accepted else 'rejected'} | {rec['frames_per_s']:.0f} frames/s")
            if rank == 0:
                atomic_torch_save({"model": model.state_dict(), "state": state, "config": asdict(cfg)},
                                  _checkpoint_path(out_dir, epoch))
            if world > 1:
                dist.barrier()
    if failure is None and not any(h["accepted"] for h in state["history"] if h["epoch"] > 0):
        failure = CETrainingError(f"no epoch lowered the CV loss of the initial model "
                                  f"({state['history'][0]['cv_loss']:.4f}) in {state['epoch']} epoch(s)",
                                  epoch=state["epoch"])
        state["stop_reason"] = "no_improvement"
    if not state["stop_reason"]:
        state["stop_reason"] = "max_epochs" if state["epoch"] >= cfg.max_epochs else "converged"
    summary = summarise(state["history"], cfg, state["stop_reason"])
    if rank == 0:
        model.cpu()
        save_model(model, out_dir / "final.pt", extra={"history": state["history"], "config": asdict(cfg),
                                                       "summary": summary,
                                                       "error": str(failure) if failure else None})
        _write_curve(out_dir, state["history"], summary)
        model.to(device)
    if world > 1:
        dist.barrier()
    if failure is not None:
        raise failure
    return CEResult(history=state["history"], stop_reason=state["stop_reason"], summary=summary)


resolve_device = choose_device   # the one device decision of a run (asr.jobs.device)
