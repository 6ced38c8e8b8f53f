"""``asr seq train`` stage: CE model dir + fbank data + GMM alignments + phone graph -> sequence-trained model dir."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from asr.jobs.atomic import write_json_atomic
from asr.jobs.safeio import load_data, save_data
from asr.jobs.stage import describe_ids, write_counts
from asr.nnet.frames import build_frame_data, split_cv_speakers
from asr.nnet.io import load_features
from asr.nnet.model import load_model
from asr.nnet.stages import add_extra_training_data, load_targets, read_utt2spk
from asr.seqtrain.fb import DenGraph
from asr.seqtrain.graph import den_graph_from_fst
from asr.seqtrain.pdfhmm import PdfHmmDen
from asr.seqtrain.train import SeqTrainConfig, check_config, train_sequence


def load_den_graph(graph_dir: str | Path, cache: Path | None = None, log: Callable[[str], None] = print) -> DenGraph:
    """The ε-removed denominator graph of ``graph_dir/HCLG.fst`` (cached as a torch file)."""
    fst = Path(graph_dir) / "HCLG.fst" if Path(graph_dir).is_dir() else Path(graph_dir)
    if cache is not None and cache.is_file():
        d = load_data(cache, what="denominator graph cache")
        if d.get("source") == str(fst.resolve()) and d.get("mtime") == fst.stat().st_mtime:
            return DenGraph(**d["graph"])
    t0 = time.time()
    g = den_graph_from_fst(fst)
    log(f"denominator graph from {fst}: {g.num_states} states, {g.num_arcs} arcs ({time.time() - t0:.1f} s)")
    if cache is not None:
        save_data({"source": str(fst.resolve()), "mtime": fst.stat().st_mtime, "graph": dict(g.__dict__)}, cache)
    return g


def _check_graph_pdfs(graph_dir: str | Path, model_dir: str | Path) -> None:
    """The decoding graph the sequence-trained model will be used with must have its pdf count."""
    meta = Path(graph_dir) / "graph.json"
    if not (Path(graph_dir) / "HCLG.fst").is_file():
        raise FileNotFoundError(f"{graph_dir}/HCLG.fst not found")
    if meta.is_file():
        n = json.loads(meta.read_text()).get("num_pdfs")
        m = load_model(model_dir).cfg.num_pdfs
        if n is not None and n != m:
            raise ValueError(f"graph {graph_dir} has {n} pdfs but the model {model_dir} has {m}")


def run_seq_train(model_dir: str | Path, data_dir: str | Path, ali: str | Path, graph_dir: str | Path | None,
                  out_dir: str | Path, cfg: SeqTrainConfig, device: torch.device | str = "cpu",
                  log: Callable[[str], None] = print, den: str = "pdf-bigram",
                  lattice_dir: str | Path | None = None,
                  extra: list[tuple[str | Path, str | Path, str | Path | None]] | None = None) -> list[dict]:
    """Sequence-train the CE model of ``model_dir`` (same CV speakers as its CE run) on the pdf
    alignments of ``ali``. Denominator ``den``: ``pdf-bigram`` (default; ``PdfHmmDen`` estimated
    from the training alignments, fast) or ``hclg`` (exact over the ε-removed ``graph_dir/HCLG.fst``;
    only practical for small graphs) or ``lattice`` (per-utterance lattices of ``lattice_dir``
    from ``asr seq lattices``; the only one for arc-level ``mpe``). With ``pdf-bigram`` /
    ``lattice`` a given ``graph_dir`` is only checked (its pdf count must match the model, which
    will be decoded with it).

    ``extra``: ``(data dir, alignment dir, lattice dir)`` of speed-perturbed copies of the training
    data (``asr data perturb``; the lattice dir with ``den == "lattice"`` only) that join the
    training side, as in CE training (``add_extra_training_data``: copies of CV utterances left out)."""
    if den not in ("pdf-bigram", "hclg", "lattice"):
        raise ValueError(f"unknown denominator {den!r} (pdf-bigram|hclg|lattice)")
    if den == "hclg" and graph_dir is None:
        raise ValueError("--den hclg needs --graph DIR")
    if den == "lattice" and lattice_dir is None:
        raise ValueError("--den lattice needs --lattices DIR (from `asr seq lattices`)")
    if cfg.criterion == "mpe" and den != "lattice":
        raise ValueError("arc-level MPE needs --den lattice; the lattice-free frame form is --criterion mpfe")
    if den != "lattice" and lattice_dir is not None:
        raise ValueError(f"--lattices {lattice_dir} is only read with --den lattice (got --den {den})")
    check_config(cfg)
    if den != "hclg" and graph_dir is not None:
        _check_graph_pdfs(graph_dir, model_dir)
    out = Path(out_dir)
    model = load_model(model_dir)
    ce_cfg = {}
    cfg_path = Path(model_dir) / "config.json"
    if cfg_path.is_file():
        ce_cfg = json.loads(cfg_path.read_text()).get("config", {})
    tg = load_targets(ali)
    if tg.num_pdfs != model.cfg.num_pdfs:
        raise ValueError(f"{ali} has {tg.num_pdfs} pdfs but the model {model_dir} has {model.cfg.num_pdfs}")
    if cfg.criterion in ("mpe", "mpfe", "bmmi") and tg.pdf2phone is None:
        raise ValueError(f"criterion {cfg.criterion} needs the pdf->phone map: pass --ali as a GMM exp dir")
    feats = load_features(data_dir)
    utt2spk = {u: s for u, s in read_utt2spk(data_dir).items() if u in feats}
    tr, cv = split_cv_speakers(utt2spk, ce_cfg.get("cv_fraction", 0.1), ce_cfg.get("seed", cfg.seed))
    extra = list(extra or [])
    if any((lat is None) != (den != "lattice") for _, _, lat in extra):
        raise ValueError("extra training data needs a lattice dir with --den lattice, and none otherwise")
    if extra:
        tr = add_extra_training_data(feats, tg.alis, tr, [(d, a) for d, a, _ in extra], tg.num_pdfs, log)
    left, right = model.cfg.left, model.cfg.right
    train = build_frame_data(feats, tg.alis, left, right, tg.num_pdfs, utts=tr)
    cvd = build_frame_data(feats, tg.alis, left, right, tg.num_pdfs, utts=cv)
    skipped = sorted(set(train.skipped) | set(cvd.skipped))
    write_counts(out, {"skipped_utts": skipped})
    if skipped:
        log(f"utterances skipped (no alignment, or one of another length than the features): "
            f"{describe_ids(skipped)}; e.g. {next(iter({**train.skipped, **cvd.skipped}.items()))}")
    phone_class = None
    if den == "lattice":
        from asr.seqtrain.denlats import load_den_lattices, phone_classes

        graph = load_den_lattices(lattice_dir)
        keep = set(tr)
        for _, _, lat in extra:     # the copies' lattices of the training side (not of CV copies)
            graph.update({u: la for u, la in load_den_lattices(lat).items() if u in keep})
        if tg.pdf2phone is not None:
            phone_class = phone_classes(int(tg.pdf2phone.max()))
        lat_ali = json.loads((Path(lattice_dir) / "meta.json").read_text()).get("ali")
        if lat_ali is not None and Path(lat_ali) != Path(tg.source).resolve():
            log(f"warning: the lattices' MPE accuracies were computed against {lat_ali}, training uses {tg.source}")
        log(f"denominator: lattices of {len(graph)} utterances from {lattice_dir}")
    elif den == "hclg":
        graph = load_den_graph(graph_dir, out / "den_graph.pt", log)
    else:
        graph = PdfHmmDen.from_alignments([tg.alis[u] for u in train.utts], tg.num_pdfs)
        log(f"denominator: pdf-bigram HMM from {len(train.utts)} training alignments, {graph.num_arcs} transitions")
    write_json_atomic(out / "config.json", {"model": str(model_dir), "data": str(data_dir), "ali": str(ali),
                               "extra": [[str(p) if p is not None else None for p in e] for e in extra],
                               "graph": str(graph_dir) if graph_dir else None, "den": den, "config": asdict(cfg),
                               "lattices": str(lattice_dir) if lattice_dir else None,
                               "den_graph": ({"lattices": len(graph), "arcs": sum(la.num_arcs for la in graph.values())}
                                             if den == "lattice" else
                                             {"states": graph.num_states, "arcs": graph.num_arcs})}, indent=1)
    return train_sequence(model, train, cvd, graph, cfg, out, pdf2phone=tg.pdf2phone,
                          silence_phones=tg.silence, device=device, log=log, phone_class=phone_class)
