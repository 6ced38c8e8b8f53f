# Real LDC TIMIT (run.sh --corpus /path/to/TIMIT): the sizes of Kaldi's s5 TIMIT recipe
# (2500 leaves / 15000 Gaussians for the triphone systems, a 6 x 1024 DBN; 6 x 512 below 1.5 h of audio).
corpus_size=
seed=1
nj=$(nproc 2>/dev/null || echo 2)   # jobs = cores
mono_gauss=1000
# caps, as Kaldi s5 (the tree stops on its likelihood threshold, mixing up at 20 frames per Gaussian)
tri1_leaves=2500; tri1_gauss=15000
tri2_leaves=2500; tri2_gauss=15000
tri3_leaves=2500; tri3_gauss=15000
dnn_feats=fmllr   # fmllr: tri3 LDA+MLLT+fMLLR features (as Kaldi); fbank: log-mel + CMN
dnn_layers=6; dnn_units=auto   # auto: 1024 units from 1.5 h of training audio (real TIMIT), else 512 (run.sh)
dbn_epochs=8      # CD-1 epochs per RBM (Kaldi's TIMIT recipe: 20); the default corpus's dev: 1 / 4 / 8 -> 16.32 / 15.15 / 14.68
dnn_max_epochs=20
seq_criterion=mpe; seq_den=lattice; seq_lattice_beam=6; seq_epochs=2; seq_utts_per_epoch=0
seq_realign=false; seq_den_lm_order=2   # Kaldi: true and 1 (realign with the CE DNN; unigram lattices):
                                        # dev 14.48 vs 14.34 here (default corpus, kappa 0.2 lr 16), so kept off
seq_lr=16; seq_kappa=0.2; seq_ce_smoothing=0   # the default corpus's dev choice; retune on this dev set
gmm_bmmi=true; gmm_bmmi_iters=4; gmm_bmmi_boost=0.1; gmm_bmmi_taus=100,400   # tau and iteration chosen on dev
