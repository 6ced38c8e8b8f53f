"""Figures and measured figures for the handwritten-digit demos (``recipes/digits/run.sh``).

Each sub-command reads a model directory written by ``asr gen train`` and writes PNGs into
``OUT/figures/`` and its measured figures into ``OUT/metrics/<name>.json``; ``summary``
collects them into ``OUT/summary.md``::

    python -m asr.generative.demos.digits classifier --out OUT
    python -m asr.generative.demos.digits rbm   --model OUT/rbm2  --out OUT
    python -m asr.generative.demos.digits dbn   --model OUT/dbn   --out OUT
    python -m asr.generative.demos.digits gan   --model OUT/gan   --out OUT [--name dcgan]
    python -m asr.generative.demos.digits cgan  --model OUT/cgan  --out OUT
    python -m asr.generative.demos.digits speech --model OUT/dcgan_speech --data DATA_DIR --out OUT
    python -m asr.generative.demos.digits summary --out OUT

Held-out real digits are the ``--test-fraction 0.2`` split (seed 0) that ``asr gen train``
also holds out; the reference classifier is trained on the other 80 %.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import torch

from asr.generative.checkpoint import load_checkpoint
from asr.generative.data import ImageData, load_digits16, load_speech_patches
from asr.generative.dbn import DBN
from asr.generative.gan import GAN
from asr.generative.latent import group_arithmetic, lerp, slerp
from asr.generative.metrics import (DigitClassifier, frechet_distance, parzen_log_likelihood,
                                    select_parzen_sigma)
from asr.generative.plots import save_curves, save_grid
from asr.generative.rbm import RBM
from asr.generative.runner import TrainOptions, prepare_data

N_EVAL = 500  # samples per model for the quantitative scores


def _atomic_json(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)


def _split(seed: int = 0) -> tuple[ImageData, ImageData]:
    return load_digits16().split(0.2, seed)


def _classifier(out: Path) -> DigitClassifier:
    path = out / "classifier.pkl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run the 'classifier' stage first")
    with open(path, "rb") as f:
        return pickle.load(f)


def stage_classifier(out: Path) -> dict[str, Any]:
    """Train the reference classifier on real training digits; score real held-out digits."""
    train, test = _split()
    t = time.process_time()
    clf = DigitClassifier.fit(train.images, train.labels)
    tmp = out / "classifier.pkl.tmp"
    out.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
        pickle.dump(clf, f)
    os.replace(tmp, out / "classifier.pkl")
    # reference scores: real training digits vs held-out digits
    ref, valid = train.images[:-200], train.images[-200:]
    sigma = select_parzen_sigma(ref, valid)
    m = {"test_accuracy": clf.accuracy(test.images, test.labels),
         "fd_real": frechet_distance(clf.features(ref[:N_EVAL]), clf.features(test.images)),
         "parzen_sigma_real": sigma,
         "parzen_real": parzen_log_likelihood(ref, test.images, sigma).mean().item(),
         "n_train": int(train.images.shape[0]), "n_test": int(test.images.shape[0]),
         "cpu_seconds": time.process_time() - t}
    save_grid(test.images[:80], out / "figures" / "real_digits.png", nrow=10,
              title="held-out real digits")
    return m


def _scores(samples: torch.Tensor, clf: DigitClassifier) -> dict[str, float]:
    """Fréchet distance (classifier features) and Parzen log-likelihood of held-out digits."""
    train, test = _split()
    valid = train.images[-200:]
    sigma = select_parzen_sigma(samples, valid)
    return {"fd": frechet_distance(clf.features(samples), clf.features(test.images)),
            "parzen": parzen_log_likelihood(samples, test.images, sigma).mean().item(),
            "parzen_sigma": sigma}


def stage_rbm(model_dir: Path, out: Path) -> dict[str, Any]:
    """RBM filters, reconstructions of originals and occluded inputs, AIS curve."""
    rbm, meta = load_checkpoint(model_dir, expect=RBM)
    assert isinstance(rbm, RBM)
    h, w = meta["image_shape"]
    opts = TrainOptions(**meta["options"])
    _, test = prepare_data(load_digits16(), opts)
    fig = out / "figures"
    save_grid(rbm.W.detach().t().reshape(-1, h, w), fig / "rbm_filters.png", nrow=10,
              normalize_each=True, title=f"RBM filters ({rbm.n_hidden} hidden units, digit "
                                         f"{opts.digit})")
    x = test.images[:10].flatten(1)
    rec = rbm.visible_mean(rbm.hidden_probs(x))
    occ_mask = torch.zeros(h, w, dtype=torch.bool)
    occ_mask[:, w // 2:] = True  # right half hidden
    occ_mask = occ_mask.flatten()
    v = x.clone()
    v[:, occ_mask] = 0.0
    occluded = v.clone()
    for _ in range(30):  # mean-field completion with the visible half clamped
        v_new = rbm.visible_mean(rbm.hidden_probs(v))
        v[:, occ_mask] = v_new[:, occ_mask]
    rows = torch.cat([x, rec, occluded, v]).view(-1, h, w)
    save_grid(rows, fig / "rbm_reconstructions.png", nrow=10,
              row_labels=["original", "reconstr.", "occluded", "completed"],
              title="RBM: held-out originals, reconstructions, occluded inputs and completions")
    ais = meta["ais"]
    save_curves({"held-out log-lik (AIS)": [a["heldout_ll"] for a in ais]},
                fig / "rbm_ais_curve.png", title="RBM held-out log-likelihood (AIS)",
                xlabel=f"evaluation (epochs {[a['epoch'] for a in ais]})", ylabel="nats / image")
    hist = meta["history"]
    save_curves({"reconstruction MSE": [m["recon_error"] for m in hist]},
                fig / "rbm_curve.png", title="RBM training (CD-1)")
    occ_err = ((v - x)[:, occ_mask] ** 2).mean().item()
    base_err = ((x[:, occ_mask] - test.images.flatten(1)[:, occ_mask].mean(0)) ** 2).mean().item()
    return {"ais_ll_before": ais[0]["heldout_ll"], "ais_ll_after": ais[-1]["heldout_ll"],
            "ais_ll_after_band": [ais[-1]["heldout_ll_low"], ais[-1]["heldout_ll_high"]],
            "recon_mse": ((rec - x) ** 2).mean().item(), "completion_mse": occ_err,
            "mean_image_mse": base_err, "train_cpu_seconds": meta["cpu_seconds"],
            "n_train": meta["n_train"]}


def stage_dbn(model_dir: Path, out: Path) -> dict[str, Any]:
    """DBN samples, scores, and an SVM on DBN features vs raw pixels."""
    from sklearn.svm import SVC
    dbn, meta = load_checkpoint(model_dir, expect=DBN)
    assert isinstance(dbn, DBN)
    h, w = meta["image_shape"]
    g = torch.Generator().manual_seed(1)
    s = dbn.generate(N_EVAL, 1000, g).view(-1, h, w).clamp(0, 1)
    save_grid(s[:64], out / "figures" / "dbn_samples.png", nrow=8,
              title="DBN samples (1000 Gibbs sweeps in the top RBM, then top-down)")
    m = _scores(s, _classifier(out))
    train, test = _split()
    svm_f = SVC().fit(dbn.features(train.images.flatten(1)).numpy(), train.labels.numpy())
    svm_p = SVC().fit(train.images.flatten(1).numpy(), train.labels.numpy())
    m["svm_dbn_features_acc"] = float(
        (svm_f.predict(dbn.features(test.images.flatten(1)).numpy()) == test.labels.numpy()).mean())
    m["svm_pixels_acc"] = float(
        (svm_p.predict(test.images.flatten(1).numpy()) == test.labels.numpy()).mean())
    m["train_cpu_seconds"] = meta["cpu_seconds"]
    hist = meta["history"]
    save_curves({f"layer {i + 1}": [e["recon_error"] for e in layer] for i, layer in enumerate(hist)},
                out / "figures" / "dbn_curve.png", title="DBN greedy pretraining",
                ylabel="reconstruction MSE")
    return m


def _strips(gan: GAN, g: torch.Generator, labels: torch.Tensor | None, n_pairs: int = 4,
            steps: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    z = gan.sample_latent(2 * n_pairs, g)
    lin = torch.cat([lerp(z[2 * i], z[2 * i + 1], steps) for i in range(n_pairs)])
    sph = torch.cat([slerp(z[2 * i], z[2 * i + 1], steps) for i in range(n_pairs)])
    gan.eval()
    with torch.no_grad():
        lab = None if labels is None else labels.repeat_interleave(steps)
        return gan.generate(lin, lab), gan.generate(sph, lab)


def stage_gan(model_dir: Path, out: Path, name: str = "gan") -> dict[str, Any]:
    """Unconditional GAN / DCGAN: samples, scores, interpolation strips, training curves."""
    gan, meta = load_checkpoint(model_dir, expect=GAN)
    assert isinstance(gan, GAN)
    g = torch.Generator().manual_seed(1)
    s = gan.sample(N_EVAL, None, g)
    fig = out / "figures"
    save_grid(s[:64], fig / f"{name}_samples.png", nrow=8, title=f"{name} samples")
    m = _scores(s, _classifier(out))
    lin, sph = _strips(gan, g, None)
    save_grid(lin, fig / f"{name}_lerp.png", nrow=10, title=f"{name}: linear interpolation")
    save_grid(sph, fig / f"{name}_slerp.png", nrow=10, title=f"{name}: spherical interpolation")
    hist = meta["history"]
    save_curves({k: [e[k] for e in hist] for k in ("d_loss", "g_loss", "d_real", "d_fake")},
                fig / f"{name}_curve.png", title=f"{name} training ({meta['train_config']['loss']})")
    m["train_cpu_seconds"] = meta["cpu_seconds"]
    return m


def _ink(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


def stage_cgan(model_dir: Path, out: Path) -> dict[str, Any]:
    """cGAN: one row per digit, class accuracy, interpolation, latent vs pixel arithmetic."""
    gan, meta = load_checkpoint(model_dir, expect=GAN)
    assert isinstance(gan, GAN) and gan.n_classes == 10
    clf = _classifier(out)
    g = torch.Generator().manual_seed(1)
    fig = out / "figures"
    labels = torch.arange(10).repeat_interleave(N_EVAL // 10)
    s = gan.sample(labels.numel(), labels, g)
    pred = clf.predict(s)
    per_class = [float((pred[labels == d] == d).double().mean()) for d in range(10)]
    grid = torch.cat([gan.sample(10, torch.full((10,), d), g) for d in range(10)])
    save_grid(grid, fig / "cgan_samples.png", nrow=10, row_labels=[str(d) for d in range(10)],
              title="cGAN: one row per requested digit")
    m = {"class_accuracy": float((pred == labels).double().mean()), "per_class_accuracy": per_class,
         **_scores(s, clf), "train_cpu_seconds": meta["cpu_seconds"]}
    # same noise, every class: style is held by z, class by the label
    z = gan.sample_latent(8, g)
    with torch.no_grad():
        gan.eval()
        style = torch.cat([gan.generate(z, torch.full((8,), d)) for d in range(10)])
    save_grid(style.view(10, 8, *gan.image_shape).transpose(0, 1).reshape(-1, *gan.image_shape),
              fig / "cgan_style.png", nrow=10, title="cGAN: fixed z per row, digits 0-9")
    lin, sph = _strips(gan, g, torch.tensor([3, 5, 7, 8]))
    save_grid(torch.cat([lin, sph]), fig / "cgan_interpolation.png", nrow=10,
              row_labels=["lerp 3", "lerp 5", "lerp 7", "lerp 8",
                          "slerp 3", "slerp 5", "slerp 7", "slerp 8"],
              title="cGAN interpolation between two codes (linear, then spherical)")
    # "thick 7 - thin 7 + thin 1": groups chosen by ink among 2000 samples per class
    zz = gan.sample_latent(2000, g)
    with torch.no_grad():
        x7, x1 = gan.generate(zz, 7), gan.generate(zz, 1)
    q = 200
    o7, o1 = _ink(x7).argsort(), _ink(x1).argsort()
    thick7, thin7, thin1 = o7[-q:], o7[:q], o1[:q]
    z_res = group_arithmetic(zz[thick7], zz[thin7], zz[thin1])
    with torch.no_grad():
        means = [gan.generate(zz[i].mean(0, keepdim=True), lab)
                 for i, lab in ((thick7, 7), (thin7, 7), (thin1, 1))]
        latent_res = gan.generate(z_res[None], 1)
    pix_res = group_arithmetic(x7[thick7], x7[thin7], x1[thin1]).clamp(0, 1)[None]
    pix_means = [x7[thick7].mean(0, keepdim=True), x7[thin7].mean(0, keepdim=True),
                 x1[thin1].mean(0, keepdim=True)]
    save_grid(torch.cat([*means, latent_res, *pix_means, pix_res]),
              fig / "cgan_arithmetic.png", nrow=4,
              row_labels=["latent", "pixel"],
              title="thick 7 - thin 7 + thin 1 = ? (latent space vs pixel space)")
    m["arithmetic_ink"] = {"thin1_mean_code": _ink(means[2]).item(),
                           "latent_result": _ink(latent_res).item(),
                           "pixel_result": _ink(pix_res).item()}
    m["arithmetic_result_class"] = int(clf.predict(latent_res)[0])
    hist = meta["history"]
    save_curves({k: [e[k] for e in hist] for k in ("d_loss", "g_loss", "d_real", "d_fake")},
                fig / "cgan_curve.png", title="cGAN training")
    return m


def stage_speech(model_dir: Path, data_dir: Path, out: Path) -> dict[str, Any]:
    """DCGAN on log-mel patches: real vs generated patches."""
    gan, meta = load_checkpoint(model_dir, expect=GAN)
    assert isinstance(gan, GAN)
    opts = meta["options"]
    real = load_speech_patches(data_dir, width=gan.image_shape[1], seed=opts["seed"],
                               max_patches=2000).images
    g = torch.Generator().manual_seed(1)
    fake = gan.sample(32, None, g)
    idx = torch.randperm(real.shape[0], generator=g)[:32]
    # low frequencies at the bottom, as in a spectrogram
    save_grid(torch.cat([real[idx], fake]).flip(1), out / "figures" / "speech_patches.png",
              nrow=8, title="log-mel patches: real (top 4 rows) vs DCGAN (bottom 4 rows)",
              scale=0.5, cmap="magma")
    return {"train_cpu_seconds": meta["cpu_seconds"], "n_train": meta["n_train"],
            "patch_shape": list(gan.image_shape),
            "mean_abs_diff_of_means": (real.mean(0) - gan.sample(500, None, g).mean(0)).abs().mean().item()}


def _fmt(x: Any, nd: int = 2) -> str:
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def stage_summary(out: Path) -> str:
    """Collect ``OUT/metrics/*.json`` into ``OUT/summary.md``; returns the markdown."""
    md = out / "metrics"
    mets = {p.stem: json.loads(p.read_text()) for p in sorted(md.glob("*.json"))}
    L = ["# Generative demos on handwritten digits (16x16, scikit-learn digits)", ""]
    c = mets.get("classifier")
    if c:
        L += [f"Reference classifier (MLP, 128 ReLU units) trained on {c['n_train']} real digits: "
              f"held-out accuracy {100 * c['test_accuracy']:.1f} % on {c['n_test']} digits.", ""]
    L += ["## Sample quality (held-out real digits as reference)", "",
          "| model | Fréchet distance (classifier features) ↓ | Parzen log-lik. (nats) ↑ | train CPU s |",
          "|---|---|---|---|"]
    if c:
        L.append(f"| real training digits | {_fmt(c['fd_real'])} | {_fmt(c['parzen_real'], 1)} | - |")
    for k, label in (("dbn", "DBN"), ("gan", "GAN (MLP)"), ("cgan", "cGAN (MLP)"), ("dcgan", "DCGAN")):
        if k in mets:
            m = mets[k]
            L.append(f"| {label} | {_fmt(m['fd'])} | {_fmt(m['parzen'], 1)} | "
                     f"{_fmt(m['train_cpu_seconds'], 1)} |")
    if "cgan" in mets:
        m = mets["cgan"]
        L += ["", f"**cGAN class accuracy**: {100 * m['class_accuracy']:.1f} % of samples asked for "
              f"digit d are classified as d (target >= 80 %); per class: "
              + ", ".join(f"{d}: {100 * a:.0f}%" for d, a in enumerate(m["per_class_accuracy"])),
              "",
              f"Latent arithmetic thick 7 - thin 7 + thin 1: ink {m['arithmetic_ink']['latent_result']:.3f} "
              f"vs {m['arithmetic_ink']['thin1_mean_code']:.3f} for the thin-1 code; classified as "
              f"{m['arithmetic_result_class']}. Pixel-space result ink "
              f"{m['arithmetic_ink']['pixel_result']:.3f} (a blurred overlay)."]
    if "rbm" in mets:
        m = mets["rbm"]
        L += ["", "## RBM (50 hidden units, digit 2 only, CD-1)", "",
              f"- AIS held-out log-likelihood: {m['ais_ll_before']:.1f} nats/image before training, "
              f"{m['ais_ll_after']:.1f} after (±3 s.e. band [{m['ais_ll_after_band'][0]:.1f}, "
              f"{m['ais_ll_after_band'][1]:.1f}])",
              f"- reconstruction MSE {m['recon_mse']:.4f}; occluded right half completed with MSE "
              f"{m['completion_mse']:.4f} (mean-image baseline {m['mean_image_mse']:.4f})",
              f"- training CPU time {m['train_cpu_seconds']:.1f} s ({m['n_train']} images)"]
    if "dbn" in mets:
        m = mets["dbn"]
        L += ["", "## DBN features for an SVM", "",
              f"SVM (RBF) on top-layer DBN features: {100 * m['svm_dbn_features_acc']:.1f} % vs "
              f"{100 * m['svm_pixels_acc']:.1f} % on raw pixels (held-out digits)."]
    if "speech" in mets:
        m = mets["speech"]
        L += ["", "## DCGAN on log-mel patches", "",
              f"{m['n_train']} patches of shape {m['patch_shape']}, training CPU "
              f"{m['train_cpu_seconds']:.1f} s; see figures/speech_patches.png."]
    else:
        L += ["", "DCGAN on log-mel patches: skipped (no --speech DATA_DIR given)."]
    if (out / "pgm" / "pgm_summary.md").is_file():
        L += ["", "Boltzmann machine / MRF / Bayesian-network demos: see pgm/pgm_summary.md."]
    times = out / "times.tsv"
    if times.is_file():
        L += ["", "## CPU time per stage (recipe, seconds)", "", "| stage | CPU s | wall s |", "|---|---|---|"]
        for line in times.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                L.append(f"| {parts[0]} | {parts[1]} | {parts[2]} |")
    L += ["", "Figures: " + ", ".join(sorted(p.name for p in (out / "figures").glob("*.png")))]
    text = "\n".join(L) + "\n"
    tmp = out / "summary.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / "summary.md")
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asr.generative.demos.digits", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("classifier", "rbm", "dbn", "gan", "cgan", "speech", "summary"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", type=Path)
    p.add_argument("--name", help="figure/metrics name (gan stage: gan or dcgan)")
    p.add_argument("--data", type=Path, help="speech stage: data dir with feats.scp")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    try:
        if a.stage == "summary":
            print(stage_summary(a.out))
            return 0
        if a.stage != "classifier" and a.model is None:
            raise ValueError(f"stage {a.stage} needs --model DIR")
        t = time.process_time()
        if a.stage == "classifier":
            m = stage_classifier(a.out)
        elif a.stage == "rbm":
            m = stage_rbm(a.model, a.out)
        elif a.stage == "dbn":
            m = stage_dbn(a.model, a.out)
        elif a.stage == "gan":
            m = stage_gan(a.model, a.out, a.name or "gan")
        elif a.stage == "cgan":
            m = stage_cgan(a.model, a.out)
        else:
            if a.data is None:
                raise ValueError("speech stage needs --data DATA_DIR")
            m = stage_speech(a.model, a.data, a.out)
        m["demo_cpu_seconds"] = time.process_time() - t
        _atomic_json(m, a.out / "metrics" / f"{a.name or a.stage}.json")
        print(json.dumps({k: v for k, v in m.items() if not isinstance(v, (list, dict))}))
    except (ValueError, FileNotFoundError) as e:
        print(f"digits demo {a.stage}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
