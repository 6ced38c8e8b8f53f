"""Hybrid DBN-DNN-HMM acoustic model (issue 5), as Kaldi nnet1: frame data, model, CE training with
newbob, DBN pretraining.

```python
from asr.nnet import (FrameData, build_frame_data, splice_index, splice, split_cv_speakers,
                      pdf_log_priors, NetConfig, HybridDNN, init_kaldi_proto, save_model, load_model,
                      CETrainConfig, train_ce, CETrainingError, frame_accuracy)
```
"""
from asr.nnet.frames import (DISABLED_LOG_PRIOR, FrameData, build_frame_data, pdf_log_priors, splice,
                             splice_index, split_cv_speakers)
from asr.nnet.model import HybridDNN, NetConfig, init_kaldi_proto, load_model, make_mlp, save_model
from asr.nnet.train import (CEResult, CETrainConfig, CETrainingError, frame_accuracy, newbob_update,
                            resolve_device, train_ce)

__all__ = ["FrameData", "build_frame_data", "pdf_log_priors", "DISABLED_LOG_PRIOR", "splice", "splice_index",
           "split_cv_speakers", "HybridDNN", "NetConfig", "init_kaldi_proto", "load_model", "make_mlp",
           "save_model", "CEResult", "CETrainConfig", "CETrainingError", "frame_accuracy", "newbob_update",
           "resolve_device", "train_ce"]
