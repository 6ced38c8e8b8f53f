"""The sequence-trained DNN's epoch chosen on the corpus's own dev set.

Kaldi's ``train_mpe.sh`` writes a model per epoch (``num_iters=4``) and the TIMIT recipe decodes
each; its users pick one. A learning rate and an epoch count chosen on one corpus
over-train or under-train on another, so here the choice is part of the stage: every epoch's
checkpoint (``OUT/ckpt/epochNNN.pt`` of :func:`asr.seqtrain.train.train_sequence`) decodes the dev
set with the decoding graph, and the candidate with the fewest dev errors becomes ``OUT/final.pt``
— the CE model itself (epoch 0, its ``decode_dev``) included, so the stage never makes the CE
model worse on dev without saying so; ``selection.json`` records every candidate's dev figure.
Ties go to the earlier epoch.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from asr.decode.pipeline import adopt_decoding, read_scoring_errors
from asr.jobs.atomic import copy_file_atomic, write_text_atomic
from asr.jobs.safeio import load_data
from asr.nnet.model import load_model, save_model


def _save_epoch_model(ce_dir: Path, ck_path: Path, dest: Path, extra: dict) -> None:
    """The CE network with the weights of sequence-training checkpoint ``ck_path``, saved as ``dest``."""
    model = load_model(ce_dir)
    model.load_state_dict(load_data(ck_path, what="sequence-training checkpoint")["model"])
    save_model(model, dest, extra=extra)


def select_seq_epoch(ce_dir: str | Path, out_dir: str | Path, graph_dir: str | Path, dev_dir: str | Path,
                     nj: int = 1, mode: str = "phone", mbr: bool = False,
                     log: Callable[[str], None] = print, beam: float | None = None,
                     lattice_beam: float | None = None) -> dict:
    """Decode ``dev_dir`` with each epoch checkpoint of ``out_dir/ckpt`` (candidates under
    ``out_dir/select/epochN``) and write the one with the fewest dev errors (CE model of
    ``ce_dir`` = epoch 0, scored by ``ce_dir/decode_dev``) as ``out_dir/final.pt`` plus
    ``out_dir/selection.json``, and the chosen candidate's dev decoding as ``out_dir/decode_dev``
    (``selection.json`` ``decode_dev`` names its source). ``mbr``: decode as ``asr dnn decode`` does (its default: Viterbi
    best paths), which must be how ``ce_dir/decode_dev`` was made, as must ``beam`` and
    ``lattice_beam`` (None: ``DecodeConfig``'s defaults). Returns the selection record."""
    from asr.nnet.stages import run_decode

    ce_dir, out = Path(ce_dir), Path(out_dir)
    err0, ref0 = read_scoring_errors(ce_dir / "decode_dev")
    cands = [{"epoch": 0, "dev_errors": err0, "dev_ref": ref0, "model": str(ce_dir / "final.pt")}]   # its weights
    ckpts = sorted((out / "ckpt").glob("epoch*.pt"))
    if not ckpts:
        raise FileNotFoundError(f"no epoch checkpoint under {out / 'ckpt'}: train first")
    final_extra = load_data(out / "final.pt", what="HybridDNN checkpoint").get("extra", {})
    for ck_path in ckpts:
        epoch = int(ck_path.stem[len("epoch"):])
        cand = out / "select" / f"epoch{epoch}"
        cand.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1(ck_path.read_bytes()).hexdigest()
        source = cand / "checkpoint.sha1"
        if not (source.is_file() and source.read_text().strip() == digest):   # new or stale candidate
            (cand / "decode_dev" / "scoring").unlink(missing_ok=True)
        if not (cand / "decode_dev" / "scoring").is_file():
            _save_epoch_model(ce_dir, ck_path, cand / "final.pt", {**final_extra, "epoch": epoch})
            run_decode(cand, graph_dir, dev_dir, cand / "decode_dev", nj=nj, mode=mode, mbr=mbr, beam=beam,
                       lattice_beam=lattice_beam)
            write_text_atomic(source, digest + "\n")
        e, r = read_scoring_errors(cand / "decode_dev")
        if r != ref0:
            raise ValueError(f"{cand / 'decode_dev'} scored {r} reference tokens, the CE model's "
                             f"{ce_dir / 'decode_dev'} {ref0}: not the same dev set")
        cands.append({"epoch": epoch, "dev_errors": e, "dev_ref": r, "model": str(ck_path)})
        log(f"epoch {epoch}: dev errors {e} / {r} (CE model {err0})")
        (cand / "final.pt").unlink(missing_ok=True)     # ~ the network's size each; the chosen one is kept below
    best = min(cands, key=lambda c: (c["dev_errors"], c["epoch"]))
    if best["epoch"] == 0:
        copy_file_atomic(ce_dir / "final.pt", out / "final.pt")
        log(f"no epoch beat the CE model on dev ({err0} errors): the stage keeps {ce_dir}'s model "
            f"(selection.json says so)")
    else:
        _save_epoch_model(ce_dir, Path(best["model"]), out / "final.pt", {**final_extra, "epoch": best["epoch"]})
        log(f"chosen on dev: epoch {best['epoch']}: {best['dev_errors']} errors (CE model {err0})")
    # the chosen candidate's dev decoding is the stage's (same network, graph and settings, which
    # the CE model's own decoding must share too): the recipe reuses it instead of decoding again
    chosen_dev = ce_dir / "decode_dev" if best["epoch"] == 0 else out / "select" / f"epoch{best['epoch']}" / "decode_dev"
    adopt_decoding(chosen_dev, out / "decode_dev")
    rec = {"candidates": cands, "chosen": best, "improved_on_dev": best["epoch"] > 0,
           "decode_dev": str(chosen_dev)}
    write_text_atomic(out / "selection.json", json.dumps(rec, indent=1) + "\n")
    return rec
