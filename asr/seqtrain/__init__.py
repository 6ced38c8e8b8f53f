"""Sequence-discriminative training (issue 6): MPE (Povey & Woodland's approximate phone accuracy,
over denominator lattices), MPFE, sMBR, MMI and boosted MMI, with batched forward-backward in torch.

Denominators: per-utterance lattices decoded by the CE model with the phone-bigram graph
(``asr.seqtrain.denlats``, segment-expanded for arc-level MPE in ``asr.seqtrain.lattice``), or
lattice-free: a pdf-bigram HMM from the alignments or an ε-removed HCLG (``fb``, ``pdfhmm``).
The GMM baseline gets (boosted) MMI by extended Baum-Welch over its own lattices (``ebw``, ``gmm_stage``).

```python
from asr.seqtrain import (PdfHmmDen, DenGraph, DenLattice, forward_backward, sequence_objective, lattice_objective,
                          make_den_lattices, load_den_lattices, SeqTrainConfig, train_sequence)
```
"""
from asr.seqtrain.fb import DenGraph, FBResult, arc_accuracy, forward_backward
from asr.seqtrain.objective import SeqObjective, sequence_objective
from asr.seqtrain.pdfhmm import PdfHmmDen, hmm_forward_backward
from asr.seqtrain.graph import den_graph_from_fst, pdf_loop_graph, remove_epsilons, trim
from asr.seqtrain.lattice import (DenLattice, approx_phone_accuracy, expand_lattice, lattice_forward_backward,
                                  lattice_objective, loop_marked_graph, phone_segments)
from asr.seqtrain.denlats import DenLatConfig, load_den_lattices, make_den_lattices
from asr.seqtrain.train import SeqTrainConfig, train_sequence
from asr.seqtrain.ebw import accumulate_den, ebw_update
from asr.seqtrain.gmm_stage import GmmSeqConfig, run_gmm_seq_train

__all__ = ["DenGraph", "FBResult", "SeqObjective", "arc_accuracy", "forward_backward", "sequence_objective",
           "den_graph_from_fst", "pdf_loop_graph", "remove_epsilons", "trim", "SeqTrainConfig", "train_sequence",
           "PdfHmmDen", "hmm_forward_backward", "DenLattice", "approx_phone_accuracy", "expand_lattice",
           "lattice_forward_backward", "lattice_objective", "loop_marked_graph", "phone_segments",
           "DenLatConfig", "load_den_lattices", "make_den_lattices", "accumulate_den", "ebw_update",
           "GmmSeqConfig", "run_gmm_seq_train"]
