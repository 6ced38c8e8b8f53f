import time, torch
torch.set_num_threads(1)
from asr.generative import GAN, GANTrainConfig, train_gan
from asr.generative.data import load_digits16
from asr.generative.metrics import DigitClassifier, frechet_distance
import sys
arch=sys.argv[1]; ncls=int(sys.argv[2]); ep=int(sys.argv[3])
d=load_digits16(); tr,te=d.split(0.2,0)
t=time.process_time(); clf=DigitClassifier.fit(tr.images,tr.labels); print("clf",clf.accuracy(te.images,te.labels), time.process_time()-t)
gan=GAN((16,16),arch,z_dim=32,n_classes=ncls)
t=time.process_time()
h=train_gan(gan,tr.images,tr.labels if ncls else None,GANTrainConfig(epochs=ep,batch_size=int(sys.argv[4]),lr_g=float(sys.argv[5]),lr_d=float(sys.argv[5])),torch.Generator().manual_seed(0),
  callback=lambda e,m,g: print(e, {k:round(v,3) for k,v in m.items()}) if e%50==0 else None)
print("cpu",time.process_time()-t)
g=torch.Generator().manual_seed(1)
if ncls:
  lab=torch.arange(10).repeat(50); s=gan.sample(500,lab,g); print("acc",clf.accuracy(s,lab))
else:
  s=gan.sample(500,None,g)
print("fd gan",frechet_distance(clf.features(s),clf.features(te.images)),"fd real", frechet_distance(clf.features(tr.images[:500]),clf.features(te.images)))
