"""DDP: a 2-process gloo group trains the same weights as one process with the same global batch,
and only rank 0 writes files (issue 14 item 7)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from asr.nnet import CETrainConfig, load_model

CE = CETrainConfig(lr=0.3, batch_size=64, max_epochs=2, seed=3, start_halving_impr=-1.0)


def _train(root: Path, out: Path, rank: int) -> None:
    """run_train (with a pdf -> phone map, so that pdf2phone.pt is written) with every file writer
    of the stage recorded in ``root/writes.<rank>``; the patches are undone afterwards."""
    import asr.nnet.stages as st
    import asr.nnet.train as tr
    from asr.nnet.stages import DnnTrainConfig, Targets

    log = root / f"writes.{rank}"

    def spy(fn):
        def wrapped(*a, **k):
            path = next(x for x in a if isinstance(x, (str, Path)))
            with open(log, "a") as f:
                f.write(Path(path).name + "\n")
            return fn(*a, **k)
        return wrapped

    def write_curve(out_dir, *a):
        with open(log, "a") as f:
            f.write("train_curve.json\n")
        return saved[(tr, "_write_curve")](out_dir, *a)

    def targets(ali):
        tg = saved[(st, "load_targets")](ali)
        return Targets(tg.alis, tg.num_pdfs, torch.arange(tg.num_pdfs), [0], tg.source)

    patches = {(st, "_write_json"): spy(st._write_json), (st, "atomic_torch_save"): spy(st.atomic_torch_save),
               (tr, "atomic_torch_save"): spy(tr.atomic_torch_save), (tr, "save_model"): spy(tr.save_model),
               (tr, "_write_curve"): write_curve, (st, "load_targets"): targets}
    saved = {k: getattr(*k) for k in patches}
    for (mod, name), fn in patches.items():
        setattr(mod, name, fn)
    try:
        cfg = DnnTrainConfig(hidden=(16,), left=2, right=2, cv_fraction=0.2, seed=2, ce=CE)
        st.run_train(root / "data", root / "ali.ark", out, cfg, log=lambda s: None)
    finally:
        for (mod, name), fn in saved.items():
            setattr(mod, name, fn)


def _worker(rank: int, world: int, root: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{root}/init", rank=rank, world_size=world)
    try:
        _train(Path(root), Path(root) / "ddp", rank)
    finally:
        dist.destroy_process_group()


def test_ddp_two_process_gloo_equals_single_process_and_only_rank0_writes(tmp_path):
    from test_dnn_cli import make_data

    make_data(tmp_path)
    _train(tmp_path, tmp_path / "single", 0)
    (tmp_path / "writes.0").unlink()
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    single, ddp = load_model(tmp_path / "single"), load_model(tmp_path / "ddp")
    for (k, a), b in zip(single.state_dict().items(), ddp.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=k)
    # and it really trained
    curve = json.loads((tmp_path / "ddp" / "log" / "train_curve.json").read_text())
    assert curve["epochs_run"] == 2 and curve["epochs"][-1]["cv_loss"] < 0.9 * curve["epochs"][0]["cv_loss"]
    written = (tmp_path / "writes.0").read_text().split()
    assert {"config.json", "pdf2phone.pt", "final.pt", "epoch001.pt", "train_curve.json"} <= set(written)
    assert not (tmp_path / "writes.1").exists(), (tmp_path / "writes.1").read_text()
    assert (tmp_path / "ddp" / "pdf2phone.pt").is_file()
