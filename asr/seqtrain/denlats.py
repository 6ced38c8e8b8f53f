"""``asr seq lattices``: denominator lattices of the training data from the CE model (Kaldi
``steps/nnet/make_denlats.sh``), segment-expanded for MPE (``asr.seqtrain.lattice``).

The CE network scores every training utterance; the decoder (``LatticeSimpleDecoder`` over the
loop-marked copy of the phone-bigram HCLG, i.e. a weak LM, as the issue and Kaldi use) keeps
every path within ``lattice_beam`` of the best; each lattice is ε-removed and expanded with the
approximate phone accuracies against the reference alignment. Work is split into job files
``lat.<k>.pt`` written atomically, so a killed run resumes with the jobs not yet written;
a different configuration starts afresh.
"""
from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from asr.jobs.atomic import write_json_atomic
from asr.jobs.safeio import load_data, save_data
from asr.nnet.stages import DNN_ACWT
from asr.seqtrain.lattice import DenLattice, expand_lattice, loop_marked_graph

LOOP_FST = "HCLG.loops.fst"
GMM_ACWT = 0.1   # Kaldi steps/make_denlats.sh


@dataclass
class DenLatConfig:
    """Decoder settings for denominator lattices (Kaldi make_denlats.sh: beam 13; lattice beam 6
    here, 7 there, to bound memory on small machines; Kaldi's TIMIT DNN recipe passes beam 18 and
    lattice beam 10, which on the default corpus gave 3.1x the arcs and no dev gain for MPE).

    acwt: acoustic scale of the search; None = by model kind, as Kaldi's TIMIT recipe: 0.2 for a
    hybrid DNN (``local/nnet/run_dnn.sh`` passes ``--acwt 0.2`` to make_denlats.sh), 0.1 for a GMM
    system (``steps/make_denlats.sh``). The lattice beam is in scaled units, so at 0.2 a DNN's
    lattices hold the paths within ``lattice_beam / 0.2`` nats of unscaled acoustic cost."""

    acwt: float | None = None
    beam: float = 13.0
    lattice_beam: float = 6.0
    utts_per_job: int = 100
    segments: bool = True       # segment expansion (arc-level MPE); False: frame criteria / MMI only


def phone_classes(num_phones: int) -> Tensor:
    """Phone id -> scoring class (the TIMIT 48 -> 39 folding when the phone set is TIMIT's 48,
    identity otherwise); index 0 (no phone) is class 0."""
    from asr.lang.phones import load_phone_map, load_phone_set

    phones = load_phone_set()
    if len(phones) != num_phones:
        return torch.arange(num_phones + 1)
    fold = load_phone_map().fold48to39
    names = sorted(set(fold[p] for p in phones))
    return torch.tensor([0] + [1 + names.index(fold[p]) for p in phones])


def _job(args: tuple) -> dict:
    """Lattices of one job's utterances -> ``lat.<k>.pt``; returns counts and failures."""
    (k, utts, scorer, graph_dir, loop_fst, num_pdfs, alis, pdf2phone, pdf2state, classes, cfg, out) = args
    from asr.decode.decoder import DecodeConfig, Graph, lattice_one
    from asr.decode.lattice import lattice_to_arrays

    graph = Graph(graph_dir, fst=loop_fst, num_pdfs=2 * num_pdfs)
    dcfg = DecodeConfig(acwt=cfg.acwt, beam=cfg.beam, lattice_beam=cfg.lattice_beam)
    lats: dict[str, dict] = {}
    failed: dict[str, str] = {}
    raw_arcs = 0
    for utt, ll in scorer(utts):
        ref = alis[utt]
        if ref.numel() != ll.shape[0]:
            failed[utt] = f"alignment has {ref.numel()} frames, features {ll.shape[0]}"
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lat = lattice_one(graph, utt, torch.cat([ll, ll], 1), dcfg)
        if lat is None:
            failed[utt] = "decoding found no path"
            continue
        try:
            la = lattice_to_arrays(lat)
            raw_arcs += la.src.numel()
            lats[utt] = expand_lattice(la, num_pdfs, pdf2phone, pdf2state, ref, classes,
                                       segments=cfg.segments).to_dict()
        except ValueError as e:
            failed[utt] = str(e)
    save_data(lats, Path(out) / f"lat.{k}.pt")
    return {"job": k, "utts": len(lats), "failed": failed, "raw_arcs": raw_arcs,
            "arcs": sum(int(d["src"].numel()) for d in lats.values()),
            "frames": sum(int(d["num_frames"]) for d in lats.values())}


def make_den_lattices(model_dir: str | Path, graph_dir: str | Path, data_dir: str | Path, ali_dir: str | Path,
                      out_dir: str | Path, cfg: DenLatConfig = DenLatConfig(), nj: int = 1,
                      log: Callable[[str], None] = print) -> dict:
    """Write ``out_dir/lat.<k>.pt`` (utt -> ``DenLattice`` fields) for every utterance of
    ``data_dir`` with an alignment in ``ali_dir`` (a GMM exp dir: ``ali_pdf.ark`` + tree), and
    ``out_dir/stats.json``. Resumes finished jobs of an identical earlier run.

    ``model_dir``: a hybrid DNN (``asr dnn train``) scoring ``data_dir``'s features, or a GMM
    system (``asr gmm ...``) scoring ``data_dir``'s MFCCs through its pipeline, with the training
    speakers' fMLLR transforms of ``model_dir/trans.pt`` when it is a SAT system."""
    import functools

    from asr.datadir.table import read_table
    from asr.gmm.system import load_system
    from asr.jobs.executor import map_jobs
    from asr.nnet.io import read_alignments

    out = Path(out_dir)
    model_path = Path(model_dir) / "final.pt" if Path(model_dir).is_dir() else Path(model_dir)
    is_gmm = "gmm" in load_data(model_path, what="model")
    if cfg.acwt is None:
        cfg = replace(cfg, acwt=GMM_ACWT if is_gmm else DNN_ACWT)
    if is_gmm:
        from asr.gmm.decode import gmm_loglike_job

        gsys = load_system(model_path.parent)
        num_pdfs = gsys.num_pdfs
        fm = model_path.parent / "trans.pt"
        scorer = functools.partial(gmm_loglike_job, model_dir=str(model_path.parent), data_dir=str(data_dir),
                                   fmllr_path=str(fm) if fm.is_file() else None)
    else:
        from asr.nnet.io import loglike_job
        from asr.nnet.model import load_model

        num_pdfs = load_model(model_path).cfg.num_pdfs
        scorer = functools.partial(loglike_job, str(model_path), str(data_dir))
    from asr.nnet.stages import gmm_system_dir

    sys_ = load_system(gmm_system_dir(ali_dir))   # a GMM exp dir or a DNN realignment of one
    if sys_.num_pdfs != num_pdfs:
        raise ValueError(f"model {model_path} has {num_pdfs} pdfs, the tree of {ali_dir} {sys_.num_pdfs}")
    meta_json = Path(graph_dir) / "graph.json"
    if meta_json.is_file() and json.loads(meta_json.read_text()).get("num_pdfs", num_pdfs) != num_pdfs:
        raise ValueError(f"graph {graph_dir} was built for another tree than the model {model_path}")
    alis = read_alignments(Path(ali_dir) / "ali_pdf.ark")
    scp = Path(data_dir) / "feats.scp"
    if not scp.is_file():
        raise FileNotFoundError(f"{scp} not found")
    utts = sorted(u for u in read_table(scp, what="utterance", min_columns=2) if u in alis)
    if not utts:
        raise ValueError(f"no utterance of {data_dir} has an alignment in {ali_dir}")
    hclg = Path(graph_dir) / "HCLG.fst"
    # at most utts_per_job per job, but at least nj jobs, so a small set keeps every worker busy
    job_size = max(1, min(cfg.utts_per_job, -(-len(utts) // max(nj, 1))))
    meta = {"model": str(model_path.resolve()), "model_mtime": model_path.stat().st_mtime,
            "graph": str(hclg.resolve()), "graph_mtime": hclg.stat().st_mtime, "data": str(Path(data_dir).resolve()),
            "ali": str((Path(ali_dir) / "ali_pdf.ark").resolve()), "config": asdict(cfg), "utts": len(utts),
            "job_size": job_size}
    if (out / "meta.json").is_file() and json.loads((out / "meta.json").read_text()) != meta:
        log(f"{out}: made with other settings; starting afresh")
        for f in [*out.glob("lat.*.pt"), out / "stats.json", out / LOOP_FST]:
            f.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "meta.json", meta, indent=1)
    loop_fst = out / LOOP_FST
    if not loop_fst.is_file():
        loop_marked_graph(hclg, loop_fst, num_pdfs)
    classes = phone_classes(sys_.ctx.num_phones)
    chunks = [utts[i:i + job_size] for i in range(0, len(utts), job_size)]
    jobs = [(k, c, scorer, str(graph_dir), str(loop_fst), num_pdfs,
             {u: alis[u] for u in c}, sys_.ctx.pdf2phone, sys_.ctx.pdf2state, classes, cfg, str(out))
            for k, c in enumerate(chunks) if not (out / f"lat.{k}.pt").is_file()]
    if len(jobs) < len(chunks):
        log(f"{len(chunks) - len(jobs)} of {len(chunks)} lattice jobs already done; resuming")
    t0 = time.time()
    res = map_jobs(_job, jobs, nj=nj, desc="denominator lattices", log_dir=out / "log", task="lattices",
                   job_ids=[j[0] for j in jobs])
    secs = time.time() - t0
    prev = json.loads((out / "stats.json").read_text()) if (out / "stats.json").is_file() else {"jobs": []}
    done = {r["job"]: r for r in prev["jobs"]} | {r["job"]: r for r in res}
    failed = {u: why for r in done.values() for u, why in r["failed"].items()}
    n_ok = sum(r["utts"] for r in done.values())
    frames = sum(r["frames"] for r in done.values())
    stats = {"jobs": sorted(done.values(), key=lambda r: r["job"]), "utterances": n_ok, "failed": len(failed),
             "frames": frames, "raw_arcs_per_frame": sum(r["raw_arcs"] for r in done.values()) / max(frames, 1),
             "arcs_per_frame": sum(r["arcs"] for r in done.values()) / max(frames, 1),
             "seconds_this_run": secs}
    write_json_atomic(out / "stats.json", stats, indent=1)
    if failed:
        log(f"no denominator lattice for {len(failed)} utterance(s) (skipped in training): "
            + "; ".join(f"{u}: {w}" for u, w in list(failed.items())[:5]))
    log(f"denominator lattices: {n_ok} utterances, {stats['raw_arcs_per_frame']:.1f} arcs/frame "
        f"({stats['arcs_per_frame']:.1f} after segment expansion), {secs:.1f} s")
    return stats


def load_den_lattices(lat_dir: str | Path) -> dict[str, DenLattice]:
    """All lattices of a ``make_den_lattices`` output dir (missing dir/jobs: a clear error)."""
    d = Path(lat_dir)
    if not (d / "meta.json").is_file():
        raise FileNotFoundError(f"{d} holds no denominator lattices (run `asr seq lattices` first)")
    meta = json.loads((d / "meta.json").read_text())
    n_jobs = -(-meta["utts"] // meta.get("job_size", meta["config"]["utts_per_job"]))
    missing = [k for k in range(n_jobs) if not (d / f"lat.{k}.pt").is_file()]
    if missing:
        raise FileNotFoundError(f"{d}: lattice jobs {missing[:5]} missing (an interrupted `asr seq lattices`?)")
    out: dict[str, DenLattice] = {}
    for k in range(n_jobs):
        for u, f in load_data(d / f"lat.{k}.pt", what="lattice job").items():
            out[u] = DenLattice(**f)
    return out
