#!/usr/bin/env bash
# Generative-model demos on handwritten digits (issue 4) + the PGM demos (issue 8).
#
#   recipes/digits/run.sh [--stage N] [--stop-stage N] [--out DIR] [--speech DATA_DIR]
#
# Stages (training is skipped when its model dir holds a .done marker with the same config):
#   0 setup        recipes/setup.sh
#   1 classifier   reference digit classifier (for the sample-quality scores)
#   2 rbm          RBM, 50 hidden units, digit "2" only: filters, reconstructions, AIS log-lik
#   3 dbn          DBN 256-500-500: samples, scores, SVM on DBN features
#   4 gan          MLP GAN (non-saturating loss): samples, scores, interpolation
#   5 cgan         conditional GAN: one row per digit, class accuracy, latent arithmetic
#   6 dcgan        DCGAN on 16x16 digits
#   7 speech       DCGAN on log-mel patches of DATA_DIR (skipped without --speech)
#   8 pgm          Boltzmann machine / MRF / Bayes-net demos (asr.generative.demos.pgm)
#   9 summary      summary.md with the measured figures and CPU time per stage
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
stage=0
stop_stage=100
out=exp/digits
speech=""
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --speech) speech=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
# paths given on the command line are relative to the caller's directory
case "$out" in /*) ;; *) [ "$out" = exp/digits ] && out="$top/$out" || out="$PWD/$out" ;; esac
case "$speech" in ""|/*) ;; *) speech="$PWD/$speech" ;; esac
cd "$top"
log() { echo "[digits $(date +%H:%M:%S)] $*"; }
py=.venv/bin/python
gen() { $py -m asr.cli.main gen "$@"; }
demo() { $py -m asr.generative.demos.digits "$@"; }
mkdir -p "$out"
times="$out/times.tsv"

# run_stage NAME CMD...: run, append "NAME <TAB> cpu_s <TAB> wall_s" to times.tsv
run_stage() {
  local name=$1; shift
  local t0 c0 tck
  tck=$(getconf CLK_TCK)
  t0=$(date +%s.%N)
  c0=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)   # own + waited-for children CPU ticks
  "$@"
  { grep -v "^$name	" "$times" 2>/dev/null || true
    awk -v n="$name" -v c0="$c0" -v t0="$t0" -v t1="$(date +%s.%N)" -v tck="$tck" \
      '{printf "%s\t%.1f\t%.1f\n", n, ($14+$15+$16+$17-c0)/tck, t1-t0}' /proc/$$/stat
  } > "$times.tmp"
  mv "$times.tmp" "$times"
}

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "stage 0: setup"; bash recipes/setup.sh
fi
if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "stage 1: reference classifier"
  run_stage classifier demo classifier --out "$out"
fi
if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "stage 2: RBM on digit 2"
  _rbm() {
    gen train rbm --data digits --digit 2 --hidden 50 --epochs 50 --ais-every 10 --out "$out/rbm2"
    demo rbm --model "$out/rbm2" --out "$out"
  }
  run_stage rbm _rbm
fi
if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "stage 3: DBN"
  _dbn() {
    gen train dbn --data digits --sizes 500,500 --epochs 20 --out "$out/dbn"
    demo dbn --model "$out/dbn" --out "$out"
  }
  run_stage dbn _dbn
fi
if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "stage 4: GAN"
  _gan() {
    gen train gan --data digits --epochs 100 --out "$out/gan"
    demo gan --model "$out/gan" --out "$out"
  }
  run_stage gan _gan
fi
if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "stage 5: conditional GAN"
  _cgan() {
    gen train cgan --data digits --epochs 150 --out "$out/cgan"
    demo cgan --model "$out/cgan" --out "$out"
  }
  run_stage cgan _cgan
fi
if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "stage 6: DCGAN on digits"
  _dcgan() {
    gen train dcgan --data digits --epochs 40 --out "$out/dcgan"
    demo gan --model "$out/dcgan" --out "$out" --name dcgan
  }
  run_stage dcgan _dcgan
fi
if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  if [ -z "$speech" ]; then
    log "stage 7: DCGAN on log-mel patches skipped (give --speech DATA_DIR with an fbank feats.scp)"
  else
    log "stage 7: DCGAN on log-mel patches of $speech"
    _speech() {
      gen train dcgan --data "speech:$speech" --epochs 20 --max-patches 8000 --out "$out/dcgan_speech"
      demo speech --model "$out/dcgan_speech" --data "$speech" --out "$out"
    }
    run_stage speech _speech
  fi
fi
if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  log "stage 8: pgm (Boltzmann machine, MRF, Bayesian network)"
  run_stage pgm $py -m asr.generative.demos.pgm --out "$out/pgm"
fi
if [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  log "stage 9: summary"
  demo summary --out "$out" > /dev/null
  log "wrote $out/summary.md and $out/figures/*.png"
fi
