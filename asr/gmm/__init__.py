"""Diagonal GMMs and the GMM-HMM training stages (Kaldi TIMIT recipe: mono -> tri1 (deltas) ->
tri2 (LDA+MLLT) -> tri3 (SAT/fMLLR)).

- :mod:`asr.gmm.model`: ``DiagGmmSet`` (all pdfs' GMMs in flat tensors; one-matmul likelihoods),
  ``GmmAccs`` (EM statistics), ML update, mixing up.
- :mod:`asr.gmm.pipeline`: ``FeaturePipeline`` (deltas | splice + LDA/MLLT, fMLLR).
- :mod:`asr.gmm.train`: Viterbi EM on tensors, parallel alignment / accumulation jobs.
- :mod:`asr.gmm.adapt`: LDA, MLLT, per-speaker fMLLR and the SAT alignment model.
- :mod:`asr.gmm.system`: ``GmmSystem`` and ``load_system(exp_dir)``, training data, alignment files.
- :mod:`asr.gmm.stages`: ``run_mono`` / ``run_tri1`` / ``run_tri2`` / ``run_tri3`` runners.
- :mod:`asr.gmm.decode`: ``decode_system`` (two-pass for SAT), ``align_system``, ``gmm_loglike_job``.
"""
from asr.gmm.model import DiagGmmSet, GmmAccs, pick_device
from asr.gmm.pipeline import FeaturePipeline

__all__ = ["DiagGmmSet", "GmmAccs", "FeaturePipeline", "pick_device", "GmmSystem", "load_system"]


def __getattr__(name: str):
    # Lazy: the stages pull in asr.hmm / asr.features only when used.
    if name in ("GmmSystem", "load_system"):
        from asr.gmm import system

        return getattr(system, name)
    raise AttributeError(name)
