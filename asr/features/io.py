"""Feature extraction for a data directory and reading features back (Kaldi ark/scp).

``make_feats`` writes, like Kaldi's ``steps/make_mfcc.sh`` + ``steps/compute_cmvn_stats.sh``::

    DATA/data/raw_<type>.<job>.ark   binary float matrices, one per utterance
    DATA/feats.scp                   utt -> /abs/DATA/data/raw_<type>.<job>.ark:OFFSET
    DATA/data/cmvn_<type>.ark        per-speaker CMVN stats, (2, D+1) float64
    DATA/cmvn.scp                    spk -> /abs/DATA/data/cmvn_<type>.ark:OFFSET
    DATA/feats.json                  {"type", "dim", "frame_shift_ms", ...}

Every file is written under a ``.tmp`` name and renamed once all jobs have succeeded.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from asr.features.compute import (
    DITHER, FEAT_DIMS, FEAT_OPTS, FEAT_TYPES, FRAME_LENGTH_MS, FRAME_SHIFT_MS, apply_cmvn, cmvn_stats,
    compute_features, dither_seed, num_frames,
)
from asr.datadir.table import read_table
from asr.jobs import map_jobs, split_by_speaker
from asr.jobs.atomic import write_text_atomic

SPLITS_PER_JOB = 4


def _import_kaldi_io():
    """Import ``kaldi_io`` without its import-time KALDI_ROOT warning and PATH edit."""
    saved = {k: os.environ.get(k) for k in ("KALDI_ROOT", "PATH")}
    if "KALDI_ROOT" not in os.environ:
        os.environ["KALDI_ROOT"] = tempfile.gettempdir()
    try:
        import kaldi_io
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return kaldi_io


kaldi_io = _import_kaldi_io()


def _read_table(path: Path, what: str) -> dict[str, str]:
    """``key value...`` lines -> {key: rest of line} (a value is required); errors name the line."""
    return read_table(path, what=what, min_columns=2)


def read_wav(utt: str, path: str, sample_rate: int | None = 16000) -> tuple[torch.Tensor, int]:
    """Read one utterance's audio (RIFF WAV or NIST SPHERE via soundfile) as float32 ``(N,)`` on
    the 16-bit integer scale (first channel). Errors name the utterance and file."""
    if path.endswith("|"):
        raise ValueError(f"utterance {utt}: piped wav.scp entries are not supported: {path!r}")
    try:
        data, sr = sf.read(path, dtype="int16", always_2d=True)
    except Exception as e:  # soundfile raises RuntimeError / LibsndfileError / OSError
        raise ValueError(f"utterance {utt}: cannot read audio {path}: {e}") from None
    if sample_rate is not None and sr != sample_rate:
        raise ValueError(f"utterance {utt}: {path} has sample rate {sr} Hz, expected {sample_rate}")
    if data.shape[0] == 0:
        raise ValueError(f"utterance {utt}: {path} contains no samples")
    return torch.from_numpy(data[:, 0].astype(np.float32)), sr


@dataclass(frozen=True)
class _Job:
    index: int
    utts: list[tuple[str, str, str]]  # (utt, speaker, wav path)
    feat_type: str
    ark: str  # final path; the job writes ark + ".tmp"
    sample_rate: int | None


def _feats_job(job: _Job) -> dict:
    """Compute and write one job's features; returns scp lines and per-speaker CMVN stats."""
    # Per-utterance matrices are small: one intra-op thread is fastest and avoids
    # oversubscribing cores when jobs run side by side (nj=1 runs in-process).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _write_job(job)
    finally:
        torch.set_num_threads(threads)


def _write_job(job: _Job) -> dict:
    scp: list[tuple[str, str]] = []
    stats: dict[str, torch.Tensor] = {}
    frames = 0
    samples_sec = 0.0
    with open(job.ark + ".tmp", "wb") as f:
        for utt, spk, path in job.utts:
            wave, sr = read_wav(utt, path, job.sample_rate)
            if num_frames(wave.numel(), sr) == 0:
                raise ValueError(f"utterance {utt}: {path} has {wave.numel()} samples, shorter "
                                 f"than one {FRAME_LENGTH_MS:g} ms window")
            feats = compute_features(wave, sr, job.feat_type, seed=dither_seed(utt))
            offset = f.tell() + len(utt.encode("utf-8")) + 1
            kaldi_io.write_mat(f, feats.numpy(), key=utt)
            scp.append((utt, f"{job.ark}:{offset}"))
            s = cmvn_stats(feats)
            stats[spk] = stats[spk] + s if spk in stats else s
            frames += feats.shape[0]
            samples_sec += wave.numel() / sr
    return {"scp": scp, "stats": stats, "frames": frames, "seconds": samples_sec}


def make_feats(data_dir: str | Path, feat_type: str, nj: int = 1, sample_rate: int | None = 16000,
               progress: bool = True) -> dict:
    """Compute features for every utterance of ``data_dir/wav.scp`` with ``nj`` parallel jobs.

    Utterances are split by speaker (``asr.jobs.split_by_speaker``) into up to
    ``nj * SPLITS_PER_JOB`` splits run ``nj`` at a time, each writing
    ``data/raw_<type>.<split>.ark``; per-speaker CMVN stats go to
    ``data/cmvn_<type>.ark``. ``sample_rate``: required rate in Hz (None accepts any).
    Returns the ``feats.json`` dictionary. Raises ``ValueError`` naming the utterance on
    unreadable/empty/too-short audio or a wrong sample rate; nothing is renamed into place
    unless every job succeeded.
    """
    if feat_type not in FEAT_TYPES:
        raise ValueError(f"unknown feature type {feat_type!r}; expected one of {FEAT_TYPES}")
    if nj < 1:
        raise ValueError(f"nj must be >= 1, got {nj}")
    data_dir = Path(data_dir).resolve()
    for name in ("wav.scp", "utt2spk"):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"{data_dir / name} not found")
    wav = _read_table(data_dir / "wav.scp", "utterance")
    utt2spk = _read_table(data_dir / "utt2spk", "utterance")
    no_spk = [u for u in wav if u not in utt2spk]
    if no_spk:
        raise ValueError(f"{data_dir / 'utt2spk'}: utterance {no_spk[0]!r} of wav.scp has no speaker"
                         f" ({len(no_spk)} such utterances)")
    if not wav:
        raise ValueError(f"{data_dir / 'wav.scp'} is empty")
    # More splits than processes keeps the progress bar moving and the load balanced.
    parts = split_by_speaker({u: utt2spk[u] for u in wav}, nj * SPLITS_PER_JOB)
    out_dir = data_dir / "data"
    out_dir.mkdir(exist_ok=True)
    jobs = [_Job(index=k + 1, utts=[(u, utt2spk[u], wav[u]) for u in part], feat_type=feat_type,
                 ark=str(out_dir / f"raw_{feat_type}.{k + 1}.ark"), sample_rate=sample_rate)
            for k, part in enumerate(parts)]
    try:
        results = map_jobs(_feats_job, jobs, nj=nj, desc=f"{feat_type} {data_dir.name}" if progress else None,
                           progress=progress, log_dir=data_dir / "log", task=f"make_{feat_type}",
                           job_ids=[j.index for j in jobs])
    except RuntimeError as e:  # map_jobs wraps the job's error; surface the utterance message
        cause = e.__cause__
        for j in jobs:
            Path(j.ark + ".tmp").unlink(missing_ok=True)
        if isinstance(cause, (ValueError, FileNotFoundError)):
            raise ValueError(str(cause)) from cause
        raise
    except BaseException:
        for j in jobs:
            Path(j.ark + ".tmp").unlink(missing_ok=True)
        raise

    stats: dict[str, torch.Tensor] = {}
    scp: list[tuple[str, str]] = []
    for r in results:
        scp.extend(r["scp"])
        for spk, s in r["stats"].items():
            stats[spk] = stats[spk] + s if spk in stats else s
    cmvn_ark = out_dir / f"cmvn_{feat_type}.ark"
    cmvn_scp: list[tuple[str, str]] = []
    with open(str(cmvn_ark) + ".tmp", "wb") as f:
        for spk in sorted(stats):
            offset = f.tell() + len(spk.encode("utf-8")) + 1
            kaldi_io.write_mat(f, stats[spk].numpy(), key=spk)
            cmvn_scp.append((spk, f"{cmvn_ark}:{offset}"))
    meta = {
        "type": feat_type, "dim": FEAT_DIMS[feat_type], "frame_shift_ms": FRAME_SHIFT_MS,
        "frame_length_ms": FRAME_LENGTH_MS, "sample_rate": sample_rate,
        "options": {**{k: v for k, v in FEAT_OPTS[feat_type].items()}, "dither": DITHER,
                    "dither_seed": "crc32(utterance id)"},
        "cmvn": "per-speaker", "num_utts": len(scp), "num_speakers": len(stats),
        "num_frames": sum(r["frames"] for r in results),
        "hours": round(sum(r["seconds"] for r in results) / 3600.0, 4),
        "num_jobs": len(jobs),
    }
    # All jobs succeeded: move everything into place. The old index files go first so that a
    # crash in between never leaves an scp pointing into replaced arks.
    for name in ("feats.json", "feats.scp", "cmvn.scp"):
        (data_dir / name).unlink(missing_ok=True)
    for j in jobs:
        os.replace(j.ark + ".tmp", j.ark)
    os.replace(str(cmvn_ark) + ".tmp", cmvn_ark)
    keep = {Path(j.ark).name for j in jobs}
    for old in out_dir.glob(f"raw_{feat_type}.*.ark"):
        if old.name not in keep:
            old.unlink()
    write_text_atomic(data_dir / "feats.scp", "".join(f"{u} {v}\n" for u, v in sorted(scp)))
    write_text_atomic(data_dir / "cmvn.scp", "".join(f"{s} {v}\n" for s, v in cmvn_scp))
    write_text_atomic(data_dir / "feats.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta


def _read_scp_matrix(rx: str, key: str, scp: Path, what: str = "utterance") -> torch.Tensor:
    """One matrix of an scp; unreadable or non-finite (NaN / inf) matrices are a ValueError
    naming the file and the ``what`` (utterance / speaker) ``key``."""
    try:
        m = torch.from_numpy(np.array(kaldi_io.read_mat(rx), copy=True))
    except Exception as e:
        raise ValueError(f"{scp}: cannot read matrix of {key!r} at {rx}: {e}") from None
    finite = torch.isfinite(m)
    if not bool(finite.all()):
        rows = torch.nonzero(~finite.all(dim=1)).flatten().tolist() if m.dim() == 2 else []
        raise ValueError(f"{scp}: {what} {key!r} holds {int((~finite).sum())} non-finite value(s) (NaN/inf)"
                         + (f" in row(s) {rows[:5]}{' ...' if len(rows) > 5 else ''}" if rows else "")
                         + f" at {rx}; recompute it or leave the {what} out")
    return m


def load_cmvn(data_dir: str | Path) -> dict[str, torch.Tensor]:
    """Per-speaker CMVN stats from ``data_dir/cmvn.scp``: {speaker: float64 ``(2, D + 1)``}."""
    scp = Path(data_dir) / "cmvn.scp"
    if not scp.is_file():
        raise FileNotFoundError(f"{scp} not found (run `asr feats` first)")
    return {spk: _read_scp_matrix(rx, spk, scp, "speaker").to(torch.float64)
            for spk, rx in _read_table(scp, "speaker").items()}


def load_feats(data_dir: str | Path, cmvn: bool = True, norm_vars: bool = False,
               utts: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Read features of ``data_dir/feats.scp`` as {utt: float32 ``(T, D)``} in scp order (or the
    order of ``utts``), with per-speaker CMVN applied when ``cmvn`` (mean only unless
    ``norm_vars``). Unknown utterances in ``utts`` and features holding NaN / inf are a
    ``ValueError`` naming the utterance (a non-finite frame would poison every model trained
    on it)."""
    data_dir = Path(data_dir)
    scp = data_dir / "feats.scp"
    if not scp.is_file():
        raise FileNotFoundError(f"{scp} not found (run `asr feats` first)")
    table = _read_table(scp, "utterance")
    if utts is None:
        utts = list(table)
    else:
        unknown = [u for u in utts if u not in table]
        if unknown:
            raise ValueError(f"{scp}: no features for utterance {unknown[0]!r} ({len(unknown)} missing)")
    stats: dict[str, torch.Tensor] = {}
    utt2spk: dict[str, str] = {}
    if cmvn:
        stats = load_cmvn(data_dir)
        utt2spk = _read_table(data_dir / "utt2spk", "utterance")
    out: dict[str, torch.Tensor] = {}
    for u in utts:
        x = _read_scp_matrix(table[u], u, scp).to(torch.float32)
        if cmvn:
            spk = utt2spk.get(u)
            if spk is None or spk not in stats:
                raise ValueError(f"{data_dir}: no CMVN stats for utterance {u!r} (speaker {spk!r})")
            x = apply_cmvn(x, stats[spk], norm_vars=norm_vars)
        out[u] = x
    return out
