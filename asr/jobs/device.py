"""The one device decision of a run, shared by GMM, DNN and sequence training and decoding."""
from __future__ import annotations

import torch


def choose_device(name: str | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when available, else the CPU; otherwise ``torch.device(name)``
    (``cpu``, ``cuda``, ``cuda:1``), refused with a ``ValueError`` when it asks for CUDA on a
    machine without it (never a silent fall-back to the CPU)."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return dev
