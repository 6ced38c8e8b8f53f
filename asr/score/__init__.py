"""Scoring: sclite-compatible alignment counts, %WER lines, bootstrap CIs, matched pairs.

``score(ref, hyp)`` aligns every utterance (NIST sclite weights and tie-breaking by default,
Kaldi ``compute-wer`` plain edit distance with ``method="levenshtein"``) and returns a
``ScoreResult`` whose ``wer_line()`` is Kaldi's ``%WER`` line.
"""
from asr.score.align import METHODS, Counts, align_counts, align_counts_batch
from asr.score.io import fold39, read_text, read_utt2spk
from asr.score.result import ScoreResult, foreign_tokens, score
from asr.score.stats import MatchedPairs, bootstrap_ci, matched_pairs

__all__ = [
    "METHODS", "Counts", "align_counts", "align_counts_batch", "fold39", "read_text",
    "read_utt2spk", "ScoreResult", "foreign_tokens", "score", "MatchedPairs", "bootstrap_ci", "matched_pairs",
]
