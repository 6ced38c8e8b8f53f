"""DBN pretraining of the acoustic DNN's hidden layers, as Kaldi nnet1 ``steps/nnet/pretrain_dbn.sh``
(Hinton et al. 2006; Mohamed, Dahl & Hinton 2012).

Uses ``asr.generative`` (no second RBM implementation). The first RBM is Gaussian–Bernoulli on the
spliced features after global mean/variance normalisation (Kaldi's ``cmvn-g`` feature transform;
unit variance is what the Gaussian RBM assumes, and its reconstruction is the mean ``W h + b``
without noise, as ``--input-vis-type gauss``); the others are Bernoulli–Bernoulli on the hidden
probabilities of the layer below. Every RBM is trained by CD-1 on shuffled minibatches with
Kaldi's ``rbm-train-cd1-frmshuff`` schedule (see ``asr.generative.RBMTrainConfig``, schedule
``"kaldi"``): applied learning rate ``lr (1 - m_t)``, m_t ramped from 0.5 towards 0.9 by 1/40 every
500 000 frames, velocity momentum 0.9, L2 penalty 2e-4, the Gaussian variance guard, and the
Gaussian layer trained for twice the epochs of the others.

Kaldi's per-frame gradient sums and our batch means coincide here: ``RbmUpdate`` multiplies the
summed statistics by ``lr / N``, so its learning rates are already per-mean rates.

Speed: the spliced, normalised inputs are materialised once (when they fit in ``cache_bytes``) and
each upper RBM trains on its lower layer's outputs computed once (``pretrain_dbn`` lifts a
tensor layer by layer), so every RBM costs the same CD-1 work per frame whatever its depth.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from asr.nnet.frames import FrameData
from asr.nnet.model import atomic_torch_save, load_data_file


@dataclass
class PretrainConfig:
    """DBN sizes and CD-1 settings; defaults are Kaldi ``pretrain_dbn.sh`` /
    ``rbm-train-cd1-frmshuff`` (``--rbm-iter 1``, lr 0.4 / 0.01, minibatch 100,
    ``--param-stddev`` 0.1, ``--rbm-l2penalty`` 0.0002)."""

    hidden: tuple[int, ...] = (1024,) * 6
    epochs: int = 1                     # CD-1 epochs per Bernoulli RBM (Kaldi --rbm-iter)
    gaussian_epoch_factor: int = 2      # the Gaussian RBM gets this many times more epochs
    batch_size: int = 100
    lr_gaussian: float = 0.01
    lr_bernoulli: float = 0.4
    initial_momentum: float = 0.5
    momentum: float = 0.9
    momentum_steps: int = 40
    momentum_step_frames: int = 500_000
    weight_decay: float = 2e-4
    init_std: float = 0.1
    variance_guard: bool = True
    frames_per_epoch: int | None = None  # subsample this many shuffled frames per epoch (None = all)
    cache_bytes: int = 2 ** 31           # memory for the materialised inputs of one layer
    seed: int = 777
    precision: str = "float32"           # matrix products: float32 | bfloat16 (RBMTrainConfig.matmul_dtype)

    def rbm_configs(self) -> list:
        """One ``asr.generative.RBMTrainConfig`` per layer."""
        from asr.generative import RBMTrainConfig

        return [RBMTrainConfig(epochs=self.epochs * (self.gaussian_epoch_factor if i == 0 else 1),
                               batch_size=self.batch_size, lr=self.lr_gaussian if i == 0 else self.lr_bernoulli,
                               momentum=self.momentum, initial_momentum=self.initial_momentum,
                               schedule="kaldi", momentum_steps=self.momentum_steps,
                               momentum_step_frames=self.momentum_step_frames, weight_decay=self.weight_decay,
                               variance_guard=self.variance_guard, rows_per_epoch=self.frames_per_epoch,
                               matmul_dtype=self.precision)
                for i in range(len(self.hidden))]


def normalised_batches(data: FrameData, mean: Tensor, istd: Tensor, batch_size: int, generator: torch.Generator,
                       limit: int | None = None, device: torch.device | str = "cpu") -> Callable[[], Iterator[Tensor]]:
    """A callable returning a fresh iterator of shuffled, normalised spliced minibatches (B, K·D);
    each call reshuffles with ``generator`` (CPU; deterministic overall). Used when the spliced
    inputs do not fit in memory."""
    mean, istd = mean.to(device), istd.to(device)

    def batches() -> Iterator[Tensor]:
        perm = torch.randperm(data.num_frames, generator=generator)
        if limit:
            perm = perm[:limit]
        for s in range(0, len(perm), batch_size):
            yield (data.spliced(perm[s:s + batch_size]).to(device) - mean) * istd

    return batches


def normalised_inputs(data: FrameData, mean: Tensor, istd: Tensor, chunk: int = 65536) -> Tensor:
    """All spliced frames, normalised: (N, K·D) float32, built chunk by chunk."""
    out = torch.empty(data.num_frames, data.index.shape[1] * data.feats.shape[1])
    for s in range(0, data.num_frames, chunk):
        rows = torch.arange(s, min(data.num_frames, s + chunk))
        out[rows] = (data.spliced(rows) - mean) * istd
    return out


def build_dbn(input_dim: int, cfg: PretrainConfig) -> nn.Module:
    """The untrained stack: RBM weights N(0, init_std²) from a generator seeded with ``cfg.seed``
    (Kaldi ``nnet-initialize`` of ``<Rbm> ... <ParamStddev>``), zero biases."""
    from asr.generative import DBN

    return DBN([input_dim, *cfg.hidden], first_visible="gaussian", init_std=cfg.init_std,
               generator=torch.Generator().manual_seed(cfg.seed))


def pretrain_dbn_on_frames(data: FrameData, mean: Tensor, var: Tensor, cfg: PretrainConfig,
                           device: torch.device | str = "cpu", callback=None,
                           ckpt_dir: str | Path | None = None, log: Callable[[str], None] = print) -> nn.Module:
    """Greedy layer-wise DBN pretraining on normalised spliced frames; returns the
    ``asr.generative.DBN`` (save it with ``asr.generative.save``).

    With ``ckpt_dir`` the stack and the random generators' states are saved after every RBM
    (``ckpt_dir/rbmK.pt``) and a rerun resumes after the last finished RBM, giving the same DBN
    as an uninterrupted run. Raises ``asr.generative.TrainingDiverged`` (its message names the
    layer and epoch)."""
    from asr.generative import pretrain_dbn

    dim = data.index.shape[1] * data.feats.shape[1]
    dbn = build_dbn(dim, cfg).to(device)
    istd = var.clamp_min(1e-4).rsqrt()
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    feed = torch.Generator().manual_seed(cfg.seed + 1)          # minibatch order of the streamed input
    if data.num_frames * dim * 4 <= cfg.cache_bytes:
        source = normalised_inputs(data, mean, istd)
    else:
        source = normalised_batches(data, mean, istd, cfg.batch_size, feed, cfg.frames_per_epoch, device)
    configs = cfg.rbm_configs()
    start = 0
    if ckpt_dir is not None:
        ckpt_dir = Path(ckpt_dir)
        done = sorted(ckpt_dir.glob("rbm*.pt"))
        if done:
            ck = load_data_file(done[-1], "DBN pretraining checkpoint")
            # settings added since a checkpoint was written count as their defaults
            ck_cfg = {**asdict(PretrainConfig()), **(ck.get("config") or {})} if isinstance(ck, dict) else None
            if ck_cfg != asdict(cfg) or ck.get("frames") != data.num_frames:
                raise ValueError(f"{done[-1]} was written by another pretraining run (config or data differ); "
                                 f"remove {ckpt_dir} or use a new output dir")
            dbn.load_state_dict(ck["dbn"])
            gen.set_state(ck["gen"])
            feed.set_state(ck["feed"])
            start = int(ck["layers_done"])
            log(f"resuming after RBM {start} from {done[-1]}")

    def on_epoch(layer: int, epoch: int, m: dict, rbm) -> None:
        if callback is not None:
            callback(layer, epoch, m, rbm)
        if ckpt_dir is not None and epoch == configs[layer - 1].epochs:
            atomic_torch_save({"dbn": dbn.state_dict(), "gen": gen.get_state(), "feed": feed.get_state(),
                               "layers_done": layer, "config": asdict(cfg), "frames": data.num_frames},
                              ckpt_dir / f"rbm{layer:02d}.pt")

    pretrain_dbn(dbn, source, configs, gen, callback=on_epoch, max_lift_bytes=cfg.cache_bytes, start_layer=start)
    return dbn


def dbn_linears(dbn: nn.Module) -> list[nn.Linear]:
    """The pretrained hidden Linear layers of a DBN (via its ``to_sequential``)."""
    seq = dbn.to_sequential(None)
    return [m for m in seq if isinstance(m, nn.Linear)]
