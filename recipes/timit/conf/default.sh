# Sizes for the generated `default` corpus (~1 h of training audio) on a 2-core CPU machine.
# Every size choice of the recipe lives here; run.sh --config FILE selects another file.
corpus_size=default     # asr corpus synth --size
seed=1
nj=2
# GMM-HMM baseline
mono_gauss=1000
# caps, as Kaldi s5 (the tree stops on its likelihood threshold, mixing up at 20 frames per Gaussian)
tri1_leaves=2500; tri1_gauss=15000
tri2_leaves=2500; tri2_gauss=15000
tri3_leaves=2500; tri3_gauss=15000
# DBN-DNN (dnn_feats: fmllr = tri3 LDA+MLLT+fMLLR features, as Kaldi; fbank = log-mel + CMN)
dnn_feats=fmllr
dnn_layers=4; dnn_units=512
dbn_epochs=8            # CD-1 epochs per RBM layer (the Gaussian input layer gets twice as many). Kaldi's TIMIT
                        # recipe uses 20; chosen on dev here (CE DNN, acwt 0.2): 1 epoch 16.32, 4 15.15, 8 14.68
                        # (tri3 16.92); the DBN costs ~120 s per epoch of all four layers on 2 cores
dnn_max_epochs=20      # Kaldi train.sh max_iters; newbob stops earlier (on dev-like CV loss)
# sequence training: arc-level MPE (Povey & Woodland) over denominator lattices of the CE model
seq_criterion=mpe; seq_den=lattice; seq_lattice_beam=6; seq_utts_per_epoch=0
seq_realign=false; seq_den_lm_order=2   # Kaldi: true and 1 (realign with the CE DNN; unigram lattices):
                                        # dev 14.48 vs 14.34 here (default corpus, kappa 0.2 lr 16), so kept off
# chosen on dev over the acwt-0.2 lattices of the 8-epoch DBN-DNN (dev PER, CE model 14.68; 2 epochs, no CE
# smoothing): kappa 0.1 lr 4 14.61; kappa 0.2 lr 4 14.59; kappa 0.1 lr 16 14.66; kappa 0.2 (Kaldi's acwt) lr 16 14.34
seq_epochs=2; seq_lr=16; seq_kappa=0.2; seq_ce_smoothing=0
# GMM baseline discriminative training (stage 14): tri3 + boosted MMI, 4 EBW iterations, boost 0.1;
gmm_bmmi=true; gmm_bmmi_iters=4; gmm_bmmi_boost=0.1; gmm_bmmi_taus=100,400   # tau and iteration chosen on dev
