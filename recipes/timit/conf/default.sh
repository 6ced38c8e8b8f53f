# Sizes for the generated `default` corpus (~1 h of training audio) on a 2-core CPU machine.
# Every size choice of the recipe lives here; run.sh --config FILE selects another file.
corpus_size=default     # asr corpus synth --size
seed=1
nj=2
# GMM-HMM baseline
mono_gauss=1000
tri1_leaves=700; tri1_gauss=4000
tri2_leaves=700; tri2_gauss=4000
tri3_leaves=700; tri3_gauss=4000
# DBN-DNN (dnn_feats: fmllr = tri3 LDA+MLLT+fMLLR features, as Kaldi; fbank = log-mel + CMN)
dnn_feats=fmllr
dnn_layers=4; dnn_units=512
dbn_epochs=1            # CD-1 epochs per RBM layer
dnn_max_epochs=8
# sequence training
seq_criterion=mpe; seq_epochs=3; seq_utts_per_epoch=0
# chosen on dev (dev PER, CE model 17.16): lr 0.02 17.16, 0.1 16.98, 0.3 16.90; lr 0.3 kappa 0.33 16.92; lr 1.0 kappa 0.33 16.79
seq_lr=1.0; seq_kappa=0.33
