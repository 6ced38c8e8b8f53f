"""File edges of the hybrid DNN: Kaldi alignment arks in, log-likelihood/posterior arks out,
and the picklable log-likelihood job used by ``asr.decode.decode_and_score``."""
from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from asr.jobs.atomic import atomic_path


def _kaldi_io():
    os.environ.setdefault("KALDI_ROOT", "/nonexistent")
    with contextlib.redirect_stdout(io.StringIO()):  # kaldi_io prints a KALDI_ROOT banner on import
        import kaldi_io
    return kaldi_io


def read_alignments(path: str | Path) -> dict[str, Tensor]:
    """Kaldi int-vector ark (``ali-to-pdf`` output or ``exp/<sys>/ali_pdf.ark``) -> utt -> LongTensor(T)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"alignment ark {path} not found")
    kio = _kaldi_io()
    try:
        return {k: torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in kio.read_vec_int_ark(str(path))}
    except Exception as e:  # kaldi_io raises assorted errors on a malformed ark
        raise ValueError(f"{path}: not a Kaldi int-vector ark ({e})") from e


def write_alignments(alis: dict[str, Tensor], path: str | Path) -> None:
    """utt -> (T,) ints to a Kaldi int-vector ark, atomically, keys sorted."""
    kio = _kaldi_io()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for k in sorted(alis):
            kio.write_vec_int(f, alis[k].numpy().astype(np.int32), key=k)


def write_matrices(items: Iterable[tuple[str, Tensor]], path: str | Path) -> int:
    """(utt, (T, D) float) pairs to a binary Kaldi matrix ark (readable by Kaldi's
    ``latgen-faster-mapped`` / ``copy-feats``); atomic (no temporary left when ``items`` or the
    write fails); returns the count written."""
    kio = _kaldi_io()
    n = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for k, m in items:
            kio.write_mat(f, m.numpy().astype(np.float32), key=k)
            n += 1
    return n


def read_matrices(path: str | Path) -> dict[str, Tensor]:
    kio = _kaldi_io()
    return {k: torch.from_numpy(np.array(v)) for k, v in kio.read_mat_ark(str(path))}


def load_features(data_dir: str | Path, utts: list[str] | None = None) -> dict[str, Tensor]:
    """Per-speaker-CMN features of a data dir (``asr.features.load_feats``), optionally a subset.
    Non-finite values are refused here, naming the utterances (a NaN would otherwise surface as a
    diverged training epoch far from its cause)."""
    from asr.features import load_feats

    feats = load_feats(data_dir, cmvn=True)
    if utts is not None:
        missing = [u for u in utts if u not in feats]
        if missing:
            raise ValueError(f"{data_dir}: no features for {len(missing)} utterance(s), e.g. {missing[0]}")
        feats = {u: feats[u] for u in utts}
    bad = [u for u, x in feats.items() if not bool(torch.isfinite(x).all())]
    if bad:
        raise ValueError(f"{data_dir}: non-finite feature values (NaN/Inf) in {len(bad)} utterance(s): "
                         f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")
    return feats


def loglike_job(model_path: str, data_dir: str, utts: list[str], logposts: bool = False,
                device: str = "cpu") -> Iterator[tuple[str, Tensor]]:
    """Picklable per-job scorer for ``decode_and_score``: ``functools.partial(loglike_job,
    model_path, data_dir)`` maps a list of utterance ids to (utt, (T, num_pdfs)) scaled
    log-likelihoods log p(s|x) − log p(s) (or log-posteriors with ``logposts=True``)."""
    from asr.nnet.model import load_model

    model = load_model(model_path, map_location=device).eval()
    feats = load_features(data_dir, list(utts))
    for u in utts:
        yield u, (model.log_posteriors(feats[u]) if logposts else model.loglikes(feats[u]))
