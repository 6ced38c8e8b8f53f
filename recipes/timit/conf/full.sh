# The generated `full` corpus (TIMIT-sized: 462 training speakers). Sized for a GPU machine
# (DNN stages); the GMM stages run on CPU with more jobs.
corpus_size=full
seed=1
nj=8
mono_gauss=1000
tri1_leaves=2500; tri1_gauss=15000
tri2_leaves=2500; tri2_gauss=15000
tri3_leaves=2500; tri3_gauss=15000
dnn_layers=6; dnn_units=1024
dbn_epochs=2
dnn_max_epochs=20
seq_criterion=mpe; seq_epochs=4
