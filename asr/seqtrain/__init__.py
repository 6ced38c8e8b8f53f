"""Sequence-discriminative training (issue 6): MPE / sMBR / MMI / boosted MMI over a lattice-free
denominator: a pdf-bigram HMM from the alignments (default) or an ε-removed HCLG; batched
forward-backward in torch.

```python
from asr.seqtrain import (PdfHmmDen, DenGraph, forward_backward, sequence_objective, den_graph_from_fst,
                          pdf_loop_graph, SeqTrainConfig, train_sequence)
```
"""
from asr.seqtrain.fb import DenGraph, FBResult, SeqObjective, arc_accuracy, forward_backward, sequence_objective
from asr.seqtrain.pdfhmm import PdfHmmDen, hmm_forward_backward
from asr.seqtrain.graph import den_graph_from_fst, pdf_loop_graph, remove_epsilons, trim
from asr.seqtrain.train import SeqTrainConfig, train_sequence

__all__ = ["DenGraph", "FBResult", "SeqObjective", "arc_accuracy", "forward_backward", "sequence_objective",
           "den_graph_from_fst", "pdf_loop_graph", "remove_epsilons", "trim", "SeqTrainConfig", "train_sequence",
           "PdfHmmDen", "hmm_forward_backward"]
