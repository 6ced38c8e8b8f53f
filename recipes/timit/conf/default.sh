# Sizes for the generated `default` corpus (~1 h of training audio) on a 2-core CPU machine.
# Every size choice of the recipe lives here; run.sh --config FILE selects another file.
corpus_size=default     # asr corpus synth --size
seed=1
nj=2
# GMM-HMM baseline
mono_gauss=1000
tri1_leaves=1000; tri1_gauss=6000
tri2_leaves=1200; tri2_gauss=8000
tri3_leaves=1200; tri3_gauss=8000
# DBN-DNN
dnn_layers=4; dnn_units=512
dbn_epochs=1            # CD-1 epochs per RBM layer
dnn_max_epochs=8
# sequence training
seq_criterion=mpe; seq_epochs=2
