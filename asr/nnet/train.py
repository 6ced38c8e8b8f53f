"""Frame cross-entropy fine-tuning with the "newbob" schedule, epoch checkpoints and DDP.

Schedule (as Kaldi nnet1 ``steps/nnet/train_scheduler.sh``, on held-out frame accuracy): after
each epoch the cross-validation frame accuracy is measured; an epoch that lowers it is rejected
(the model goes back to the last accepted one); once the accuracy gain drops below
``start_halving_gain`` the learning rate is halved every epoch, and training stops when, while
halving, the gain drops below ``end_halving_gain`` (or after ``max_epochs``).

Distributed: when ``torch.distributed`` is initialised (e.g. under ``torchrun``), each rank takes
the rows ``rank::world`` of every global minibatch and the model is wrapped in
``DistributedDataParallel``; the loss is scaled so the averaged gradient equals the one of the
single-process run with the same global batch. Only rank 0 writes files.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from asr.nnet.frames import FrameData
from asr.nnet.model import HybridDNN, save_model


@dataclass
class CETrainConfig:
    """Cross-entropy fine-tuning hyperparameters (loss = mean CE over the global minibatch)."""

    lr: float = 0.2                      # SGD step on the mean loss (≈ Kaldi nnet1 0.008 summed over 256 frames)
    momentum: float = 0.9
    batch_size: int = 256                # global minibatch (frames)
    max_epochs: int = 8
    min_epochs: int = 1
    start_halving_gain: float = 0.005    # absolute CV frame-accuracy gain (0.005 = 0.5 %)
    end_halving_gain: float = 0.001
    halving_factor: float = 0.5
    seed: int = 777
    frames_per_epoch: int | None = None  # subsample this many shuffled frames per epoch (None = all)


@dataclass
class CEResult:
    history: list[dict] = field(default_factory=list)
    diverged: bool = False
    message: str = ""


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


def _atomic_save(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_ce(model: HybridDNN, train: FrameData, cv: FrameData, cfg: CETrainConfig, out_dir: str | Path,
             device: torch.device | str = "cpu", log: Callable[[str], None] = print,
             stop_after_steps: int | None = None) -> CEResult:
    """Fine-tune ``model`` (in place) with frame CE + newbob; resumes from ``out_dir/ckpt``.

    Writes (rank 0) ``out_dir/ckpt/epochNNN.pt`` after every epoch (model, optimizer, lr,
    schedule state, history) and ``out_dir/final.pt`` (via ``save_model``) at the end. On a
    non-finite loss, training stops, the last accepted model is kept and the result says so.
    ``stop_after_steps`` simulates a kill mid-epoch (for tests): returns without checkpointing.
    Returns the per-epoch history (epoch, lr, train_loss, cv_frame_acc, cv_loss, accepted).
    """
    out_dir = Path(out_dir)
    device = torch.device(device)
    rank, world = _dist()
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    state = {"epoch": 0, "lr": cfg.lr, "halving": False, "history": [], "done": False}
    ck_path = _latest_checkpoint(out_dir)
    if ck_path is not None:
        ck = torch.load(ck_path, map_location=device, weights_only=False)
        if ck.get("config") != asdict(cfg):
            raise ValueError(f"{ck_path} was written with another training config ({ck.get('config')}); "
                             f"remove {out_dir / 'ckpt'} or use a new output dir")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        log(f"resuming from {ck_path} (epoch {state['epoch']} done, lr {state['lr']:.4g})")
    elif rank == 0:
        acc0, loss0 = frame_accuracy(model, cv, device)
        state["history"].append({"epoch": 0, "lr": cfg.lr, "train_loss": None, "cv_frame_acc": acc0,
                                 "cv_loss": loss0, "accepted": True})
        log(f"epoch 0: cv frame acc {acc0:.4f} cv loss {loss0:.4f}")
    if world > 1:  # everybody starts from the same history (rank 0 evaluated epoch 0)
        box = [state]
        dist.broadcast_object_list(box, src=0)
        state = box[0]
    result = CEResult(history=state["history"])
    feats, index = train.feats.to(device), train.index.to(device)
    targets = train.targets.to(device)
    steps = 0
    while not state["done"] and state["epoch"] < cfg.max_epochs:
        epoch = state["epoch"] + 1
        for grp in opt.param_groups:
            grp["lr"] = state["lr"]
        good_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        good_opt = opt.state_dict()
        good_opt = {"state": {k: {n: (t.clone() if torch.is_tensor(t) else t) for n, t in v.items()}
                              for k, v in good_opt["state"].items()},
                    "param_groups": good_opt["param_groups"]}
        perm = epoch_permutation(train.num_frames, cfg.seed, epoch, cfg.frames_per_epoch).to(device)
        model.train()
        t_start = time.perf_counter()
        tot, nfr = torch.zeros((), device=device, dtype=torch.float64), 0
        for s in range(0, len(perm), cfg.batch_size):
            rows = perm[s:s + cfg.batch_size]
            gb = len(rows)
            mine = rows[rank::world]
            x = feats[index[mine]].reshape(len(mine), -1)
            logits = net(x)
            loss_sum = nn.functional.cross_entropy(logits, targets[mine], reduction="sum")
            (loss_sum * (world / gb)).backward()
            if world > 1:
                ls = loss_sum.detach().clone()
                dist.all_reduce(ls)
            else:
                ls = loss_sum.detach()
            if not torch.isfinite(ls):
                opt.zero_grad(set_to_none=True)
                model.load_state_dict(good_model)
                result.diverged = True
                result.message = (f"non-finite loss at epoch {epoch}, step {s // cfg.batch_size}: "
                                  f"stopped, kept the model of epoch {state['epoch']}")
                log(result.message)
                state["done"] = True
                break
            opt.step()
            opt.zero_grad(set_to_none=True)
            tot += ls
            nfr += gb
            steps += 1
            if stop_after_steps is not None and steps >= stop_after_steps:
                return result
        if result.diverged:
            break
        secs = time.perf_counter() - t_start
        acc, cv_loss = frame_accuracy(model, cv, device)
        prev = max(h["cv_frame_acc"] for h in state["history"] if h["accepted"])
        gain = acc - prev
        accepted = gain > 0 or epoch <= cfg.min_epochs
        rec = {"epoch": epoch, "lr": state["lr"], "train_loss": float(tot) / max(nfr, 1),
               "cv_frame_acc": acc, "cv_loss": cv_loss, "accepted": accepted, "seconds": secs,
               "frames_per_s": nfr / max(secs, 1e-9)}
        state["history"].append(rec)
        if not accepted:
            model.load_state_dict(good_model)
            opt.load_state_dict(good_opt)
        log(f"epoch {epoch}: lr {state['lr']:.4g} train loss {rec['train_loss']:.4f} "
            f"cv frame acc {acc:.4f} (gain {gain:+.4f}){'' if accepted else ' rejected'}")
        if epoch >= cfg.min_epochs:
            if state["halving"] and gain < cfg.end_halving_gain:
                state["done"] = True
            if gain < cfg.start_halving_gain:
                state["halving"] = True
        if state["halving"]:
            state["lr"] *= cfg.halving_factor
        state["epoch"] = epoch
        if rank == 0:
            _atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state, "config": asdict(cfg)},
                         _checkpoint_path(out_dir, epoch))
        if world > 1:
            dist.barrier()
    result.history = state["history"]
    if rank == 0:
        model.cpu()
        save_model(model, out_dir / "final.pt", extra={"history": state["history"], "config": asdict(cfg),
                                                       "diverged": result.diverged, "message": result.message})
        (out_dir / "log").mkdir(parents=True, exist_ok=True)
        tmp = out_dir / "log" / "train_curve.json.tmp"
        tmp.write_text(json.dumps(state["history"], indent=1))
        os.replace(tmp, out_dir / "log" / "train_curve.json")
        model.to(device)
    if world > 1:
        dist.barrier()
    return result


def resolve_device(name: str | None) -> torch.device:
    """'auto'/None -> cuda when available else cpu; otherwise ``torch.device(name)`` (checked)."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(name)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return d

