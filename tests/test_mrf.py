"""Ising MRF denoising: samplers and optimisers against exact enumeration on tiny grids."""
from __future__ import annotations

import itertools

import pytest
import torch

from asr.generative.mrf import (IsingParams, check_binary_images, flip_noise, gibbs, icm,
                                ising_energy, local_field, mean_field, pixel_error)


def _edges(h: int, w: int):
    for r, c in itertools.product(range(h), range(w)):
        if r + 1 < h:
            yield (r, c), (r + 1, c)
        if c + 1 < w:
            yield (r, c), (r, c + 1)


def _energy_loop(x: dict, y: dict, p: IsingParams, h: int, w: int) -> float:
    """Independent energy: explicit loops over pixels and edges (x, y: {(r, c): spin})."""
    e = sum(p.h * x[r, c] - p.eta * x[r, c] * y[r, c] for r in range(h) for c in range(w))
    return e - p.beta * sum(x[a] * x[b] for a, b in _edges(h, w))


def _exact_marginals(y01: torch.Tensor, p: IsingParams) -> torch.Tensor:
    h, w = y01.shape
    ys = (2 * y01 - 1).tolist()
    logp, states = [], []
    for bits in itertools.product((-1, 1), repeat=h * w):
        x = [list(bits[r * w:(r + 1) * w]) for r in range(h)]
        grid = {(r, c): x[r][c] for r in range(h) for c in range(w)}
        yy = {(r, c): ys[r][c] for r in range(h) for c in range(w)}
        logp.append(-_energy_loop(grid, yy, p, h, w))
        states.append(bits)
    prob = torch.softmax(torch.tensor(logp, dtype=torch.float64), 0)
    on = (torch.tensor(states, dtype=torch.float64) > 0).double()
    return (prob @ on).reshape(h, w)


def test_energy_matches_loop():
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.randint(0, 2, (2, 3, 4), generator=g).float() - 1
    y = 2 * torch.randint(0, 2, (2, 3, 4), generator=g).float() - 1
    p = IsingParams(beta=0.7, eta=1.3, h=0.2)
    e = ising_energy(x, y, p)
    for b in range(2):
        grid = {(r, c): float(x[b, r, c]) for r in range(3) for c in range(4)}
        yy = {(r, c): float(y[b, r, c]) for r in range(3) for c in range(4)}
        assert float(e[b]) == pytest.approx(_energy_loop(grid, yy, p, 3, 4), abs=1e-5)


def test_gibbs_marginals_match_enumeration():
    y = torch.tensor([[1, 0, 1], [0, 1, 1], [0, 0, 1]])
    p = IsingParams(beta=0.6, eta=0.8, h=0.1)
    exact = _exact_marginals(y, p)
    batch = y[None].repeat(400, 1, 1)                     # 400 independent chains
    est = gibbs(batch, p, sweeps=120, burn_in=20, generator=torch.Generator().manual_seed(1)).mean(0)
    assert (est.double() - exact).abs().max() < 0.01


def test_mean_field_fixed_point_and_weak_coupling_accuracy():
    y = torch.tensor([[1, 0, 1], [0, 1, 1], [0, 0, 1]])
    p = IsingParams(beta=0.1, eta=0.8, h=0.1)
    q = mean_field(y, p, iters=200)
    m = 2 * q - 1
    ys = check_binary_images(y)
    torch.testing.assert_close(m, torch.tanh(local_field(m, ys, p)), atol=1e-5, rtol=0)
    assert (q[0].double() - _exact_marginals(y, p)).abs().max() < 0.02


def test_icm_reaches_single_flip_local_minimum_without_raising_energy():
    g = torch.Generator().manual_seed(2)
    clean = torch.zeros(2, 8, 8)
    clean[:, 2:6, 2:6] = 1
    noisy = flip_noise(clean, 0.15, g)
    p = IsingParams()
    out, sweeps = icm(noisy, p)
    ys, xs = check_binary_images(noisy), check_binary_images(out)
    assert torch.all(ising_energy(xs, ys, p) <= ising_energy(ys, ys, p))
    e = ising_energy(xs, ys, p)
    for r, c in itertools.product(range(8), range(8)):
        flipped = xs.clone()
        flipped[:, r, c] *= -1
        assert torch.all(ising_energy(flipped, ys, p) >= e - 1e-6)
    assert sweeps < 20


def test_denoising_reduces_pixel_error():
    g = torch.Generator().manual_seed(3)
    clean = torch.zeros(4, 24, 24)
    clean[:, 4:20, 6:12] = 1
    clean[:, 10:14, :] = 1
    noisy = flip_noise(clean, 0.1, g)
    before = pixel_error(noisy, clean)
    assert 0.07 < before < 0.13
    p = IsingParams.for_flip_rate(0.1)
    assert p.eta == pytest.approx(0.5 * torch.log(torch.tensor(9.0)).item())
    assert pixel_error(icm(noisy, p)[0], clean) < before / 3
    assert pixel_error((mean_field(noisy, p) > 0.5).float(), clean) < before / 4
    assert pixel_error((gibbs(noisy, p, generator=g) > 0.5).float(), clean) < before / 4
    assert pixel_error(icm(noisy, IsingParams())[0], clean) < before


def test_non_binary_input_is_rejected():
    with pytest.raises(ValueError, match="binary"):
        icm(torch.full((4, 4), 0.5))
    with pytest.raises(ValueError, match="binary"):
        mean_field(torch.tensor([[0, 2], [1, 1]]))
    with pytest.raises(ValueError, match="shape"):
        gibbs(torch.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        icm(torch.tensor([[float("nan"), 1.0]]))
