"""Diagonal-covariance GMMs for all pdfs of an HMM system, stored as flat tensors.

Every Gaussian ``g`` of every pdf lives in one row of ``means (G, D)`` / ``vars (G, D)`` /
``log_weights (G,)`` with ``gauss2pdf[g]`` naming its pdf (Kaldi's ``AmDiagGmm`` flattened).
Log-likelihoods of a block of frames for every Gaussian are ONE matrix product of the frame
features ``[x^2, x, 1] (T, 2D+1)`` with precomputed parameters ``(2D+1, P*M)`` laid out per pdf
and padded to the largest mixture size ``M`` (padding columns give ``-inf``), followed by a
logsumexp over the ``M`` components of each pdf:

    log N(x; mu, diag(v)) + log w = sum_d [-x_d^2 / (2 v_d) + x_d mu_d / v_d]
                                    + log w - 1/2 sum_d [mu_d^2 / v_d + log(2 pi v_d)].

EM follows Kaldi's ``MleDiagGmmUpdate`` (zeroth/first/second-order statistics per Gaussian,
variance floor, removal of low-count Gaussians) and ``DiagGmm::Split`` / ``AmDiagGmm::SplitByCount``
for mixing up (targets proportional to occupancy^0.2, split the heaviest component, means
perturbed by +-0.2 standard deviations).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from asr.jobs.device import choose_device

LOG_2PI = math.log(2.0 * math.pi)


pick_device = choose_device   # the one device decision of a run (asr.jobs.device)


@dataclass
class GmmAccs:
    """Sufficient statistics per Gaussian: ``occ (G,)``, ``x (G, D)``, ``x2 (G, D)`` (float64)."""

    occ: Tensor
    x: Tensor
    x2: Tensor

    @classmethod
    def zeros(cls, num_gauss: int, dim: int, device: torch.device | str = "cpu") -> "GmmAccs":
        z = dict(dtype=torch.float64, device=device)
        return cls(torch.zeros(num_gauss, **z), torch.zeros(num_gauss, dim, **z),
                   torch.zeros(num_gauss, dim, **z))

    def add_(self, other: "GmmAccs") -> "GmmAccs":
        """In-place sum (reduce accumulators of parallel jobs)."""
        self.occ += other.occ.to(self.occ.device)
        self.x += other.x.to(self.x.device)
        self.x2 += other.x2.to(self.x2.device)
        return self

    def accumulate(self, x: Tensor, gauss: Tensor, post: Tensor) -> None:
        """Add frames ``x (T, D)`` with Gaussian indices ``gauss (T, M)`` (``-1`` = none) and
        posteriors ``post (T, M)``: one sparse ``(G, T) x (T, 2D+1)`` product of the posteriors
        (CSR, valid entries only) with ``[x, x^2, 1]`` in float64."""
        T, D = x.shape
        dev = self.occ.device
        gauss, post = gauss.to(dev), post.to(dev)
        keep = gauss >= 0
        crow = torch.zeros(T + 1, dtype=torch.long, device=dev)
        crow[1:] = torch.cumsum(keep.sum(1), 0)
        xd = x.to(dev, torch.float64)
        feats = torch.cat([xd, xd * xd, torch.ones(T, 1, dtype=torch.float64, device=dev)], 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # "sparse CSR support is in beta"
            s = torch.sparse_csr_tensor(crow, gauss[keep], post[keep].to(torch.float64),
                                        (T, self.occ.shape[0]))
            acc = s.t() @ feats
        self.x += acc[:, :D]
        self.x2 += acc[:, D:2 * D]
        self.occ += acc[:, 2 * D]

    def pdf_occupancy(self, gauss2pdf: Tensor, num_pdfs: int) -> Tensor:
        """Total occupancy per pdf ``(num_pdfs,)``."""
        return torch.zeros(num_pdfs, dtype=torch.float64, device=self.occ.device).index_add_(
            0, gauss2pdf.to(self.occ.device), self.occ)


class DiagGmmSet:
    """All pdfs' diagonal GMMs in flat tensors.

    Attributes: ``means (G, D)``, ``vars (G, D)``, ``log_weights (G,)`` (log mixture weight of each
    Gaussian within its pdf), ``gauss2pdf (G,)`` long, ``num_pdfs``. Gaussians are kept sorted by pdf.
    """

    def __init__(self, means: Tensor, vars: Tensor, log_weights: Tensor, gauss2pdf: Tensor,
                 num_pdfs: int) -> None:
        if means.shape != vars.shape or means.dim() != 2:
            raise ValueError(f"means {tuple(means.shape)} and vars {tuple(vars.shape)} must be (G, D)")
        if log_weights.shape != (means.shape[0],) or gauss2pdf.shape != (means.shape[0],):
            raise ValueError("log_weights and gauss2pdf must be (G,)")
        counts = torch.bincount(gauss2pdf, minlength=num_pdfs)
        if counts.numel() != num_pdfs or bool((counts == 0).any()):
            raise ValueError(f"every pdf 0..{num_pdfs - 1} needs at least one Gaussian")
        order = torch.argsort(gauss2pdf, stable=True)
        self.means = means[order].float()
        self.vars = vars[order].float()
        self.log_weights = log_weights[order].float()
        self.gauss2pdf = gauss2pdf[order].long()
        self.num_pdfs = int(num_pdfs)
        self._prepare()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def single(cls, mean: Tensor, var: Tensor, num_pdfs: int) -> "DiagGmmSet":
        """Flat start: every pdf = one Gaussian with the given ``mean (D,)`` / ``var (D,)``."""
        return cls(mean.expand(num_pdfs, -1).clone(), var.expand(num_pdfs, -1).clone(),
                   torch.zeros(num_pdfs), torch.arange(num_pdfs), num_pdfs)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def num_gauss(self) -> int:
        return int(self.means.shape[0])

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, device: torch.device | str) -> "DiagGmmSet":
        return DiagGmmSet(self.means.to(device), self.vars.to(device), self.log_weights.to(device),
                          self.gauss2pdf.to(device), self.num_pdfs)

    def to_dict(self) -> dict[str, Tensor | int]:
        return {"means": self.means.cpu(), "vars": self.vars.cpu(),
                "log_weights": self.log_weights.cpu(), "gauss2pdf": self.gauss2pdf.cpu(),
                "num_pdfs": self.num_pdfs}

    @classmethod
    def from_dict(cls, d: dict) -> "DiagGmmSet":
        return cls(d["means"], d["vars"], d["log_weights"], d["gauss2pdf"], int(d["num_pdfs"]))

    def _prepare(self) -> None:
        """Precompute each Gaussian's row of ``[x^2, x, 1]`` coefficients and the pdfs' buckets.

        Everything is kept compact (``(G, 2D+1)`` rows, buckets padded to their own maximum): a
        ``(2D+1, P*M)`` matrix padded to the largest pdf (``M`` in the hundreds for silence after
        mixing up) is ~50x the model's size and is built only if :meth:`component_loglikes` asks."""
        P, D = self.num_pdfs, self.dim
        counts = torch.bincount(self.gauss2pdf, minlength=P)
        self.num_comp = counts
        M = int(counts.max())
        first = torch.cumsum(counts, 0) - counts
        self._first = first
        slot = torch.arange(self.num_gauss, device=self.device) - first[self.gauss2pdf]
        self._slot = slot
        self.max_comp = M
        # Gaussian index of (pdf, slot), -1 for padding.
        self.pdf_gauss = torch.full((P, M), -1, dtype=torch.long, device=self.device)
        self.pdf_gauss[self.gauss2pdf, slot] = torch.arange(self.num_gauss, device=self.device)
        inv = 1.0 / self.vars.double()
        mu = self.means.double()
        const = (self.log_weights.double()
                 - 0.5 * ((mu * mu * inv).sum(1) + torch.log(self.vars.double()).sum(1) + D * LOG_2PI))
        rows = torch.empty(self.num_gauss, 2 * D + 1, dtype=torch.float64, device=self.device)
        rows[:, :D] = -0.5 * inv
        rows[:, D:2 * D] = mu * inv
        rows[:, 2 * D] = const
        # (G, 2D+1): log(w_g N(x; g)) = [x^2, x, 1] . row g; a pdf's rows are contiguous (sorted by pdf)
        self._gauss_params = rows.float()
        self._dense_params: Tensor | None = None
        self._dense_params_pdf: Tensor | None = None
        # Pdfs bucketed by component count (1, 2, 3-4, 5-8, ...), each bucket padded to its own
        # maximum: the per-pdf log-sum-exp is a dense reduction, with at most 2x padding.
        bucket = torch.ceil(torch.log2(counts.clamp_min(1).double())).long()
        self._buckets = []
        # bucket index of every pdf and its position inside its bucket (component_loglikes_row_buckets)
        self._bucket_of_pdf = torch.empty(P, dtype=torch.long, device=self.device)
        self._pos_in_bucket = torch.empty(P, dtype=torch.long, device=self.device)
        for b in torch.unique(bucket).tolist():
            pdfs_b = torch.nonzero(bucket == b).flatten()
            m_b = int(counts[pdfs_b].max())
            self._bucket_of_pdf[pdfs_b] = len(self._buckets)
            self._pos_in_bucket[pdfs_b] = torch.arange(pdfs_b.numel(), device=self.device)
            self._buckets.append((pdfs_b, m_b, self._pdf_rows(pdfs_b, m_b).reshape(-1, 2 * D + 1).T.contiguous()))

    def _pdf_rows(self, pdfs: Tensor, m: int) -> Tensor:
        """``(U, m, 2D+1)``: the coefficient rows of ``pdfs``' first ``m`` components; slots a pdf
        lacks are padding rows ``[0, ..., 0, -inf]`` (log-likelihood ``-inf``)."""
        D = self.dim
        s = torch.arange(m, device=self.device)
        valid = s[None, :] < self.num_comp[pdfs][:, None]                         # (U, m)
        g = (self._first[pdfs][:, None] + s[None, :]).clamp_max(self.num_gauss - 1)
        out = self._gauss_params[g]                                               # (U, m, 2D+1)
        pad = torch.zeros(2 * D + 1, device=self.device)
        pad[2 * D] = -math.inf
        out[~valid] = pad
        return out

    @property
    def _params(self) -> Tensor:
        """The padded ``(2D+1, P*M)`` matrix of :meth:`component_loglikes` (column ``p*M + slot``),
        built on first use."""
        if self._dense_params is None:
            D, M = self.dim, self.max_comp
            dense = torch.zeros(2 * D + 1, self.num_pdfs * M, device=self.device)
            dense[2 * D] = -math.inf
            dense[:, self.gauss2pdf * M + self._slot] = self._gauss_params.T
            self._dense_params = dense
        return self._dense_params

    @property
    def _params_pdf(self) -> Tensor:
        """The same coefficients as ``(P, M, 2D+1)`` (padding rows ``[0, ..., 0, -inf]``), built on
        first use by the aligned-pdf E-steps (:meth:`components_by_pdf`): training only, never decoding. Its
        layout is kept because a one-frame product's rounding depends on where its rows lie in memory."""
        if self._dense_params_pdf is None:
            D, M = self.dim, self.max_comp
            dense = torch.zeros(self.num_pdfs, M, 2 * D + 1, device=self.device)
            dense[:, :, 2 * D] = -math.inf
            dense[self.gauss2pdf, self._slot] = self._gauss_params
            self._dense_params_pdf = dense
        return self._dense_params_pdf

    # -- likelihoods ----------------------------------------------------------------------------
    @staticmethod
    def _augment(x: Tensor) -> Tensor:
        return torch.cat([x * x, x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], 1)

    def component_loglikes(self, x: Tensor) -> Tensor:
        """``x (T, D)`` -> ``(T, P, M)``: log(w_g N(x_t; g)) per pdf and slot (``-inf`` = padding).
        One matmul of ``[x^2, x, 1]`` with the precomputed parameters."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features of shape {tuple(x.shape)}, model expects (T, {self.dim})")
        x = x.to(self.device, torch.float32)
        return (self._augment(x) @ self._params).view(x.shape[0], self.num_pdfs, self.max_comp)

    def component_loglikes_row_buckets(self, x: Tensor, frames: Tensor, pdfs: Tensor
                                       ) -> Iterator[tuple[Tensor, Tensor]]:
        """Row ``r`` of ``component_loglikes(x)[frames[r], pdfs[r]]`` for only the requested (frame,
        pdf) pairs, one bucket of pdfs with similar component counts at a time (as ``loglikes``), so
        a pdf with many Gaussians (silence) does not pad every other pdf to its size: yields
        ``(sel (R_b,), comp (R_b, m_b))``, the rows ``sel`` whose pdf is in the bucket and their
        log(w_g N(x_t; g)) for the bucket's ``m_b`` slots (``-inf`` = padding)."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features of shape {tuple(x.shape)}, model expects (T, {self.dim})")
        frames, pdfs = frames.to(self.device), pdfs.to(self.device)
        aug = self._augment(x.to(self.device, torch.float32))
        row_bucket, row_pos = self._bucket_of_pdf[pdfs], self._pos_in_bucket[pdfs]
        for b, (pdfs_b, m_b, params_b) in enumerate(self._buckets):
            sel = torch.nonzero(row_bucket == b).flatten()
            if sel.numel() == 0:
                continue
            uf, inv = torch.unique(frames[sel], return_inverse=True)
            comp = (aug[uf] @ params_b).view(uf.numel(), pdfs_b.numel(), m_b)
            yield sel, comp[inv, row_pos[sel]]

    def loglikes(self, x: Tensor, chunk: int = 20000) -> Tensor:
        """``x (T, D)`` -> per-pdf log-likelihoods ``(T, num_pdfs)`` (float32): per bucket of pdfs
        with similar component counts, one product of ``[x^2, x, 1]`` with their parameters and a
        log-sum-exp over the components."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features of shape {tuple(x.shape)}, model expects (T, {self.dim})")
        x = x.to(self.device, torch.float32)
        out = torch.empty(x.shape[0], self.num_pdfs, device=self.device)
        for i in range(0, x.shape[0], chunk):
            aug = self._augment(x[i:i + chunk])
            for pdfs_b, m_b, params_b in self._buckets:
                comp = (aug @ params_b).view(aug.shape[0], pdfs_b.numel(), m_b)
                out[i:i + chunk, pdfs_b] = logsumexp_last(comp)
        return out

    def loglikes_pdfs(self, x: Tensor, pdfs: Tensor) -> Tensor:
        """Log-likelihoods of only the pdfs ``pdfs (U,)``: ``x (T, D)`` -> ``(T, U)`` (forced
        alignment needs just the pdfs of the utterance's chain); only their components are evaluated."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features of shape {tuple(x.shape)}, model expects (T, {self.dim})")
        pdfs = pdfs.to(self.device)
        aug = self._augment(x.to(self.device, torch.float32))
        out = torch.empty(x.shape[0], pdfs.numel(), device=self.device)
        m_of = self.num_comp[pdfs]
        bucket = torch.ceil(torch.log2(m_of.clamp_min(1).double())).long()
        for b in torch.unique(bucket).tolist():
            pos = torch.nonzero(bucket == b).flatten()
            m_b = int(m_of[pos].max())
            w = self._pdf_rows(pdfs[pos], m_b).reshape(-1, 2 * self.dim + 1)     # (U_b*m_b, 2D+1)
            out[:, pos] = logsumexp_last((aug @ w.T).view(x.shape[0], pos.numel(), m_b))
        return out

    def loglikes_at(self, x: Tensor, frames: Tensor, pdfs: Tensor) -> Tensor:
        """``log p(x[frames[r]] | pdf pdfs[r])`` for only the requested (frame, pdf) pairs, ``(R,)``
        float32: each distinct pair once, only its pdf's components (lattice rescoring needs a few
        dozen pdfs per frame where ``loglikes`` evaluates all of them)."""
        frames, pdfs = frames.to(self.device).long(), pdfs.to(self.device).long()
        out = torch.empty(frames.numel(), device=self.device)
        if frames.numel() == 0:
            return out
        key, inv = torch.unique(frames * self.num_pdfs + pdfs, return_inverse=True)
        uniq = torch.empty(key.numel(), device=self.device)
        x = x.to(self.device, torch.float32)
        for _, rows, _, comp in self.components_by_pdf(x[key // self.num_pdfs], key % self.num_pdfs):
            uniq[rows] = logsumexp_last(comp)
        return uniq[inv]

    def components_by_pdf(self, x: Tensor, pdfs: Tensor) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
        """Frames grouped by aligned pdf: yields ``(pdf, rows (n,), aug (n, 2D+1), log w N (n, m))``
        for each pdf present, ``m`` its number of components (one small matmul per pdf); ``aug``
        is ``[x^2, x, 1]`` of the rows, so ``post^T @ aug`` gives the ``x2, x, occ`` statistics."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features of shape {tuple(x.shape)}, model expects (T, {self.dim})")
        if pdfs.shape != (x.shape[0],):
            raise ValueError(f"{x.shape[0]} frames but {tuple(pdfs.shape)} pdf labels")
        if x.shape[0] == 0:
            return
        pdfs = pdfs.to(self.device)
        aug = self._augment(x.to(self.device, torch.float32))
        order = torch.argsort(pdfs, stable=True)
        uniq, counts = torch.unique_consecutive(pdfs[order], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        for p, s0, n, m in zip(uniq.tolist(), starts.tolist(), counts.tolist(), self.num_comp[uniq].tolist()):
            rows = order[s0:s0 + n]
            a = aug[rows]
            yield p, rows, a, a @ self._params_pdf[p, :m].T

    def gauss_posteriors(self, x: Tensor, pdfs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Posteriors of the components of the aligned pdf of each frame (Viterbi training).

        ``x (T, D)``, ``pdfs (T,)`` -> ``(gauss (T, M) Gaussian ids or -1, post (T, M), loglike (T,))``
        where ``loglike[t] = log p(x_t | pdfs[t])``. Frames are grouped by pdf; each group is one
        ``(n_p, 2D+1) x (2D+1, M_p)`` product with that pdf's components only.
        """
        T, M = x.shape[0], self.max_comp
        gauss = torch.full((T, M), -1, dtype=torch.long, device=self.device)
        post = torch.zeros(T, M, device=self.device)
        ll = torch.zeros(T, device=self.device)
        for p, rows, _, sel in self.components_by_pdf(x, pdfs):
            m = sel.shape[1]
            lse, p_post = component_posteriors(sel)
            ll[rows] = lse
            post[rows, :m] = p_post
            gauss[rows, :m] = self.pdf_gauss[p, :m]
        return gauss, post, ll

    def gauss_posterior_pairs(self, x: Tensor, pdfs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`gauss_posteriors` as a list of (frame, Gaussian) pairs, without its ``(T, M)``
        matrices (``M`` the most components of any pdf: hundreds for silence after mixing up):
        ``(rows (N,), gauss (N,), post (N,))`` in the order of those matrices' entries (by frame,
        then component), the same numbers bit for bit."""
        M = self.max_comp
        rows_l, gauss_l, post_l, key_l = [], [], [], []
        for p, rows, _, sel in self.components_by_pdf(x, pdfs):
            m = sel.shape[1]
            post = component_posteriors(sel)[1]
            rows_l.append(rows.repeat_interleave(m))
            gauss_l.append(self.pdf_gauss[p, :m].repeat(rows.numel()))
            post_l.append(post.reshape(-1))
            key_l.append((rows[:, None] * M + torch.arange(m, device=self.device)).reshape(-1))
        if not rows_l:
            empty = torch.empty(0, dtype=torch.long, device=self.device)
            return empty, empty, torch.empty(0, device=self.device)
        order = torch.argsort(torch.cat(key_l))
        return torch.cat(rows_l)[order], torch.cat(gauss_l)[order], torch.cat(post_l)[order]

    def accumulate(self, accs: GmmAccs, x: Tensor, pdfs: Tensor) -> float:
        """E-step for frames ``x (T, D)`` aligned to ``pdfs (T,)``: adds each pdf's component
        statistics (``post^T [x, x^2, 1]``, float64) to ``accs``; returns the total log-likelihood."""
        D = self.dim
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for p, rows, a, sel in self.components_by_pdf(x, pdfs):
            m = sel.shape[1]
            lse, post = component_posteriors(sel)
            total += lse.double().sum()
            g = self.pdf_gauss[p, :m]
            post = post.double()                                                 # (n, m)
            stats = post.T @ a.double()                                          # (m, [x^2, x, 1])
            accs.x2.index_add_(0, g, stats[:, :D])
            accs.x.index_add_(0, g, stats[:, D:2 * D])
            accs.occ.index_add_(0, g, stats[:, 2 * D])
        return float(total)

    def accumulate_twofeats(self, accs: GmmAccs, x: Tensor, stats_x: Tensor, pdfs: Tensor) -> None:
        """Kaldi ``gmm-acc-stats-twofeats``: the posteriors of the components of each frame's aligned
        pdf come from ``x (T, D)``, the statistics added to ``accs`` are those of ``stats_x (T, D)``
        (the same frames in another feature space; float64). One pass over the pdfs for all frames."""
        if stats_x.shape != x.shape:
            raise ValueError(f"stats_x {tuple(stats_x.shape)} and x {tuple(x.shape)} must be the same frames")
        for p, rows, _, sel in self.components_by_pdf(x, pdfs):
            m = sel.shape[1]
            post = component_posteriors(sel)[1].double()                            # (n, m)
            g = self.pdf_gauss[p, :m]
            xs = stats_x[rows.to(stats_x.device)].to(self.device, torch.float64)
            accs.x.index_add_(0, g, post.T @ xs)
            accs.x2.index_add_(0, g, post.T @ (xs * xs))
            accs.occ.index_add_(0, g, post.sum(0))

    def update(self, accs: GmmAccs, min_var: float = 1e-3, min_count: float = 10.0,
               remove_low_count: bool = True) -> "DiagGmmSet":
        """ML re-estimation (Kaldi ``MleDiagGmmUpdate``): weights occ_g / occ_pdf, means x/occ,
        variances x2/occ - mean^2 floored at ``min_var``. Gaussians with ``occ < min_count`` keep
        their old mean/variance, and are removed (if ``remove_low_count``) unless they are the
        best-occupied Gaussian of their pdf. Pdfs with no data keep their parameters. Returns a new set.
        """
        occ = accs.occ.to(self.device)
        pdf_occ = torch.zeros(self.num_pdfs, dtype=torch.float64, device=self.device).index_add_(
            0, self.gauss2pdf, occ)
        ok = occ >= max(min_count, 1e-10)
        safe = occ.clamp_min(1e-10)[:, None]
        mean = accs.x.to(self.device) / safe
        var = (accs.x2.to(self.device) / safe - mean * mean).clamp_min(min_var)
        means = torch.where(ok[:, None], mean.float(), self.means)
        vars_ = torch.where(ok[:, None], var.float(), self.vars)
        has = pdf_occ[self.gauss2pdf] > 0
        w = torch.where(has, occ / pdf_occ[self.gauss2pdf].clamp_min(1e-300), torch.exp(self.log_weights.double()))
        keep = torch.ones(self.num_gauss, dtype=torch.bool, device=self.device)
        if remove_low_count:
            best = torch.full((self.num_pdfs,), -1.0, dtype=torch.float64, device=self.device)
            best = best.scatter_reduce(0, self.gauss2pdf, occ, reduce="amax")
            # The (first) best Gaussian of each pdf is always kept.
            is_best = torch.zeros_like(keep)
            cand = torch.nonzero(occ == best[self.gauss2pdf]).squeeze(1)
            first = torch.full((self.num_pdfs,), self.num_gauss, dtype=torch.long, device=self.device)
            first = first.scatter_reduce(0, self.gauss2pdf[cand], cand, reduce="amin")
            is_best[first] = True
            keep = (ok | is_best) & has | ~has
        w = torch.where(keep, w, torch.zeros_like(w))
        w_pdf = torch.zeros(self.num_pdfs, dtype=torch.float64, device=self.device).index_add_(0, self.gauss2pdf, w)
        w = (w / w_pdf[self.gauss2pdf]).clamp_min(1e-10)
        idx = torch.nonzero(keep).squeeze(1)
        return DiagGmmSet(means[idx], vars_[idx], torch.log(w[idx]).float(), self.gauss2pdf[idx],
                          self.num_pdfs)

    def split(self, target_total: int, pdf_occ: Tensor, generator: torch.Generator,
              power: float = 0.2, perturb: float = 0.2, min_count: float = 20.0) -> "DiagGmmSet":
        """Mix up to about ``target_total`` Gaussians (Kaldi ``SplitByCount`` + ``DiagGmm::Split``).

        Per-pdf targets from :func:`split_targets` (``pdf_occ (P,)`` occupancies from the last
        E-step), never fewer than now. Each round splits the
        heaviest component of every pdf still short of its target into two halves of the weight
        whose means move by +-``perturb`` standard deviations along one random direction
        (``generator`` makes it deterministic).
        """
        pdf_occ = pdf_occ.to(self.device, torch.float64)
        cur = self.num_comp.to(self.device)
        if target_total <= self.num_gauss or float(pdf_occ.clamp_min(0).sum()) <= 0:
            return self
        target = torch.maximum(split_targets(pdf_occ, target_total, power, min_count), cur)
        means, vars_, logw, g2p = self.means, self.vars, self.log_weights, self.gauss2pdf
        counts = cur.clone()
        while True:
            need = counts < target
            if not bool(need.any()):
                break
            G = means.shape[0]
            best = torch.full((self.num_pdfs,), -math.inf, device=self.device)
            best = best.scatter_reduce(0, g2p, logw, reduce="amax")
            cand = torch.nonzero((logw == best[g2p]) & need[g2p]).squeeze(1)
            first = torch.full((self.num_pdfs,), G, dtype=torch.long, device=self.device)
            first = first.scatter_reduce(0, g2p[cand], cand, reduce="amin")
            gs = first[need]
            sd = vars_[gs].sqrt()
            r = torch.randn(gs.shape[0], self.dim, generator=generator, dtype=torch.float32).to(self.device)
            delta = perturb * sd * r
            half = logw[gs] - math.log(2.0)
            means = means.clone()
            logw = logw.clone()
            new_mean = means[gs] + delta
            means[gs] = means[gs] - delta
            logw[gs] = half
            means = torch.cat([means, new_mean])
            vars_ = torch.cat([vars_, vars_[gs]])
            logw = torch.cat([logw, half])
            g2p = torch.cat([g2p, g2p[gs]])
            counts = counts + need.long()
        return DiagGmmSet(means, vars_, logw, g2p, self.num_pdfs)


def split_targets(pdf_occ: Tensor, target_total: int, power: float, min_count: float) -> Tensor:
    """Gaussians per pdf for mixing up (Kaldi ``GetSplitTargets``), LongTensor ``(P,)``.

    Kaldi hands out Gaussians one at a time to the pdf with the largest ``occ^power / n`` among
    those that can still take one (``(n + 1) * min_count < occ``), starting from one per pdf,
    until ``target_total``. The greedy result is ``n_i = clamp(floor(occ_i^power / lam), 1, cap_i)``
    for the smallest ``lam`` whose total stays within the target, found here by bisection; Gaussians
    a capped pdf cannot take go to the others.
    """
    occ = pdf_occ.to(torch.float64).clamp_min(0)
    w = occ ** power
    cap = torch.clamp(torch.ceil(occ / min_count).long() - 1, min=1) if min_count > 0 \
        else torch.full_like(occ, 1 << 30, dtype=torch.long)

    def alloc(lam: float) -> Tensor:
        return torch.minimum(torch.clamp(torch.floor(w / lam), min=1).long(), cap)

    if int(cap.sum()) <= target_total:
        return cap
    lo, hi = 1e-12, float(w.max()) + 1.0     # alloc(hi) == 1 per pdf <= target; alloc(lo) == cap > target
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        if int(alloc(mid).sum()) > target_total:
            lo = mid
        else:
            hi = mid
    return alloc(hi)


# exp() of float32 arguments whose result underflows (below about -87.3: denormal or zero) took a
# path 10-15x slower than the vectorised one on the AVX512 CPU measured (AMD EPYC, torch 2.14); most
# components of a frame are that far below its best. Raised to EXP_FLOOR they add ~1.6e-38 each to a sum that holds exp(0) = 1, which
# float32 absorbs: the log-sum-exp is unchanged bit for bit (tests/test_gmm.py checks it).
EXP_FLOOR = -87.0


EXP_NORMAL_MIN = -87.33654022216797
"""The smallest float32 whose ``torch.exp`` is a normal number (1.1755e-38 =
``torch.finfo(torch.float32).tiny``; found over every float32 in [-87.5, -87.2], vectorised and scalar
paths alike, with and without flush-to-zero; tests/test_gmm.py checks it)."""


def exp_flushed_(a: Tensor) -> Tensor:
    """``torch.exp(a)`` in place, with results below the smallest normal float32 (1.2e-38) set to 0.

    Why: x86's vectorised exp takes a slow path for every argument whose result underflows, i.e.
    below ``EXP_NORMAL_MIN`` (measured here: 32 ns per element against 0.15 ns; 14 ns below -104),
    and the component posteriors ``exp(log p(x, j) - log p(x))`` of a pdf are mostly that far down
    for a given frame. Those arguments are raised to ``EXP_NORMAL_MIN`` (a normal result, the fast
    path) and their results set to 0, which is what ``torch.exp`` returns there under flush-to-zero
    and a subnormal without it (flush-to-zero is per-thread state, ``asr.jobs.device.flush_denormals``;
    it does not avoid the slow path: exp(-88) took 32 ns per element with it too). Everything else is
    ``torch.exp``'s bit for bit; float64 statistics summed from such posteriors are unchanged
    (tests/test_gmm.py). Other dtypes: plain ``exp_``."""
    if a.dtype != torch.float32:
        return a.exp_()
    low = a < EXP_NORMAL_MIN
    return a.clamp_(min=EXP_NORMAL_MIN).exp_().masked_fill_(low, 0.0)


def component_posteriors(sel: Tensor) -> tuple[Tensor, Tensor]:
    """``(log p(x), p(j | x))`` of each frame's components from their joint log-likelihoods
    ``sel (n, m)`` (``log w_j N(x; j)``, float32): ``(n,)`` and ``(n, m)``. The log-likelihood equals
    ``torch.logsumexp(sel, 1)`` bit for bit and the posteriors ``torch.exp(sel - lse[:, None])``
    except for subnormals, which are 0 here (:func:`logsumexp_last`, :func:`exp_flushed_`): without
    the exp's slow path for underflowing arguments, which took half of a triphone pass's E-step."""
    lse = logsumexp_last(sel.clone())
    return lse, exp_flushed_(sel - lse[:, None])


def logsumexp_last(c: Tensor) -> Tensor:
    """logsumexp over the last dim, in place on ``c`` (every row has a finite entry): equal bit for bit
    to ``torch.logsumexp(c, -1)``, without exp's slow path for underflowing terms (``EXP_FLOOR``)."""
    m = c.amax(-1, keepdim=True)
    return c.sub_(m).clamp_min_(EXP_FLOOR).exp_().sum(-1).log_().add_(m.squeeze(-1))


def global_stats(feats: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Global mean and variance ``(D,)`` of a list of ``(T_i, D)`` matrices (float64 sums)."""
    n = sum(int(f.shape[0]) for f in feats)
    if n == 0:
        raise ValueError("no frames to compute global statistics from")
    s = sum(f.double().sum(0) for f in feats)
    s2 = sum((f.double() ** 2).sum(0) for f in feats)
    mean = s / n
    return mean.float(), (s2 / n - mean * mean).clamp_min(1e-6).float()
