"""The one device decision of a run, shared by GMM, DNN and sequence training and decoding."""
from __future__ import annotations

import os

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


def flush_denormals() -> bool:
    """Have this thread's CPU float arithmetic flush subnormal numbers to zero (x86 FTZ/DAZ;
    threads started afterwards, such as torch's OpenMP pool, inherit the mode). Returns whether
    the CPU supports it.

    Why: sigmoid units that are firmly off produce probabilities below float32's smallest normal
    number (``sigmoid(-88) ≈ 6e-39``), products of small probabilities fall below it too, and an
    op that meets such a value takes the CPU's microcoded slow path. Measured on a 0.5 h corpus's
    fMLLR frames (181k), 2 cores: a DBN's second RBM (1024 x 1024, after 4 CD-1 epochs of the
    first) took 103 s for its first epoch without this and 18 s with it, while its later epochs
    and the other layers ran alike and every trained parameter came out bit-identical; on
    ``bench/dnn.py``'s synthetic frames (``--flush-denormals 0``) the second RBM is 4-5x slower in
    every epoch. Values below 1.2e-38 carry nothing a probability, log-likelihood or gradient here
    needs; runs stay deterministic either way, though a run may differ in its last bits from one
    made without this setting. Called once at the start of every ``asr`` command and job worker,
    before any torch operation starts the thread pool; ``ASR_FLUSH_DENORMALS=0`` in the
    environment leaves the CPU's default (to measure the difference, or to repeat an older run)."""
    if os.environ.get("ASR_FLUSH_DENORMALS", "1") == "0":
        return False
    return bool(torch.set_flush_denormal(True))


PRECISIONS = ("auto", "float32", "bfloat16")


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware: a CUDA GPU that supports it, or
    a CPU whose flags list ``avx512_bf16`` or ``amx_bf16`` (Linux ``/proc/cpuinfo``). Elsewhere
    torch emulates bfloat16 products, slower than float32 ones."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def choose_precision(name: str | None, device: torch.device) -> str:
    """The matrix-product precision of DNN training, ``"float32"`` or ``"bfloat16"`` (mixed: bfloat16
    products accumulated in float32, float32 parameters and updates). ``"auto"`` (or None) takes
    bfloat16 where ``device`` has it in hardware (:func:`native_bfloat16`), float32 elsewhere, so a
    run's numbers depend on the machine's instruction set; the choice is recorded with each model."""
    if name in (None, "", "auto"):
        return "bfloat16" if native_bfloat16(torch.device(device)) else "float32"
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return name
