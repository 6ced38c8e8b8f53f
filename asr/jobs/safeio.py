"""Files the toolkit reads are data, never code: one loader and one atomic writer for torch files.

``torch.load(weights_only=False)`` unpickles arbitrary objects, so opening a model file someone
else trained could run their code. Every ``.pt`` file the toolkit writes holds only tensors and
plain containers (dict / list / tuple of str, int, float, bool, None, tensors), which
``load_data`` reads with ``weights_only=True``; anything else is refused with an error naming the
file, before any of its code can run. ``save_data`` checks the same rule when writing, so a
file that would be refused later is never written, and ``atomic_path`` leaves no ``*.tmp``
behind when a write fails.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from asr.jobs.atomic import atomic_path

_SCALARS = (str, int, float, bool, type(None), torch.dtype, torch.Size)


class NotPlainData(ValueError):
    """A file (or object to be saved) that holds more than tensors and plain containers."""


def load_data(path: str | Path, map_location: str | torch.device = "cpu", what: str = "file") -> Any:
    """Read a torch file holding only tensors and plain containers (``weights_only=True``).

    ``what`` names the kind of file in the messages (e.g. ``"lattice job"``, ``"checkpoint"``).
    Raises FileNotFoundError when ``path`` does not exist and ``NotPlainData`` (a ValueError)
    naming the file when it is not plain data (a pickled object: its code is never run) or is
    not a torch file at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError (objects), RuntimeError / EOFError (corrupt)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NotPlainData(f"{what} {path} is not a plain-data torch file (only tensors and plain "
                           f"containers are read; it was not unpickled): {reason}") from None


def check_plain(obj: Any, where: str = "object") -> None:
    """Raise ``NotPlainData`` naming the first value of ``obj`` that ``load_data`` would refuse."""
    if isinstance(obj, torch.Tensor) or isinstance(obj, _SCALARS):
        return
    if isinstance(obj, (dict, OrderedDict)):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise NotPlainData(f"{where}: key {k!r} of type {type(k).__name__} is not plain data")
            check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    raise NotPlainData(f"{where}: {type(obj).__module__}.{type(obj).__name__} is not plain data "
                       f"(store tensors, dicts, lists and scalars only)")


def save_data(obj: Any, path: str | Path) -> None:
    """Atomically ``torch.save`` a plain-data object (checked first; see ``check_plain``)."""
    check_plain(obj, str(path))
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
