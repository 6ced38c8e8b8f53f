"""Sequence-discriminative training (issue 6): MPE / sMBR / MMI / boosted MMI over a lattice-free
denominator graph (the ε-removed phone-bigram HCLG), batched forward-backward in torch.

```python
from asr.seqtrain import (DenGraph, forward_backward, sequence_objective, den_graph_from_fst,
                          pdf_loop_graph, SeqTrainConfig, train_sequence)
```
"""
from asr.seqtrain.fb import DenGraph, FBResult, SeqObjective, arc_accuracy, forward_backward, sequence_objective
from asr.seqtrain.graph import den_graph_from_fst, pdf_loop_graph, remove_epsilons, trim
from asr.seqtrain.train import SeqTrainConfig, train_sequence

__all__ = ["DenGraph", "FBResult", "SeqObjective", "arc_accuracy", "forward_backward", "sequence_objective",
           "den_graph_from_fst", "pdf_loop_graph", "remove_epsilons", "trim", "SeqTrainConfig", "train_sequence"]
