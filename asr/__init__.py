"""asr: a research toolkit for hybrid DNN-HMM speech recognition.

Data flow, one sub-package per step:
corpus -> datadir -> features -> lang -> hmm/gmm/transforms -> generative -> nnet
-> seqtrain -> decode -> score -> report, with ``cli`` as a thin face and ``jobs``
as the one executor for per-utterance work.
"""

__version__ = "0.1.0"
