# Tiny corpus, tiny models: seconds per stage. Used by the tests (smoke / kill-and-resume).
corpus_size=tiny
seed=1
nj=2
mono_gauss=100
gmm_iters=10      # a smoke test: 10 EM iterations per GMM stage (Kaldi: 40 mono, 35 triphone)
tri1_leaves=400; tri1_gauss=1500
tri2_leaves=400; tri2_gauss=1500
tri3_leaves=400; tri3_gauss=1500
dnn_feats=fmllr   # fmllr: tri3 LDA+MLLT+fMLLR features (as Kaldi); fbank: log-mel + CMN
dnn_layers=2; dnn_units=64
dbn_epochs=1
dnn_max_epochs=2
seq_criterion=mpe; seq_den=lattice; seq_lattice_beam=6; seq_epochs=1; seq_utts_per_epoch=0; seq_lr=4; seq_ce_smoothing=0
seq_realign=true; seq_den_lm_order=2    # the smoke test runs the realignment; Kaldi: true and 1 (realign with the CE DNN; unigram lattices) (default corpus dev: 14.48 with both vs 14.34 without)
gmm_bmmi=true; gmm_bmmi_iters=1; gmm_bmmi_boost=0.1; gmm_bmmi_taus=100
