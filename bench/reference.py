"""The reference every benchmark reports against: a float32 matrix product measured in the same
run, on the same device and with the same threads as the figure it normalises.

A shared or busy machine slows the work and the reference alike, so a figure given as a ratio to
the reference (``work rate / matmul rate`` when the work's FLOPs are known, else its time in
units of one reference product) compares across runs and machines where absolute figures do not.
The reference is measured when a benchmark starts and again when it ends; both are printed, and
a large difference says the machine's load changed during the run.

    ref = Reference("cpu")            # measures now
    ...                               # the benchmark
    ref.finish()                      # measures again
    print(ref.line()); print(ref.units(seconds))
"""
from __future__ import annotations

import time

import torch

N = 512   # the reference product: (N x N) @ (N x N), float32


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def matmul_rate(device: str | torch.device = "cpu", n: int = N, seconds: float = 0.5) -> float:
    """Measured float32 GEMM rate (FLOP/s) of an (n x n) @ (n x n) product on ``device``, with the
    current torch thread count (the median of 5 timed slices of ``seconds / 5``)."""
    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, device=dev, generator=g)
    b = torch.randn(n, n, device=dev, generator=g)
    for _ in range(3):
        a @ b
    _sync(dev)
    rates = []
    for _ in range(5):
        reps, t0 = 0, time.perf_counter()
        while True:
            a @ b
            reps += 1
            if reps % 8 == 0:
                _sync(dev)
                if time.perf_counter() - t0 >= seconds / 5:
                    break
        rates.append(2.0 * n ** 3 * reps / (time.perf_counter() - t0))
    return sorted(rates)[2]


def devices(requested: str | None = None) -> list[str]:
    """``[requested]`` when given, else ``cpu`` and, where CUDA is present, ``cuda``."""
    if requested:
        return [requested]
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class Reference:
    """The reference product's rate at the start (and, after ``finish``, the end) of a run."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.threads = torch.get_num_threads()
        self.start = matmul_rate(self.device)
        self.end: float | None = None

    def finish(self) -> "Reference":
        self.end = matmul_rate(self.device)
        return self

    @property
    def rate(self) -> float:
        """FLOP/s: the mean of the start and end measurements."""
        return self.start if self.end is None else 0.5 * (self.start + self.end)

    @property
    def seconds(self) -> float:
        """Seconds of one reference product at ``rate``."""
        return 2.0 * N ** 3 / self.rate

    def fraction(self, flop_per_s: float) -> float:
        """A work rate (FLOP/s) as a fraction of the reference rate."""
        return flop_per_s / self.rate

    def units(self, seconds: float) -> float:
        """A duration in reference products (how many would fit in it)."""
        return seconds / self.seconds

    def as_dict(self) -> dict:
        return {"device": str(self.device), "threads": self.threads, "matmul": f"{N}x{N}x{N} float32",
                "gflops_start": round(self.start / 1e9, 2),
                "gflops_end": round(self.end / 1e9, 2) if self.end is not None else None}

    def line(self) -> str:
        end = f", end {self.end / 1e9:.1f}" if self.end is not None else ""
        return (f"reference: float32 matmul {N}x{N}x{N} on {self.device} ({self.threads} threads): "
                f"{self.rate / 1e9:.1f} GFLOP/s (start {self.start / 1e9:.1f}{end}); "
                f"1 unit = {self.seconds * 1e3:.2f} ms")
