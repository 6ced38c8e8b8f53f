"""Hybrid DBN-DNN-HMM acoustic model (issue 5): frame data, model, CE training, DBN pretraining.

```python
from asr.nnet import (FrameData, build_frame_data, splice_index, splice, split_cv_speakers,
                      pdf_log_priors, NetConfig, HybridDNN, save_model, load_model,
                      CETrainConfig, train_ce, frame_accuracy)
```
"""
from asr.nnet.frames import (FrameData, build_frame_data, pdf_log_priors, splice, splice_index,
                             split_cv_speakers)
from asr.nnet.model import HybridDNN, NetConfig, load_model, make_mlp, save_model
from asr.nnet.train import CEResult, CETrainConfig, frame_accuracy, resolve_device, train_ce

__all__ = ["FrameData", "build_frame_data", "pdf_log_priors", "splice", "splice_index",
           "split_cv_speakers", "HybridDNN", "NetConfig", "load_model", "make_mlp", "save_model",
           "CEResult", "CETrainConfig", "frame_accuracy", "resolve_device", "train_ce"]
