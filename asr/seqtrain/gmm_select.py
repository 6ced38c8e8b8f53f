"""Boosted MMI of the GMM baseline with its settings chosen on the corpus's own dev set.

Kaldi decodes every iteration of ``train_mmi.sh`` and its users pick one; settings that suit one
corpus (the I-smoothing constant τ, the number of EBW iterations) hurt another. Here the choice is
part of the stage: for each τ of a small grid the system is trained (:func:`run_gmm_seq_train`,
every iteration checkpointed), every iteration's model decodes the dev set with the SAT system's
own dev transforms (Kaldi ``--transform-dir``), and the candidate with the fewest dev errors is
kept — the starting system itself (iteration 0) included, so the stage never makes the baseline
worse on dev; ``selection.json`` records every candidate's dev figure and says which won.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from asr.decode.pipeline import adopt_decoding, read_scoring_errors
from asr.jobs.atomic import copy_file_atomic, copy_tree_atomic, write_text_atomic
from asr.jobs.safeio import save_data
from asr.seqtrain.gmm_stage import GmmSeqConfig, run_gmm_seq_train


def select_gmm_seq(model_dir: str | Path, train_dir: str | Path, lattice_dir: str | Path, out_dir: str | Path,
                   lang_dir: str | Path, dev_dir: str | Path, dev_transform_dir: str | Path, taus: tuple[float, ...],
                   cfg: GmmSeqConfig = GmmSeqConfig(), nj: int = 1, log: Callable[[str], None] = print,
                   decode_cfg=None) -> dict:
    """Train one system per τ in ``taus`` into ``out_dir/tau<τ>``, decode dev after every iteration,
    and write the best candidate (fewest dev errors; the input system if none beats it) as the
    system in ``out_dir`` (``final.pt``, ``trans.pt``, ``graph/``) plus ``selection.json``; a trained
    candidate's dev decoding is copied to ``out_dir/decode_dev`` (``selection.json`` ``decode_dev``
    names its source; None when the starting system won).
    ``decode_cfg``: the ``asr.decode.DecodeConfig`` of the dev decodes (None: its defaults), which
    must be the one ``model_dir/decode_dev`` was made with.
    Returns the selection record."""
    from asr.gmm.decode import decode_system
    from asr.gmm.system import load_system
    from asr.jobs.safeio import load_data

    model_dir, out = Path(model_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_dev = model_dir / "decode_dev"
    if not (base_dev / "scoring").is_file():
        raise FileNotFoundError(f"{base_dev}/scoring not found: decode dev with {model_dir} first")
    err, ref = read_scoring_errors(base_dev)
    cands = [{"tau": None, "iter": 0, "dev_errors": err, "dev_ref": ref, "model": str(model_dir)}]
    base = load_system(model_dir).to_dict()
    for tau in taus:
        sub = out / f"tau{tau:g}"
        c = dataclasses.replace(cfg, tau=float(tau))
        run_gmm_seq_train(model_dir, train_dir, lattice_dir, sub, c, log=log)
        for it in range(1, c.iters + 1):
            ck = load_data(sub / f"iter{it:03d}.pt", what="bMMI checkpoint")
            cand = sub / f"it{it}"
            cand.mkdir(exist_ok=True)
            d = dict(base, gmm=ck["gmm"], stage=f"{base['stage']}_{c.criterion}")
            save_data(d, cand / "final.pt")
            for f in ("trans.pt",):
                if (sub / f).is_file() and not (cand / f).is_file():
                    shutil.copyfile(sub / f, cand / f)
            if not (cand / "graph").exists():
                os.symlink((sub / "graph").resolve(), cand / "graph")
            if not (cand / "decode_dev" / "scoring").is_file():
                decode_system(cand, lang_dir, dev_dir, cand / "decode_dev", nj=nj, cfg=decode_cfg,
                              transform_dir=dev_transform_dir)
            e, r = read_scoring_errors(cand / "decode_dev")
            cands.append({"tau": float(tau), "iter": it, "dev_errors": e, "dev_ref": r, "model": str(cand)})
            log(f"tau {tau:g} iteration {it}: dev errors {e} / {r} (starting system {err})")
    best = min(cands, key=lambda x: (x["dev_errors"], x["iter"]))
    src = Path(best["model"])
    d = load_data(src / "final.pt", what="GMM system")
    save_data(d, out / "final.pt")
    if (model_dir / "trans.pt").is_file():
        copy_file_atomic(model_dir / "trans.pt", out / "trans.pt")
    if not (out / "graph" / "HCLG.fst").is_file():
        copy_tree_atomic(model_dir / "graph", out / "graph")
    # a trained candidate's dev decoding (same model, graph, transforms and settings) is the stage's:
    # the recipe reuses it; the starting system's own decoding is its two-pass fMLLR one, not that
    chosen_dev = src / "decode_dev" if best["iter"] > 0 else None
    if chosen_dev is not None:
        adopt_decoding(chosen_dev, out / "decode_dev")
    rec = {"criterion": cfg.criterion, "taus": list(taus), "iters": cfg.iters, "candidates": cands,
           "chosen": best, "improved_on_dev": best["iter"] > 0,
           "decode_dev": None if chosen_dev is None else str(chosen_dev)}
    write_text_atomic(out / "selection.json", json.dumps(rec, indent=1) + "\n")
    if best["iter"] == 0:
        log(f"no {cfg.criterion} candidate beat the starting system on dev ({err} errors): the stage keeps "
            f"{model_dir}'s model (selection.json says so)")
    else:
        log(f"chosen on dev: tau {best['tau']:g}, iteration {best['iter']}: {best['dev_errors']} errors "
            f"(starting system {err})")
    return rec
