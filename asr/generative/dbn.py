"""Deep belief networks: greedy layer-wise stacks of RBMs (Hinton, Osindero & Teh 2006).

``DBN([D, h1, h2, ...])`` holds one RBM per adjacent pair of sizes. The first RBM has
``first_visible`` units (Gaussian for normalised speech features, Bernoulli for images);
every RBM above it is Bernoulli-Bernoulli and is trained on the hidden probabilities of the
layer below (:func:`pretrain_dbn`). The top RBM is the undirected associative memory used
for generation; the lower RBMs act as directed top-down generative weights and as
bottom-up recognition weights (inference, features, and initialisation of a feed-forward
net by :meth:`DBN.to_sequential`).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from asr.generative.checkpoint import register_module
from asr.generative.rbm import (RBM, DataSource, RBMTrainConfig, TrainingDiverged,
                                train_rbm)


@register_module
class DBN(nn.Module):
    """Stack of RBMs with sizes ``[D, h1, ..., hL]`` (L >= 1 RBMs).

    Args:
        sizes: layer sizes from the input dimension D up to the top hidden layer.
        first_visible: visible unit type of the bottom RBM (``"gaussian"`` or ``"bernoulli"``).
        init_std: initial weight standard deviation of each RBM.
        generator: generator for the initial weights (default: seeded 0).
    """

    def __init__(self, sizes: Sequence[int], first_visible: str = "gaussian",
                 init_std: float = 0.01, generator: torch.Generator | None = None):
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"DBN sizes must list >= 2 positive layer sizes, got {sizes}")
        self.sizes = sizes
        self.first_visible = first_visible
        self.init_std = float(init_std)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        self.rbms = nn.ModuleList(
            RBM(sizes[i], sizes[i + 1], first_visible if i == 0 else "bernoulli", init_std, g)
            for i in range(len(sizes) - 1))

    @classmethod
    def from_rbms(cls, rbms: Sequence[RBM]) -> "DBN":
        """Stack already trained RBMs (bottom first); their parameters are copied.

        Raises ValueError when a layer's ``n_visible`` differs from the ``n_hidden`` of the
        layer below, or when an upper RBM does not have Bernoulli visible units.
        """
        if not rbms:
            raise ValueError("need at least one RBM to stack")
        for i in range(1, len(rbms)):
            if rbms[i].n_visible != rbms[i - 1].n_hidden:
                raise ValueError(f"cannot stack RBM {i + 1} ({rbms[i].n_visible} visible units) on "
                                 f"RBM {i} ({rbms[i - 1].n_hidden} hidden units)")
            if rbms[i].visible != "bernoulli":
                raise ValueError(f"RBM {i + 1}: upper layers need Bernoulli visible units "
                                 f"(they model hidden probabilities), got {rbms[i].visible!r}")
        dbn = cls([rbms[0].n_visible] + [r.n_hidden for r in rbms], rbms[0].visible,
                  rbms[0].init_std)
        for mine, theirs in zip(dbn.rbms, rbms):
            mine.load_state_dict(theirs.state_dict())
        return dbn

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments needed to rebuild this module."""
        return {"sizes": list(self.sizes), "first_visible": self.first_visible,
                "init_std": self.init_std}

    @property
    def n_layers(self) -> int:
        return len(self.rbms)

    @torch.no_grad()
    def up(self, v: Tensor, layers: int | None = None) -> Tensor:
        """Bottom-up mean-field pass through the first ``layers`` RBMs (default all).

        ``v`` is ``(B, D)``; returns the hidden probabilities of layer ``layers``, ``(B, h_layers)``.
        """
        if v.dim() != 2 or v.shape[1] != self.sizes[0]:
            raise ValueError(f"DBN input must have shape (B, {self.sizes[0]}), got {tuple(v.shape)}")
        n = self.n_layers if layers is None else layers
        x = v.to(self.rbms[0].W.dtype)
        for rbm in list(self.rbms)[:n]:
            x = rbm.hidden_probs(x)
        return x

    def features(self, v: Tensor, layer: int = -1) -> Tensor:
        """Hidden probabilities of ``layer`` (1-based; -1 = top) as features, ``(B, h_layer)``.

        Suitable as input to an external classifier (e.g. ``sklearn.svm.SVC``).
        """
        n = self.n_layers if layer == -1 else layer
        if not 1 <= n <= self.n_layers:
            raise ValueError(f"layer must be in 1..{self.n_layers} or -1, got {layer}")
        return self.up(v, n)

    @torch.no_grad()
    def down(self, h: Tensor, from_layer: int | None = None,
             generator: torch.Generator | None = None, stochastic: bool = True) -> Tensor:
        """Top-down directed pass from the hidden layer ``from_layer`` (default: the visible
        layer of the top RBM, i.e. ``n_layers - 1``) to the data layer.

        Intermediate layers are sampled when ``stochastic`` (else mean-field); the data layer
        is the mean of p(v | h1). Returns ``(B, D)``.
        """
        n = self.n_layers - 1 if from_layer is None else from_layer
        x = h
        for i in reversed(range(n)):
            mean, samp = self.rbms[i].sample_visible(x, generator)
            x = mean if (i == 0 or not stochastic) else samp
        return x

    @torch.no_grad()
    def generate(self, n: int, gibbs_steps: int = 1000, generator: torch.Generator | None = None,
                 init: Tensor | None = None) -> Tensor:
        """Sample ``n`` data vectors: a ``gibbs_steps``-sweep block-Gibbs chain in the top RBM
        (started from ``init`` data ``(n, D)`` propagated up, or from noise), then one
        top-down pass through the directed layers. Returns ``(n, D)`` (means of p(v | h1)).
        """
        top = self.rbms[-1]
        start = None
        if init is not None:
            start = self.up(init, self.n_layers - 1) if self.n_layers > 1 else init
            if top.visible == "bernoulli":
                start = torch.bernoulli(start, generator=generator)
        mean, samp = top.gibbs(start if start is not None else top.sample(n, 0, generator),
                               gibbs_steps, generator)
        if self.n_layers == 1:
            return mean
        return self.down(samp, generator=generator)

    def to_sequential(self, n_out: int | None = None, softmax: bool = False, log: bool = True,
                      generator: torch.Generator | None = None) -> nn.Sequential:
        """Feed-forward net initialised from the stack: ``[Linear(h_{i-1}, h_i), Sigmoid] * L``
        with weights ``W^T`` and the hidden biases of each RBM.

        With ``n_out`` a randomly initialised ``Linear(h_L, n_out)`` output layer is appended
        (weights N(0, 0.01^2) from ``generator``, zero bias), followed by ``LogSoftmax`` (or
        ``Softmax`` when ``log=False``) if ``softmax``. For cross-entropy training leave
        ``softmax=False`` and feed the raw logits to ``nn.CrossEntropyLoss``.
        The returned module is independent of the DBN (parameters are copied).
        """
        layers: list[nn.Module] = []
        for rbm in self.rbms:
            lin = nn.Linear(rbm.n_visible, rbm.n_hidden)
            with torch.no_grad():
                lin.weight.copy_(rbm.W.t())
                lin.bias.copy_(rbm.c)
            layers += [lin.to(rbm.W.device), nn.Sigmoid()]
        if n_out is not None:
            g = generator if generator is not None else torch.Generator().manual_seed(0)
            out = nn.Linear(self.sizes[-1], int(n_out))
            with torch.no_grad():
                out.weight.copy_(torch.randn(out.weight.shape, generator=g) * 0.01)
                out.bias.zero_()
            layers.append(out.to(self.rbms[0].W.device))
            if softmax:
                layers.append(nn.LogSoftmax(dim=-1) if log else nn.Softmax(dim=-1))
        elif softmax:
            raise ValueError("softmax=True needs n_out")
        return nn.Sequential(*layers)


def _lift(data: DataSource, dbn: DBN, layer: int, device: torch.device
          ) -> Callable[[], Iterable[Tensor]] | Iterable[Tensor]:
    """Turn a batch source for the data layer into one for the input of RBM ``layer``."""
    if isinstance(data, Tensor):
        return data  # tensors are lifted eagerly in pretrain_dbn
    src = data

    def batches() -> Iterable[Tensor]:
        it = src() if callable(src) else src
        for b in it:
            yield dbn.up(b.to(device), layer)
    return batches


def pretrain_dbn(dbn: DBN, data: DataSource,
                 cfgs: RBMTrainConfig | Sequence[RBMTrainConfig] | None = None,
                 generator: torch.Generator | None = None,
                 callback: Callable[[int, int, dict[str, float], RBM], None] | None = None,
                 max_lift_bytes: int = 2 ** 31, start_layer: int = 0) -> list[list[dict[str, float]]]:
    """Greedy layer-wise pretraining: RBM i is trained (CD-k / PCD, see :func:`train_rbm`)
    on the hidden probabilities of RBM i-1 (Hinton et al. 2006, section 4).

    Args:
        data: ``Tensor (N, D)`` or a callable returning an iterable of ``(B, D)`` batches
            (called once per epoch; for streaming data larger than memory).
            A tensor is propagated up once per layer when the result fits in
            ``max_lift_bytes`` (so every RBM costs the same per frame, whatever its depth);
            otherwise, and for callables, every batch is propagated through all lower layers
            on the fly.
        cfgs: one config for all layers or one per layer.
        callback: ``callback(layer (1-based), epoch, metrics, rbm)`` after every epoch.
        start_layer: the first ``start_layer`` RBMs are taken as trained (resuming a stack):
            they only lift the data for the RBMs above.
    Returns:
        One history list per layer (empty for the layers below ``start_layer``).
    Raises:
        TrainingDiverged: from :func:`train_rbm`; the message names the layer.
    """
    n = dbn.n_layers
    if cfgs is None:
        cfgs = RBMTrainConfig()
    cfg_list = [cfgs] * n if isinstance(cfgs, RBMTrainConfig) else list(cfgs)
    if len(cfg_list) != n:
        raise ValueError(f"got {len(cfg_list)} RBM configs for a DBN with {n} layers")
    dev = dbn.rbms[0].W.device
    if generator is None:
        generator = torch.Generator(device=dev).manual_seed(0)
    if isinstance(data, Tensor) and (data.dim() != 2 or data.shape[1] != dbn.sizes[0]):
        raise ValueError(f"DBN data must have shape (N, {dbn.sizes[0]}), got {tuple(data.shape)}")
    histories = []
    lifted: DataSource = data
    for i, (rbm, cfg) in enumerate(zip(dbn.rbms, cfg_list)):
        if i > 0:
            if isinstance(lifted, Tensor) and data.shape[0] * dbn.sizes[i] * 4 <= max_lift_bytes:
                # filled in place (a torch.cat of the chunks would hold the layer twice) and the
                # layer below dropped unless it is the caller's data
                prev, below = lifted, dbn.rbms[i - 1]
                lifted = torch.empty(prev.shape[0], dbn.sizes[i], dtype=below.W.dtype, device=dev)
                with torch.no_grad():
                    for j in range(0, prev.shape[0], 8192):
                        lifted[j:j + 8192] = below.hidden_probs(prev[j:j + 8192].to(dev))
                del prev
            elif isinstance(data, Tensor):
                full = data

                def stream(full: Tensor = full, layer: int = i, bs: int = cfg.batch_size,
                           rows: int | None = cfg.rows_per_epoch):
                    perm = torch.randperm(full.shape[0], generator=generator,
                                          device=generator.device)[:rows]
                    for j in range(0, len(perm), bs):
                        yield dbn.up(full[perm[j:j + bs].to(full.device)].to(dev), layer)
                lifted = stream
            else:
                lifted = _lift(data, dbn, i, dev)
        if i < start_layer:
            histories.append([])
            continue
        cb = None if callback is None else (lambda e, m, r, layer=i + 1: callback(layer, e, m, r))
        try:
            histories.append(train_rbm(rbm, lifted, cfg, generator, cb))
        except TrainingDiverged as e:
            raise TrainingDiverged(f"DBN layer {i + 1}: {e}", e.step, e.epoch, e.state_dict,
                                   e.history) from e
    return histories
