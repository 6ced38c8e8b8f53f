import time, torch
from asr.generative import RBM, ais_log_z, RBMTrainConfig, train_rbm
rbm = RBM(256, 50)
g = torch.Generator().manual_seed(0)
t=time.process_time(); ais_log_z(rbm, None, 100, 3000, g); print("ais", time.process_time()-t)
x = torch.rand(142, 256)
t=time.process_time(); train_rbm(rbm, x, RBMTrainConfig(epochs=30, batch_size=20), g); print("train", time.process_time()-t)
t=time.process_time(); rbm.sample(64, 1000, g); print("sample", time.process_time()-t)
