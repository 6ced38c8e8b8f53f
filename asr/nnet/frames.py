"""Frame-level training data for the hybrid DNN: features, splicing indices and pdf targets.

Utterances are concatenated into one ``(N, D)`` matrix; splicing (context ``±c`` frames, edge
frames replicated as Kaldi's ``splice-feats``) is represented by an index table ``(N, 2c+1)`` of
row numbers into that matrix, so a shuffled minibatch is one gather ``feats[index[rows]]`` and
the ``(N, (2c+1)·D)`` spliced matrix is never materialised (360k x 440 floats would be 630 MB).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor


def splice_index(lengths: Tensor, left: int, right: int) -> Tensor:
    """Row indices of the spliced context of every frame of concatenated utterances.

    lengths: LongTensor (U,) frames per utterance. Returns LongTensor (N, left+1+right),
    N = lengths.sum(); entry [n, k] is the global row of frame ``n + k - left`` clamped to the
    first/last frame of n's own utterance (edge replication; context never crosses utterances).
    """
    if left < 0 or right < 0:
        raise ValueError(f"splice context must be >= 0, got left={left} right={right}")
    lengths = lengths.long()
    if (lengths <= 0).any():
        raise ValueError("splice_index: every utterance needs at least one frame")
    n = int(lengths.sum())
    starts = torch.cumsum(lengths, 0) - lengths                       # (U,)
    utt_of = torch.repeat_interleave(torch.arange(len(lengths)), lengths)  # (N,)
    first = starts[utt_of]
    last = first + lengths[utt_of] - 1
    offs = torch.arange(-left, right + 1)                               # (K,)
    idx = torch.arange(n).unsqueeze(1) + offs.unsqueeze(0)              # (N, K)
    return torch.maximum(torch.minimum(idx, last.unsqueeze(1)), first.unsqueeze(1))


def splice(x: Tensor, left: int, right: int) -> Tensor:
    """Splice one utterance: (T, D) -> (T, (left+1+right)·D), edge frames replicated."""
    idx = splice_index(torch.tensor([x.shape[0]]), left, right)
    return x[idx].reshape(x.shape[0], -1)


@dataclass
class FrameData:
    """Concatenated frames of a set of utterances.

    feats: (N, D) float32 raw (CMN'd) features; targets: (N,) pdf ids (or None when unlabelled);
    index: (N, K) splice rows (see ``splice_index``); utts / lengths: utterance order and frames.
    """

    feats: Tensor
    targets: Tensor | None
    index: Tensor
    utts: list[str]
    lengths: Tensor
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.feats.shape[0])

    def spliced(self, rows: Tensor) -> Tensor:
        """Spliced inputs of the given frame rows: (B,) -> (B, K·D)."""
        return self.feats[self.index[rows]].reshape(len(rows), -1)

    def spliced_moments(self) -> tuple[Tensor, Tensor]:
        """Exact mean and variance of the spliced inputs, (K·D,) each, without splicing:
        column k of the index table visits row r ``bincount(index[:, k])[r]`` times."""
        n, k = self.index.shape
        f = self.feats.double()
        means, sq = [], []
        for j in range(k):
            c = torch.bincount(self.index[:, j], minlength=n).double()
            means.append(c @ f / n)
            sq.append(c @ (f * f) / n)
        mean = torch.cat(means)
        var = (torch.cat(sq) - mean * mean).clamp_min(0.0)
        return mean.float(), var.float()


def build_frame_data(feats: dict[str, Tensor], alis: dict[str, Tensor] | None, left: int, right: int,
                     num_pdfs: int | None = None, tolerance: int = 2,
                     utts: list[str] | None = None) -> FrameData:
    """Pair features with pdf alignments and build the splice table.

    feats: utt -> (T, D); alis: utt -> (T',) pdf ids (None for unlabelled data, e.g. decoding).
    An utterance whose |T - T'| > ``tolerance`` or that lacks an alignment is skipped and recorded
    in ``FrameData.skipped`` (utt -> reason); within tolerance both are cut to min(T, T') (Kaldi
    feature/alignment frame counts differ by a frame or two between front-ends). A pdf id outside
    ``[0, num_pdfs)`` raises ValueError naming the utterance.
    """
    order = sorted(feats) if utts is None else list(utts)
    xs, ys, lens, kept = [], [], [], []
    skipped: dict[str, str] = {}
    dim = None
    for u in order:
        if u not in feats:
            skipped[u] = "no features"
            continue
        x = feats[u]
        if x.ndim != 2:
            raise ValueError(f"utterance {u}: features must be (T, D), got shape {tuple(x.shape)}")
        if dim is None:
            dim = x.shape[1]
        elif x.shape[1] != dim:
            raise ValueError(f"utterance {u}: feature dim {x.shape[1]} != {dim} of the other utterances")
        t = x.shape[0]
        if alis is not None:
            if u not in alis:
                skipped[u] = "no alignment"
                continue
            y = alis[u].long()
            if abs(y.shape[0] - t) > tolerance:
                skipped[u] = f"length mismatch: {t} feature frames vs {y.shape[0]} alignment frames"
                continue
            t = min(t, y.shape[0])
            y = y[:t]
            if num_pdfs is not None and t and (int(y.min()) < 0 or int(y.max()) >= num_pdfs):
                raise ValueError(f"utterance {u}: pdf id {int(y.max())} outside [0, {num_pdfs}) "
                                 f"(alignment does not match the model's pdf count)")
            ys.append(y)
        if t == 0:
            skipped[u] = "zero frames"
            if alis is not None:
                ys.pop()
            continue
        xs.append(x[:t].float())
        lens.append(t)
        kept.append(u)
    if not kept:
        raise ValueError(f"no usable utterances ({len(skipped)} skipped, e.g. "
                         f"{next(iter(skipped.items()), ('-', '-'))})")
    lengths = torch.tensor(lens, dtype=torch.long)
    return FrameData(feats=torch.cat(xs), targets=torch.cat(ys) if alis is not None else None,
                     index=splice_index(lengths, left, right), utts=kept, lengths=lengths,
                     skipped=skipped)


def split_cv_speakers(utt2spk: dict[str, str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Hold out ``fraction`` of the speakers (at least one, deterministic given ``seed``).
    Returns (train_utts, cv_utts), each sorted."""
    spks = sorted(set(utt2spk.values()))
    if len(spks) < 2:
        raise ValueError(f"need >= 2 speakers for a cross-validation split, got {len(spks)}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(spks), generator=g).tolist()
    n_cv = min(len(spks) - 1, max(1, round(fraction * len(spks))))
    cv_spk = {spks[i] for i in perm[:n_cv]}
    train = sorted(u for u, s in utt2spk.items() if s not in cv_spk)
    cv = sorted(u for u, s in utt2spk.items() if s in cv_spk)
    return train, cv


# Kaldi ``PdfPrior`` (src/nnet/nnet-pdf-prior.cc) hard-sets the log-prior of a pdf whose relative
# frequency is below ``--prior-floor`` to sqrt(FLT_MAX): subtracting it disables the pdf's output
# (a scaled log-likelihood of about -1.8e19, finite so no NaN appears downstream).
DISABLED_LOG_PRIOR = math.sqrt(torch.finfo(torch.float32).max)


def pdf_log_priors(targets: Tensor, num_pdfs: int, floor: float = 1e-10) -> Tensor:
    """log p(s) from alignment counts, as Kaldi ``nnet-forward --class-frame-counts``:
    (N,) pdf ids -> (num_pdfs,) natural-log relative frequencies, ``log(c / N + 1e-20)``.

    A pdf whose relative frequency is below ``floor`` (Kaldi ``--prior-floor`` 1e-10, i.e. every
    pdf never seen in the alignment) gets ``DISABLED_LOG_PRIOR`` so that its scaled
    log-likelihood ``log p(s|x) - log p(s)`` is about -1.8e19 and the decoder never uses it
    (flooring the prior instead would *raise* such a pdf's score by ``-log floor`` nats)."""
    counts = torch.bincount(targets.long(), minlength=num_pdfs).double()
    if counts.numel() != num_pdfs:
        raise ValueError(f"pdf ids up to {counts.numel() - 1} but only {num_pdfs} pdfs")
    rel = counts / counts.sum().clamp_min(1.0)
    log_p = (rel + 1e-20).log()
    log_p[rel < floor] = DISABLED_LOG_PRIOR
    return log_p.float()
