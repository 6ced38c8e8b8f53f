"""The hybrid acoustic DNN: input normalisation + MLP body + pdf priors, saved as one checkpoint.

Hybrid scoring (Bourlard & Morgan 1994; Dahl et al. 2012, CD-DNN-HMM):
``log p(x_t | s) ∝ log p(s | x_t) − log p(s)`` where ``p(s)`` are the pdf priors from the
training alignment counts.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from asr.jobs.atomic import atomic_path
from asr.nnet.frames import splice_index


@dataclass
class NetConfig:
    """Architecture: ``input_dim`` raw feature dim, context ±``left``/``right`` frames,
    ``hidden`` sigmoid layer sizes (as the DBN's), ``num_pdfs`` outputs."""

    input_dim: int
    num_pdfs: int
    hidden: tuple[int, ...] = (512, 512, 512)
    left: int = 5
    right: int = 5

    @property
    def spliced_dim(self) -> int:
        return (self.left + 1 + self.right) * self.input_dim


def make_mlp(sizes: list[int], num_out: int) -> nn.Sequential:
    """Linear+Sigmoid stack (the DBN's layout, as ``asr.generative.DBN.to_sequential``) + output Linear."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.Sigmoid()]
    layers.append(nn.Linear(sizes[-1], num_out))
    return nn.Sequential(*layers)


class HybridDNN(nn.Module):
    """Spliced-input MLP with global mean/variance normalisation and log pdf priors as buffers.

    forward(x: (B, K·D) spliced raw features) -> (B, num_pdfs) logits.
    """

    def __init__(self, cfg: NetConfig, body: nn.Sequential | None = None):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("in_mean", torch.zeros(cfg.spliced_dim))
        self.register_buffer("in_istd", torch.ones(cfg.spliced_dim))
        self.register_buffer("log_priors", torch.full((cfg.num_pdfs,), -math.log(cfg.num_pdfs)))
        self.body = body if body is not None else make_mlp([cfg.spliced_dim, *cfg.hidden], cfg.num_pdfs)

    def set_normalisation(self, mean: Tensor, var: Tensor, floor: float = 1e-4) -> None:
        """Global CMVN of the spliced input (stored with the model): x' = (x - mean) / sqrt(var)."""
        self.in_mean.copy_(mean)
        self.in_istd.copy_(var.clamp_min(floor).rsqrt())

    def init_from_linears(self, linears: list[nn.Linear]) -> None:
        """Copy pretrained hidden layers (e.g. the Linear layers of
        ``asr.generative.DBN.to_sequential``) into the body; the output layer keeps its init."""
        mine = [m for m in self.body if isinstance(m, nn.Linear)][:-1]
        if len(linears) != len(mine):
            raise ValueError(f"pretrained stack has {len(linears)} layers, model has {len(mine)} hidden layers")
        with torch.no_grad():
            for a, b in zip(mine, linears):
                if a.weight.shape != b.weight.shape:
                    raise ValueError(f"pretrained layer shape {tuple(b.weight.shape)} != model {tuple(a.weight.shape)}")
                a.weight.copy_(b.weight)
                a.bias.copy_(b.bias)

    def normalise(self, x: Tensor) -> Tensor:
        return (x - self.in_mean) * self.in_istd

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.normalise(x))

    def log_posteriors(self, feats: Tensor, batch: int = 4096) -> Tensor:
        """One utterance (T, D) raw features -> (T, num_pdfs) log p(s | x_t)."""
        idx = splice_index(torch.tensor([feats.shape[0]]), self.cfg.left, self.cfg.right)
        dev = self.in_mean.device
        out = []
        with torch.no_grad():
            for s in range(0, feats.shape[0], batch):
                x = feats[idx[s:s + batch]].reshape(-1, self.cfg.spliced_dim).to(dev)
                out.append(torch.log_softmax(self(x), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.cfg.num_pdfs)

    def loglikes(self, feats: Tensor) -> Tensor:
        """(T, D) -> (T, num_pdfs) scaled log-likelihoods log p(s|x) − log p(s)."""
        return self.log_posteriors(feats) - self.log_priors.cpu()


def init_kaldi_proto(model: HybridDNN, generator: torch.Generator, hidden: bool = True) -> None:
    """Random initialisation of Kaldi nnet1 ``utils/nnet/make_nnet_proto.py`` (defaults), in place.

    Every affine layer: weights N(0, σ²) with σ = 0.1 · 35 · sqrt(2 / (fan_in + fan_out))
    (``--param-stddev-factor`` 0.1 times the script's Glorot-style scale); the first hidden layer's
    σ further × sqrt(1/12) (``--smaller-input-weights``: the N(0,1) input vs U[0,1] sigmoid range);
    hidden biases U[-4, 0] (``--hid-bias-mean -2 --hid-bias-range 4``); output bias 0. With
    ``hidden=False`` only the output layer is initialised (the DBN provides the hidden ones, as
    ``train.sh --dbn ... --hid-layers 0``).
    """
    linears = [m for m in model.body if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for i, m in enumerate(linears):
            last = i == len(linears) - 1
            if not (hidden or last):
                continue
            std = 0.1 * 35.0 * math.sqrt(2.0 / (m.in_features + m.out_features))
            if i == 0 and not last:
                std *= math.sqrt(1.0 / 12.0)
            m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * std)
            if last:
                m.bias.zero_()
            else:
                m.bias.copy_(torch.rand(m.bias.shape, generator=generator) * 4.0 - 4.0)


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """``torch.save`` to ``path.tmp`` then rename: a reader never sees a half-written file, and
    the temporary is removed when saving fails."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_model(model: HybridDNN, path: str | Path, extra: dict | None = None) -> None:
    """Atomic save of config + state (+ JSON-able ``extra``): tensors and plain containers only,
    so ``load_model`` can read it with ``weights_only=True``."""
    cfg = asdict(model.cfg)
    cfg["hidden"] = list(cfg["hidden"])
    atomic_torch_save({"type": "HybridDNN", "config": cfg, "state": model.state_dict(), "extra": extra or {}}, path)


def load_data_file(path: str | Path, what: str, map_location: str | torch.device = "cpu"):
    """``torch.load`` of a file that must hold data only (tensors, dicts, lists, numbers,
    strings): ``weights_only=True``, so a file carrying code is refused before anything runs.
    Any failure is a ValueError naming the file and ``what`` it should have been."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError for code or foreign objects, RuntimeError for junk
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a {what} (only tensors and plain containers are loaded; {first})") from None


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> HybridDNN:
    """Rebuild a ``HybridDNN`` saved by ``save_model`` (``path`` or ``path/final.pt``); the file
    is read as data only (see ``load_data_file``); ValueError naming the file otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / "final.pt"
    ck = load_data_file(path, "HybridDNN checkpoint", map_location)
    if not isinstance(ck, dict) or ck.get("type") != "HybridDNN":
        raise ValueError(f"{path}: not a HybridDNN checkpoint")
    try:
        c = dict(ck["config"])
        c["hidden"] = tuple(c["hidden"])
        model = HybridDNN(NetConfig(**c))
        model.load_state_dict(ck["state"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise ValueError(f"{path}: malformed HybridDNN checkpoint ({e})") from None
    return model
