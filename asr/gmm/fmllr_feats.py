"""Speaker-adapted features for the hybrid DNN: the SAT system's LDA+MLLT+fMLLR features
written as a data directory (Kaldi's ``steps/nnet/make_fmllr_feats.sh``).

Kaldi's TIMIT DNN (nnet1) is trained on these features rather than raw fbank: they carry
the per-speaker normalisation the SAT GMM learned, which matters on corpora whose speakers
differ by channel and noise. Training speakers use the transforms estimated during SAT
training (``exp/tri3/trans.pt``); a dev/test set uses those of its first decoding pass
(``exp/tri3/decode_<set>/trans.pt``), so no reference transcript is ever used for them.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import kaldi_io
import torch

from asr.gmm.system import load_system, read_transcripts

# Data-dir files carried over unchanged from the source directory.
CARRY = ("wav.scp", "text", "text.39", "text.wrd", "phone_times", "utt2spk", "spk2utt",
         "spk2gender", "utt2dur", "utt2orig")


def write_fmllr_feats(model_dir: str | Path, data_dir: str | Path, out_dir: str | Path,
                      trans_path: str | Path | None = None) -> dict:
    """Write ``out_dir`` = ``data_dir`` with ``feats.scp`` holding ``model_dir``'s adapted
    features ``(T, dim)`` per utterance, identity CMVN stats (the features are already
    speaker-normalised) and ``feats.json``. Written to ``out_dir.tmp`` then renamed.

    trans_path: per-speaker fMLLR transforms ``{speaker: (dim, dim+1)}``; default the
    training transforms of ``model_dir``. A speaker without a transform is an error.
    """
    sys_ = load_system(model_dir)
    if trans_path is not None:
        from asr.jobs.safeio import load_data

        fmllr = load_data(trans_path, what="fMLLR transforms")
    else:
        fmllr = sys_.fmllr
    if not fmllr:
        raise ValueError(f"{model_dir}: no fMLLR transforms (a SAT system and its trans.pt are needed)")
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    _, utt2spk = read_transcripts(data_dir)
    missing = sorted({s for s in utt2spk.values() if s not in fmllr})
    if missing:
        raise ValueError(f"{data_dir}: speakers without an fMLLR transform in "
                         f"{trans_path or Path(model_dir) / 'trans.pt'}: {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''} ({len(missing)})")
    feats = sys_.features(data_dir, fmllr=fmllr)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    for name in CARRY:
        if (data_dir / name).is_file():
            shutil.copy(data_dir / name, tmp / name)
    ark = (out_dir / "data" / "fmllr.ark").resolve()
    cmvn_ark = (out_dir / "data" / "cmvn_fmllr.ark").resolve()
    dim = sys_.pipeline.dim
    scp, frames = [], 0
    with open(tmp / "data" / "fmllr.ark", "wb") as f:
        for u in sorted(feats):
            offset = f.tell() + len(u.encode()) + 1
            kaldi_io.write_mat(f, feats[u].to(torch.float32).numpy(), key=u)
            scp.append(f"{u} {ark}:{offset}\n")
            frames += feats[u].shape[0]
    cmvn = []
    with open(tmp / "data" / "cmvn_fmllr.ark", "wb") as f:
        for spk in sorted(set(utt2spk.values())):
            stats = torch.zeros(2, dim + 1, dtype=torch.float64)
            stats[0, dim] = 1.0  # count 1, sums 0: mean normalisation is the identity
            offset = f.tell() + len(spk.encode()) + 1
            kaldi_io.write_mat(f, stats.numpy(), key=spk)
            cmvn.append(f"{spk} {cmvn_ark}:{offset}\n")
    (tmp / "feats.scp").write_text("".join(scp))
    (tmp / "cmvn.scp").write_text("".join(cmvn))
    meta = {"type": "fmllr", "dim": dim, "frame_shift_ms": 10, "source": str(Path(model_dir).resolve()),
            "transforms": str(Path(trans_path).resolve()) if trans_path else "training",
            "cmvn": "identity (features are speaker-adapted)", "num_utts": len(scp), "num_frames": frames}
    (tmp / "feats.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return meta
