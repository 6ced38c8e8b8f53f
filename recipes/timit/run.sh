#!/usr/bin/env bash
# TIMIT-style phone recognition, from corpus to the comparison report:
#   GMM-HMM baseline (mono -> tri1 -> tri2 LDA+MLLT -> tri3 SAT)
#   -> DBN-pretrained DNN-HMM (frame CE) [+ random-init ablation] -> sequence training (MPE).
#
# Usage: recipes/timit/run.sh [--corpus DIR] [--exp DIR] [--config FILE] [--set KEY=VALUE]... [--nj N]
#                             [--skip-bad] [--stage N] [--stop-stage N] [--mode phone|word] [--init-dbn PATH]
#   --corpus   a TIMIT-layout corpus (real LDC TIMIT or generated); default: generate the
#              `default` corpus under EXP/corpus with `asr corpus synth`.
#   --exp      everything the run writes goes under it (default: exp), RESULTS and report.md included.
#   --config   YAML recipe config (default: conf/default.yaml; conf/timit.yaml with --corpus); its keys
#              and their defaults: asr/recipe/config.py. The resolved config goes to EXP/.config/.
#   --set      override one setting of the config, e.g. --set seq.lr=8 (repeatable).
#   --nj       parallel jobs (integer >= 1; the same as --set nj=N).
#   --skip-bad leave unusable corpus utterances out (counted in EXP/data/log/counts.json)
#              instead of stopping at the data stage with the list of bad files.
#   --stage    resume from stage N, --stop-stage stop after stage N (integers 0..15,
#              stage <= stop-stage; stages already done are skipped anyway: see below).
#   --init-dbn seed the DNN from a DBN trained by another run instead of pretraining one.
#
# Stages (number: name): 0 setup, 1 corpus, 2 data, 3 feats, 4 lang, 5 mono, 6 tri1, 7 tri2,
# 8 tri3, 9 fmllr (DNN input features), 10 dbn, 11 dnn, 12 dnn_rand, 13 dnn_mpe,
# 14 tri3_bmmi (GMM boosted MMI), 15 report.
# One marker per stage, OUT/.done (asr/jobs/stage.py): its `recipe.stage` entry holds the hash of
# the exact command the stage ran and of the markers of the stages it reads from (not of every
# earlier stage: a new sequence-training learning rate reruns stage 13 only); a re-run skips a
# stage only when that hash matches, so a stage killed mid-way is run again from its own
# checkpoints or from its start. The stage's settings are copied to OUT/stage_config.yaml. Within
# a stage, training, each decoding and each lattice step record the same hash under
# `recipe.steps.<name>`: a stage killed while decoding resumes with the decoding, not with
# training again.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$top/recipes/timit"
cmdline=$(printf '%q ' "$0" "$@")

corpus=""
exp=exp
config=""
sets=()
stage=0
stop_stage=100
mode=phone
init_dbn=""
skip_bad=""
last_stage=15

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
# die_usage MESSAGE: a bad command line stops the run before it does anything, exit 2.
die_usage() { echo "run.sh: $*" >&2; usage >&2; exit 2; }
# int_opt NAME VALUE MIN MAX: VALUE must be an integer in [MIN, MAX] (MAX empty: no upper bound).
int_opt() {
  [[ "$2" =~ ^[0-9]+$ ]] || die_usage "$1 must be an integer, got '$2'"
  [ "$((10#$2))" -ge "$3" ] || die_usage "$1 must be at least $3, got $2"
  [ -z "$4" ] || [ "$((10#$2))" -le "$4" ] || die_usage "$1 must be in $3..$4, got $2"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --corpus|--exp|--config|--set|--nj|--stage|--stop-stage|--mode|--init-dbn)
      [ $# -ge 2 ] || die_usage "$1 needs a value" ;;
  esac
  case "$1" in
    --corpus) corpus=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    --nj) int_opt --nj "$2" 1 ""; sets+=(--set "nj=$((10#$2))"); shift 2 ;;
    --stage) int_opt --stage "$2" 0 $last_stage; stage=$((10#$2)); shift 2 ;;
    --stop-stage) int_opt --stop-stage "$2" 0 $last_stage; stop_stage=$((10#$2)); shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --init-dbn) init_dbn=$2; shift 2 ;;
    --skip-bad) skip_bad=--skip-bad; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die_usage "unknown option $1" ;;
  esac
done
[ "$stage" -le "$stop_stage" ] || die_usage "--stage $stage is after --stop-stage $stop_stage"
case "$mode" in phone|word) ;; *) die_usage "--mode must be phone or word, got '$mode'" ;; esac
[ -z "$corpus" ] || [ -d "$corpus" ] || die_usage "--corpus $corpus is not a directory"
[ -z "$init_dbn" ] || [ -e "$init_dbn" ] || die_usage "--init-dbn $init_dbn does not exist"
if [ -z "$config" ]; then
  if [ -n "$corpus" ]; then config="$here/conf/timit.yaml"; else config="$here/conf/default.yaml"; fi
fi
[ -f "$config" ] || { echo "run.sh: config $config not found" >&2; exit 2; }

# Stage 0: set-up of a fresh machine (idempotent).
if [ "$stage" -le 0 ]; then bash "$top/recipes/setup.sh"; fi
asr="$top/.venv/bin/asr"
export PYTHONHASHSEED=0

# The typed config (asr/recipe/config.py), checked before any stage runs: recipe-level choices
# and one option array per stage (mono_opts, ..., bmmi_opts), resolved into EXP/.config/.
# (A bad config stops the run here, exit 2, before EXP is created.)
resolved=$("$top/.venv/bin/python" -m asr.recipe.config --config "$config" "${sets[@]}" --shell \
  --write-dir "$exp/.config") || { echo "run.sh: bad config (see above)" >&2; exit 2; }
eval "$resolved"
exp=$(cd "$exp" && pwd)
[ -n "$corpus" ] && corpus=$(cd "$corpus" && pwd)

# A fork server (asr/jobs/forkserver.py): every `asr` call below forks from one process that
# imported torch and the command modules once, instead of spending 2-3 s on those imports
# (~40 calls). Same results, streams, exit status and kill semantics; it stops with this shell.
# ASR_FORKSERVER=off runs each call as its own process.
fs_pid=""
if [ "${ASR_FORKSERVER:-}" != off ]; then
  fs_dir=$(mktemp -d "${TMPDIR:-/tmp}/asr-fs.XXXXXX")
  "$top/.venv/bin/python" -m asr.jobs.forkserver --socket "$fs_dir/sock" --parent $$ < /dev/null > /dev/null &
  fs_pid=$!
  export ASR_FORKSERVER=$fs_dir/sock
  trap 'kill "$fs_pid" 2> /dev/null || true; rm -rf "$fs_dir"' EXIT
else
  unset ASR_FORKSERVER
fi
# cpu_ticks: CPU time (clock ticks) of this shell's finished children and the fork server's
cpu_ticks() {
  local st fs=()
  read -r -a st < /proc/$$/stat 2>/dev/null || st=()
  [ -n "$fs_pid" ] && { read -r -a fs < "/proc/$fs_pid/stat" 2>/dev/null || fs=(); }
  echo $(( ${st[15]:-0} + ${st[16]:-0} + ${fs[15]:-0} + ${fs[16]:-0} ))
}

log() { echo -e "$(date '+%H:%M:%S') [run.sh] $*" >&2; }
timing="$exp/stage_times.tsv"

# run_stage NUM NAME OUTDIR "DEPDIR..." CMD...: run CMD unless OUTDIR holds a marker for the same
# command. The hash covers the command's arguments (stage functions get every setting they use
# as an argument), the body of a stage function, and the markers of DEPDIR (the stages whose
# output CMD reads), so re-running a stage with other settings invalidates exactly the stages
# that read from it, directly or through others.
cur_out="" cur_hash="" cur_label="" cur_resumed="" step_ran=""
marker() { "$top/.venv/bin/python" -m asr.recipe.markers "$@"; }
run_stage() {
  local num=$1 name=$2 out=$3 deps=$4; shift 4
  local h prev
  if [ "$num" -lt "$stage" ] || [ "$num" -gt "$stop_stage" ]; then
    return 0
  fi
  # the hash (of the deps' markers, the command and the stage function) and the stage's marker
  # shellcheck disable=SC2086
  # (the decode options, e.g. conf/tiny.yaml's narrower beams, count for the stages that decode)
  h=$({ printf '%q ' "$@"; declare -f "$1" || true
        if [ "$num" -ge 5 ] && [ ${#decode_opts[@]} -gt 0 ]; then printf 'decode %q ' "${decode_opts[@]}"; fi
      } | marker begin "$out" $deps)
  read -r h prev <<< "$h"
  if [ "$prev" = "$h" ]; then
    log "stage $num ($name): done already, skipping"
    return 0
  fi
  # A stage that finished (or was interrupted) with other settings, or after another upstream
  # run, starts afresh; one interrupted with the same settings resumes from its checkpoints.
  # (Only a stage resumed with the same settings can hold step markers.)
  local started="$exp/.started/$num" resumed=""
  [ -z "$prev" ] && [ -f "$started" ] && prev=$(cat "$started")
  if [ -n "$prev" ] && [ "$prev" != "$h" ]; then
    log "stage $num ($name): settings changed since it ran, starting it afresh"
    rm -rf "$out"
  elif [ "$prev" = "$h" ]; then
    resumed=1
  fi
  mkdir -p "$exp/.started"
  echo "$h" > "$started"
  log "stage $num ($name): $*"
  local t0=$SECONDS c0 c1
  cur_out=$out cur_hash=$h cur_label="stage $num ($name)" cur_resumed=$resumed step_ran=""
  c0=$(cpu_ticks)
  # peak memory of the stage's processes (PSS summed over the tree, or one process's VmHWM),
  # sampled by a watcher in the background; it stops by itself if this shell dies
  local mem="$exp/.started/$num.rss" watcher rss
  rm -f "$mem" "$mem.stop"
  "$top/.venv/bin/python" "$top/asr/jobs/peakmem.py" --pid $$ --out "$mem" --stop-file "$mem.stop" &
  watcher=$!
  "$@"
  touch "$mem.stop" && wait "$watcher" || true
  rss=$(cat "$mem" 2>/dev/null || echo 0)
  c1=$(cpu_ticks)
  mkdir -p "$out"
  if [ -f "$exp/.config/$name.yaml" ]; then
    cp "$exp/.config/$name.yaml" "$out/stage_config.yaml.tmp" && mv "$out/stage_config.yaml.tmp" "$out/stage_config.yaml"
  fi
  marker set "$out" "$h"
  printf '%s\t%s\t%d\t%d\n' "$num" "$name" $((SECONDS - t0)) "$rss" >> "$timing"
  log "stage $num ($name): finished in $((SECONDS - t0)) s (CPU $(( (c1 - c0) / $(getconf CLK_TCK) )) s), peak memory $rss MiB"
}

# step NAME CMD...: one separately resumable part of the running stage (training, a decoding).
# Skipped when the stage was resumed, its OUT/.done records this stage's hash for NAME and no
# earlier step of this run of the stage had to run (so a step never outlives a redone step it
# depends on); a stale mark is dropped before the step runs.
step() {
  local name=$1; shift
  if [ -n "$cur_resumed" ]; then
    if [ -z "$step_ran" ]; then
      if [ "$(marker step "$cur_out" "$name" "$cur_hash")" = skip ]; then
        log "$cur_label: step $name done already, skipping"
        return 0
      fi
    else
      marker drop "$cur_out" "$name"
    fi
  fi
  step_ran=1
  "$@"
  marker set "$cur_out" "$cur_hash" "$name"
}

# Provenance for the report: commit, resolved config, seed, corpus, command line, machine.
"$asr" report --write-run-info --exp "$exp" --config "$exp/.config/resolved.yaml" --run-seed "$seed" \
  --corpus "${corpus:-$exp/corpus}" --command "${cmdline% }"

data=$exp/data
fb=$exp/data/fbank
lang=$exp/lang
[ "$mode" = word ] && lang=$exp/lang_wrd

# 1: corpus (generated unless --corpus is given)
if [ -z "$corpus" ]; then
  corpus=$exp/corpus
  run_stage 1 corpus "$corpus" "" "$asr" corpus synth "$corpus" "${corpus_opts[@]}"
fi

# 2: Kaldi-style data dirs (train / dev / test), 48-phone text, 39-phone scoring text
run_stage 2 data "$data" "$corpus" "$asr" data timit "$corpus" "$data" ${skip_bad:+"$skip_bad"}

# 3: features: MFCC (GMM systems) and log-mel fbank (DNN) with per-speaker CMVN stats
feats() {
  "$asr" feats "$data/train" "$data/dev" "$data/test" --type mfcc --nj "$nj"
  mkdir -p "$fb"
  for s in train dev test; do
    rm -rf "$fb/$s.tmp"; mkdir -p "$fb/$s.tmp"
    for f in wav.scp text text.39 text.wrd phone_times utt2spk spk2utt spk2gender utt2dur; do
      [ -f "$data/$s/$f" ] && cp "$data/$s/$f" "$fb/$s.tmp/"
    done
    rm -rf "$fb/$s"; mv "$fb/$s.tmp" "$fb/$s"
  done
  "$asr" feats "$fb/train" "$fb/dev" "$fb/test" --type fbank --nj "$nj"
}
run_stage 3 feats "$data/train/data" "$data" feats

# 4: lang: phone bigram LM (phone recognition) or word n-gram + lexicon (word recognition)
if [ "$mode" = phone ]; then
  run_stage 4 lang "$lang" "$data" "$asr" lang phones --text "$data/train/text" --out "$lang"
else
  run_stage 4 lang "$lang" "$data" "$asr" lang words --lexicon "$top/data/lexicon.txt" --text "$data/train/text.wrd" --out "$lang"
fi

# decode_gmm SYS: decode dev (choosing the LM weight there) then test with dev's choice
decode_gmm() {
  local sys=$1
  step decode_dev "$asr" gmm decode --model "$exp/$sys" --lang "$lang" --data "$data/dev" --out "$exp/$sys/decode_dev" \
    --nj "$nj" "${decode_opts[@]}"
  step decode_test "$asr" gmm decode --model "$exp/$sys" --lang "$lang" --data "$data/test" --out "$exp/$sys/decode_test" \
    --lmwt-from "$exp/$sys/decode_dev" --nj "$nj" "${decode_opts[@]}"
}
# RESULTS is rebuilt from the decode dirs after every stage, so a resumed run ends with the
# same file as an uninterrupted one.
update_results() {
  local tmp="$exp/RESULTS.tmp"
  : > "$tmp"
  for sys in mono tri1 tri2 tri3 tri3_bmmi dnn dnn_rand dnn_mpe dnn_mpfe dnn_smbr dnn_mmi dnn_bmmi; do
    for set in dev test; do
      local f="$exp/$sys/decode_$set/scoring"
      [ -f "$f" ] && cat "$f" >> "$tmp"
    done
  done
  mv "$tmp" "$exp/RESULTS"
}

# 5-8: GMM-HMM baseline
gmm_stage() {
  local sys=$1; shift
  step train "$asr" gmm "$sys" --data "$data/train" --lang "$lang" --out "$exp/$sys" "$@"
  decode_gmm "$sys"
  update_results
}
run_stage 5 mono "$exp/mono" "$data/train/data $lang" gmm_stage mono "${mono_opts[@]}"
run_stage 6 tri1 "$exp/tri1" "$exp/mono" gmm_stage tri1 --ali "$exp/mono" "${tri1_opts[@]}"
run_stage 7 tri2 "$exp/tri2" "$exp/tri1" gmm_stage tri2 --ali "$exp/tri1" "${tri2_opts[@]}"
run_stage 8 tri3 "$exp/tri3" "$exp/tri2" gmm_stage tri3 --ali "$exp/tri2" "${tri3_opts[@]}"

# 9: DNN input features. `fmllr` (default, as Kaldi's TIMIT DNN): tri3's LDA+MLLT+fMLLR features,
# with dev/test transforms from tri3's first decoding pass; `fbank`: 40 log-mel + per-speaker CMN.
if [ "$dnn_feats" = fmllr ]; then
  dd=$exp/data/fmllr
  fmllr_feats() {
    "$asr" gmm fmllr-feats --model "$exp/tri3" --data "$data/train" --out "$dd/train"
    for s in dev test; do
      "$asr" gmm fmllr-feats --model "$exp/tri3" --data "$data/$s" --out "$dd/$s" --trans "$exp/tri3/decode_$s/trans.pt"
    done
  }
  run_stage 9 fmllr "$dd" "$exp/tri3" fmllr_feats
  dd_stage=$dd
  # 9 (fmllr_sp, with dnn.speed_perturb only): speed-perturbed copies of the training audio for CE
  # training, in a stage of their own so that changing the factors leaves the DBN (which reads only
  # the original features) alone. perturbed_copy F: the copy at speed F, its MFCCs, tri3's alignment
  # (fMLLR estimated for each copy-speaker, as align_fmllr.sh for new speakers) and adapted features.
  if [ -n "$dnn_speed_perturb" ]; then
    sp=$exp/data/sp
    perturbed_copy() {
      local f=$1
      "$asr" data perturb "$data/train" "$sp/train_sp$f" --speed "$f"
      "$asr" feats "$sp/train_sp$f" --type mfcc --nj "$nj"
      "$asr" gmm align --model "$exp/tri3" --data "$sp/train_sp$f" --out "$sp/ali_sp$f"
      "$asr" gmm fmllr-feats --model "$exp/tri3" --data "$sp/train_sp$f" --out "$sp/fmllr_sp$f" \
        --trans "$sp/ali_sp$f/trans.pt"
    }
    perturbed_copies() {
      local f
      for f in "$@"; do
        step "sp$f" perturbed_copy "$f"
      done
    }
    # shellcheck disable=SC2086
    run_stage 9 fmllr_sp "$sp" "$exp/tri3" perturbed_copies $dnn_speed_perturb
  fi
else
  dd=$fb dd_stage=$data/train/data
fi

# unless_selected DIR CMD...: run CMD (the dev decoding of DIR's system) unless DIR's training chose
# its system on dev and left that candidate's dev decoding in DIR/decode_dev (selection.json names
# it: the same model, graph and settings), which is then the stage's.
unless_selected() {
  local dir=$1; shift
  if [ -f "$dir/decode_dev/scoring" ] && grep -q '"decode_dev": "' "$dir/selection.json" 2>/dev/null; then
    log "$cur_label: dev decoding of the chosen candidate reused: $(cat "$dir/decode_dev/scoring")"
  else
    "$@"
  fi
}

decode_dnn() {
  local sys=$1
  step decode_dev unless_selected "$exp/$sys" "$asr" dnn decode --model "$exp/$sys" --graph "$exp/tri3/graph" \
    --data "$dd/dev" --out "$exp/$sys/decode_dev" --mode "$mode" --nj "$nj" "${decode_opts[@]}"
  step decode_test "$asr" dnn decode --model "$exp/$sys" --graph "$exp/tri3/graph" --data "$dd/test" \
    --out "$exp/$sys/decode_test" --lmwt-from "$exp/$sys/decode_dev" --mode "$mode" --nj "$nj" "${decode_opts[@]}"
}

# 10: DBN pretraining (stack of RBMs from asr.generative), unless --init-dbn reuses one
dbn=$exp/dbn
if [ -n "$init_dbn" ]; then
  dbn=$init_dbn
  log "stage 10 (dbn): reusing the DBN at $dbn"
else
  run_stage 10 dbn "$exp/dbn" "$dd_stage" "$asr" dnn pretrain --data "$dd/train" --out "$exp/dbn" "${dbn_opts[@]}"
fi

# 11: DNN fine-tuning (frame cross-entropy on tri3 alignments) + hybrid decoding
dnn_stage() {
  local sys=$1; shift
  step train "$asr" dnn train --data "$dd/train" --ali "$exp/tri3" --out "$exp/$sys" "$@"
  decode_dnn "$sys"
  update_results
}
# the perturbed copies of stage 9 (dnn.speed_perturb) join the training side of CE training
extra_opts=() ce_deps="$dd_stage $exp/tri3"
for f in $dnn_speed_perturb; do
  extra_opts+=(--extra-data "$sp/fmllr_sp$f" --extra-ali "$sp/ali_sp$f")
done
[ -z "$dnn_speed_perturb" ] || ce_deps+=" $sp"
run_stage 11 dnn "$exp/dnn" "$ce_deps $dbn" dnn_stage dnn "${dnn_opts[@]}" "${extra_opts[@]}" --dbn "$dbn"
# 12: ablation: the same network from a random initialisation
if [ "$dnn_rand_ablation" = true ]; then
  run_stage 12 dnn_rand "$exp/dnn_rand" "$ce_deps" dnn_stage dnn_rand "${dnn_opts[@]}" "${extra_opts[@]}" --random-init
fi

# 13: sequence-discriminative training from the CE model. Denominator (seq_den): lattices of the
# training data decoded by the CE model (exp/dnn_denlats, made once, resumable), or the
# lattice-free pdf-bigram HMM (criteria mpfe/smbr/mmi/bmmi only). As Kaldi's train_mpe.sh /
# make_denlats.sh: seq_realign=true realigns the training data with the CE DNN first (numerator and
# MPE reference, exp/dnn_ali); seq_den_lm_order=1 decodes the lattices with a phone unigram LM
# (weak LM, exp/tri3/graph_den) instead of the decoding bigram. seq_select_epoch=true decodes dev
# with every epoch's model and keeps the best, the CE model included (asr/seqtrain/select.py).
seq_stage() {
  local den=$1 lattice_beam=$2 realign=$3 den_order=$4 select=$5 use_sp=$6; shift 6
  local sys=dnn_$seq_criterion ali=$exp/tri3 dgraph=$exp/tri3/graph
  local den_opts=(--den "$den") sel_opts=() extra=() f xali
  if [ "$select" = true ]; then
    sel_opts=(--select-on-dev "$dd/dev" --dev-graph "$exp/tri3/graph" --nj "$nj" --mode "$mode" "${decode_opts[@]}")
  fi
  if [ "$realign" = true ]; then
    step align "$asr" dnn align --model "$exp/dnn" --data "$dd/train" --ali "$exp/tri3" --out "$exp/dnn_ali"
    ali=$exp/dnn_ali
  fi
  if [ "$den" = lattice ]; then
    if [ "$den_order" != 2 ]; then
      step lang_den "$asr" lang phones --text "$data/train/text" --order "$den_order" --out "$exp/lang_den"
      step graph_den "$asr" lang graph --model "$exp/tri3/final.pt" --lang "$exp/lang_den" --out "$exp/tri3/graph_den"
      dgraph=$exp/tri3/graph_den
    fi
    step lattices "$asr" seq lattices --model "$exp/dnn" --graph "$dgraph" --data "$dd/train" \
      --ali "$ali" --out "$exp/dnn_denlats" --lattice-beam "$lattice_beam" --nj "$nj"
    den_opts+=(--lattices "$exp/dnn_denlats")
  fi
  # seq.speed_perturb: the perturbed copies of stage 9 join the training side, each with its own
  # (realigned, with seq.realign) alignment and denominator lattices
  if [ "$use_sp" = true ]; then
    for f in $dnn_speed_perturb; do
      xali=$sp/ali_sp$f
      if [ "$realign" = true ]; then
        step "align_sp$f" "$asr" dnn align --model "$exp/dnn" --data "$sp/fmllr_sp$f" --ali "$xali" \
          --out "$exp/dnn_ali_sp$f"
        xali=$exp/dnn_ali_sp$f
      fi
      extra+=(--extra-data "$sp/fmllr_sp$f" --extra-ali "$xali")
      if [ "$den" = lattice ]; then
        step "lattices_sp$f" "$asr" seq lattices --model "$exp/dnn" --graph "$dgraph" --data "$sp/fmllr_sp$f" \
          --ali "$xali" --out "$exp/dnn_denlats_sp$f" --lattice-beam "$lattice_beam" --nj "$nj"
        extra+=(--extra-lattices "$exp/dnn_denlats_sp$f")
      fi
    done
  fi
  step train "$asr" seq train --criterion "$seq_criterion" --model "$exp/dnn" --data "$dd/train" --ali "$ali" \
    --graph "$dgraph" --out "$exp/$sys" "${den_opts[@]}" "${extra[@]}" "${sel_opts[@]}" "$@"
  decode_dnn "$sys"
  update_results
}
seq_deps="$exp/dnn $exp/tri3 $data"
[ "$seq_speed_perturb" != true ] || seq_deps+=" $sp"
run_stage 13 "dnn_$seq_criterion" "$exp/dnn_$seq_criterion" "$seq_deps" seq_stage "$seq_den" \
  "$seq_lattice_beam" "$seq_realign" "$seq_den_lm_order" "$seq_select_epoch" "$seq_speed_perturb" "${seq_opts[@]}"

# 14: discriminative training of the GMM baseline too (like for like): tri3 + boosted MMI by
# extended Baum-Welch over tri3's own denominator lattices (Kaldi steps/train_mmi.sh).
gmm_seq_stage() {
  local lattice_beam=$1; shift
  step lattices "$asr" seq lattices --model "$exp/tri3" --graph "$exp/tri3/graph" --data "$data/train" \
    --ali "$exp/tri3" --out "$exp/tri3_denlats" --lattice-beam "$lattice_beam" --no-segments --nj "$nj"
  step train "$asr" seq gmm-train --model "$exp/tri3" --data "$data/train" --lattices "$exp/tri3_denlats" \
    --out "$exp/tri3_bmmi" --lang "$lang" --dev "$data/dev" --dev-transform-dir "$exp/tri3/decode_dev" \
    --nj "$nj" "${decode_opts[@]}" "$@"
  # the candidates reuse tri3's speaker transforms (Kaldi --transform-dir)
  step decode_dev unless_selected "$exp/tri3_bmmi" "$asr" gmm decode --model "$exp/tri3_bmmi" --lang "$lang" \
    --data "$data/dev" --out "$exp/tri3_bmmi/decode_dev" --transform-dir "$exp/tri3/decode_dev" --nj "$nj" "${decode_opts[@]}"
  step decode_test "$asr" gmm decode --model "$exp/tri3_bmmi" --lang "$lang" --data "$data/test" \
    --out "$exp/tri3_bmmi/decode_test" --transform-dir "$exp/tri3/decode_test" \
    --lmwt-from "$exp/tri3_bmmi/decode_dev" --nj "$nj" "${decode_opts[@]}"
  update_results
}
if [ "$gmm_bmmi" = true ]; then
  run_stage 14 tri3_bmmi "$exp/tri3_bmmi" "$exp/tri3" gmm_seq_stage "$seq_lattice_beam" "${bmmi_opts[@]}"
fi

# 15: comparison report (report.md + plots), printed
if [ "$stop_stage" -ge 15 ]; then
  update_results
  "$asr" report --exp "$exp" --mode "$mode"
fi
