"""One checkpoint format for every generative module.

A checkpoint is a ``torch.save`` dict ``{"format": "asr.generative/1", "type": class name,
"config": constructor kwargs, "state_dict": weights, "meta": free-form JSON-able dict}``
written atomically (``path.tmp`` then ``os.replace``). Any module whose class is registered
with :func:`register_module` and that implements ``get_config() -> dict`` can be saved;
:func:`load` rebuilds the right class in another process.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

FORMAT = "asr.generative/1"
_REGISTRY: dict[str, type[nn.Module]] = {}

M = TypeVar("M", bound=type[nn.Module])


def register_module(cls: M) -> M:
    """Class decorator/function: make ``cls`` loadable by :func:`load` under its name."""
    _REGISTRY[cls.__name__] = cls
    return cls


def save(module: nn.Module, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Atomically write ``module`` (weights + rebuild config + type) to ``path``.

    ``meta`` is stored alongside (e.g. image shape, data normalisation, training history).
    Returns the path written.
    """
    name = type(module).__name__
    if name not in _REGISTRY or not hasattr(module, "get_config"):
        raise TypeError(f"cannot save a {name}: not a registered asr.generative module "
                        f"(known: {sorted(_REGISTRY)})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "type": name, "config": module.get_config(),
            "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            "meta": meta or {}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, expect: type[nn.Module] | str | None = None,
                    map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the module stored at ``path``; returns ``(module, meta)``.

    Args:
        expect: a class (or class name); raises ValueError when the checkpoint holds another
            module type.
    Raises:
        FileNotFoundError: no such file.
        ValueError: not an asr.generative checkpoint, wrong type, or weights whose shapes do
            not match the stored config.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt / foreign file
        raise ValueError(f"{path}: not a readable checkpoint ({e})") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not an asr.generative checkpoint")
    name = blob["type"]
    want = expect if isinstance(expect, str) or expect is None else expect.__name__
    if want is not None and name != want:
        raise ValueError(f"{path}: checkpoint holds a {name}, expected a {want}")
    if name not in _REGISTRY:
        raise ValueError(f"{path}: unknown module type {name!r} (known: {sorted(_REGISTRY)})")
    module = _REGISTRY[name](**blob["config"])
    own = module.state_dict()
    sd = blob["state_dict"]
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    if missing or extra:
        raise ValueError(f"{path}: {name} weights do not match its config "
                         f"(missing {missing[:5]}, unexpected {extra[:5]})")
    bad = [f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
           if tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(f"{path}: {name} weight shapes do not match its config: "
                         + "; ".join(bad[:5]))
    module.load_state_dict(sd)
    module.eval()
    return module, dict(blob.get("meta") or {})


def load(path: str | Path, expect: type[nn.Module] | str | None = None,
         map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the module stored at ``path`` (a file, or a directory holding ``model.pt``).

    See :func:`load_checkpoint` for errors; use it to also get the stored ``meta``.
    """
    return load_checkpoint(path, expect, map_location)[0]
