# The generated `full` corpus (TIMIT-sized: 462 training speakers): conf/timit.sh (Kaldi's s5 sizes)
# with the corpus to generate and the 6 x 1024 network fixed. Sized for a GPU machine (DNN stages);
# the GMM stages run on CPU with more jobs.
. "$(dirname "${BASH_SOURCE[0]}")/timit.sh"
corpus_size=full
dnn_units=1024
