"""DDP: a 2-process gloo group trains the same weights as one process with the same global batch."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from asr.nnet import (CETrainConfig, HybridDNN, NetConfig, build_frame_data, load_model, pdf_log_priors,
                      split_cv_speakers, train_ce)
from asr.nnet.synthetic import synth_corpus


def _setup(seed=0, hidden=(32,), init_seed=None):
    feats, alis = synth_corpus(40, 6, 4, seed=seed)
    u2s = {u: u.split("_")[0] for u in feats}
    tr, cv = split_cv_speakers(u2s, 0.2, seed=seed)
    train = build_frame_data(feats, alis, 2, 2, num_pdfs=6, utts=tr)
    cvd = build_frame_data(feats, alis, 2, 2, num_pdfs=6, utts=cv)
    torch.manual_seed(seed if init_seed is None else init_seed)
    model = HybridDNN(NetConfig(input_dim=4, num_pdfs=6, hidden=hidden, left=2, right=2))
    model.set_normalisation(*train.spliced_moments())
    model.log_priors.copy_(pdf_log_priors(train.targets, 6))
    return model, train, cvd


CFG = CETrainConfig(lr=0.3, batch_size=64, max_epochs=2, seed=3, start_halving_gain=-1.0)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, train, cv = _setup(seed=2)
        train_ce(model, train, cv, CFG, out_dir, log=lambda s: None)
    finally:
        dist.destroy_process_group()


def test_ddp_two_process_gloo_equals_single_process(tmp_path):
    single, train, cv = _setup(seed=2)
    train_ce(single, train, cv, CFG, tmp_path / "single", log=lambda s: None)
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ddp")), nprocs=2, join=True)
    ddp = load_model(tmp_path / "ddp")
    for (k, a), b in zip(single.state_dict().items(), ddp.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=k)
    # and it really trained (weights moved from the common init)
    init, _, _ = _setup(seed=2)
    assert not torch.allclose(init.body[0].weight, ddp.body[0].weight)
