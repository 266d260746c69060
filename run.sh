#!/usr/bin/env bash
# Recipe driver: multilingual ASR from discrete SSL units with the two-step strategy
# (step 0 CTC fine-tuning, step 1 learned layer weights, step 2 k-means units + discrete ASR).
#
# Defaults below < the recipe config (--config, YAML) < options on this command line.
# Paths in a config file are relative to the repository root; paths typed on the command
# line are relative to the directory you run from. Outputs go under --workdir
# (data/, dump/, exp/, log/ as in ESPnet recipes). Run with --help for the stages.
set -euo pipefail

MAIN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
invocation_dir=$(pwd)

# ---- options (every one can be set in the recipe config or as --name value) ----
stage=1                 # first stage to run
stop_stage=100          # last stage to run
config=conf/recipe/demo.yaml  # recipe config (YAML): defaults for the options below
workdir=egs2/demo/asr2  # where data/, dump/, exp/ and log/ are written
nj=2                    # parallel jobs for per-utterance stages
max_jobs_run=           # at most this many jobs at once on the local backend (default: cores)
cmd_backend=            # local | slurm (default: $CMD_BACKEND or local; see cmd.sh)
corpus_config=          # demo corpus config (conf/corpus/*.yaml); empty = real data, skip stage 1
corpus_seed=0           # seed of the demo corpus
mlsuperb_root=          # ML-SUPERB root (<dataset>/<iso3>/wav/...); default: the demo corpus
librispeech_root=       # LibriSpeech root (train-clean-100, dev-clean, ...); default: the demo corpus
mlsuperb_setup=1h       # 1h | 10min
lid=false               # prefix transcripts with [iso3] language tags
reserved_langs=         # few-shot languages (keep 5 training utterances), space-separated iso3 codes; empty = none
max_train_seconds=20    # training utterances longer than this are dropped (test sets never)
fs=16000                # audio sample rate (Hz)
train_set=train
valid_set=dev
test_sets="test_1h dev_clean dev_other test_clean test_other"
ssl_upstream=xls_r_300m # s3prl upstream name (xls_r_300m, wavlm_large, hf_wav2vec2_custom, hubert_local, ...)
ssl_path=               # local SSL checkpoint (file or directory); empty for s3prl hub names
ssl_cache_dir=          # s3prl download cache holding hub checkpoints (offline: must be filled beforehand)
ssl_pretrain_config=    # demo: pre-train the small SSL model with this config (conf/ssl/*.yaml)
ssl_retrain=false       # demo: pre-train even when ssl_path (the kept checkpoint) exists

option_names=(stage stop_stage config workdir nj max_jobs_run cmd_backend corpus_config corpus_seed
    mlsuperb_root librispeech_root mlsuperb_setup lid reserved_langs max_train_seconds fs
    train_set valid_set test_sets ssl_upstream ssl_path ssl_cache_dir ssl_pretrain_config ssl_retrain)
path_options=" config workdir corpus_config mlsuperb_root librispeech_root ssl_path ssl_cache_dir ssl_pretrain_config "

# ---- stages: number|name|what it does|status ----
stage_table=(
    "1|corpus|Synthesise the demo corpus (ML-SUPERB + LibriSpeech layouts; skipped for real data)|built"
    "2|data|Data preparation: corpora -> Kaldi data dirs (train, dev, test_1h, dev/test_clean/other)|built"
    "3|ssl|SSL model: pre-train the demo SSL model (or take the kept one), load and record the upstream|built"
    "4|finetune|Step 0: CTC fine-tuning of the SSL model and export of the fine-tuned upstream|issue 3"
    "5|step1|Step 1: continuous ASR with learnable layer weights over all SSL layers|issue 4"
    "6|weights|Export layer_weights.json and its chart; decode and score the continuous model|issue 4"
    "7|kmeans|Learn k-means on fixed-weight SSL features (learned, single-layer, uniform)|issue 5"
    "8|units|Dump units for every set, dedup, source BPE, unit statistics|issue 5"
    "9|step2|Step 2: train the discrete-unit ASR models|issue 6"
    "10|decode|Decode the test sets|issue 6"
    "11|score|Score hypotheses: CER per set and language, LibriSpeech micro-average, bitrate|built"
    "12|results|Write RESULTS.md and the per-language chart|issue 6"
    "13|pack|Pack a model directory for audio-in inference|issue 6"
)

usage() {
    cat <<EOF
Usage: $0 [--stage N] [--stop_stage N] [--config conf/recipe/demo.yaml] [--name value ...]

Stages:
EOF
    local row n name what status
    for row in "${stage_table[@]}"; do
        IFS='|' read -r n name what status <<<"$row"
        if [ "$status" = built ]; then status=""; else status="  [not built yet: $status]"; fi
        printf '  %2s %-9s %s%s\n' "$n" "$name" "$what" "$status"
    done
    cat <<EOF

Options (defaults; the recipe config given by --config overrides them, the command line overrides both):
EOF
    local o
    for o in "${option_names[@]}"; do
        printf '  --%-18s %s\n' "$o" "${!o:-\"\"}"
    done
    cat <<EOF

Examples:
  ./run.sh                                    # the whole demo recipe
  ./run.sh --stage 2 --stop_stage 2           # redo data preparation only
  egs2/ml_superb/asr2/run.sh --mlsuperb_root /data/ml_superb --librispeech_root /data/LibriSpeech
EOF
}

die() { echo "run.sh: error: $*" >&2; exit 2; }
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') run.sh: $*" >&2; }
is_option() { local o; for o in "${option_names[@]}"; do [ "$o" = "$1" ] && return 0; done; return 1; }

# ---- command line: collect first, apply after the config so it wins ----
declare -A cli=()
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --*=*) name=${1%%=*}; value=${1#*=}; shift ;;
        --*) name=$1; [ $# -ge 2 ] || die "option $1 needs a value"; value=$2; shift 2 ;;
        *) die "unexpected argument '$1' (options are --name value; see --help)" ;;
    esac
    name=${name#--}; name=${name//-/_}
    is_option "$name" || die "unknown option --$name (see ./run.sh --help)"
    if [[ $path_options == *" $name "* && -n $value && $value != /* ]]; then
        value="$invocation_dir/$value"
    fi
    cli[$name]=$value
done

cd "$MAIN_ROOT"
# shellcheck source=path.sh
. ./path.sh

[ -n "${cli[config]:-}" ] && config=${cli[config]}
config_vars=$(python -m espnet2_ext.bin.recipe_config --config "$config" --known "$(IFS=,; echo "${option_names[*]}")") \
    || exit 2
eval "$config_vars"
for name in "${!cli[@]}"; do printf -v "$name" '%s' "${cli[$name]}"; done

[[ $stage =~ ^[0-9]+$ && $stop_stage =~ ^[0-9]+$ ]] || die "--stage and --stop_stage must be numbers (got '$stage', '$stop_stage')"
last_stage=${#stage_table[@]}
(( stage >= 1 && stage <= last_stage )) || die "unknown stage $stage; stages are 1..$last_stage (see --help)"
[[ $nj =~ ^[1-9][0-9]*$ ]] || die "--nj must be a positive integer (got '$nj')"
[[ $lid == true || $lid == false ]] || die "--lid must be true or false (got '$lid')"
[[ $ssl_retrain == true || $ssl_retrain == false ]] || die "--ssl_retrain must be true or false (got '$ssl_retrain')"
case $mlsuperb_setup in 1h|10min) ;; *) die "--mlsuperb_setup must be 1h or 10min (got '$mlsuperb_setup')" ;; esac

# shellcheck source=cmd.sh
. ./cmd.sh
[ -n "$max_jobs_run" ] && train_cmd+=" --max_jobs_run $max_jobs_run" && decode_cmd+=" --max_jobs_run $max_jobs_run"

mkdir -p "$workdir"
workdir=$(cd "$workdir" && pwd)
corpus_dir=$workdir/corpus
data=$workdir/data
logdir=$workdir/log
if [ -n "$corpus_config" ]; then
    mlsuperb_root=${mlsuperb_root:-$corpus_dir/mlsuperb}
    librispeech_root=${librispeech_root:-$corpus_dir/LibriSpeech}
fi

run_stage() {  # run_stage N: run stage N if it is in [stage, stop_stage], timing it
    local n=$1 row name what status
    (( n >= stage && n <= stop_stage )) || return 0
    IFS='|' read -r _ name what status <<<"${stage_table[n-1]}"
    if [ "$status" != built ]; then
        log "stage $n ($name): NOT BUILT YET ($status): $what"
        log "stopping before stage $n; stages up to $((n - 1)) are done"
        exit 0
    fi
    log "stage $n ($name): $what"
    local start=$SECONDS
    "stage_$name"
    log "stage $n ($name): done in $((SECONDS - start)) s"
}

stage_corpus() {
    if [ -z "$corpus_config" ]; then
        log "no corpus_config: real data from mlsuperb_root=$mlsuperb_root librispeech_root=$librispeech_root"
        return 0
    fi
    if [ -f "$corpus_dir/.done" ]; then
        log "corpus already complete in $corpus_dir (remove it to rebuild)"
        return 0
    fi
    python -m espnet2_ext.bin.make_demo_corpus plan --config "$corpus_config" --out_dir "$corpus_dir" --seed "$corpus_seed"
    ${train_cmd} JOB=1:"$nj" "$logdir/corpus/synth.JOB.log" \
        python -m espnet2_ext.bin.make_demo_corpus synth --out_dir "$corpus_dir" --shard JOB --nshard "$nj"
    python -m espnet2_ext.bin.make_demo_corpus finalize --out_dir "$corpus_dir"
}

stage_data() {
    [ -n "$mlsuperb_root" ] || die "--mlsuperb_root is required for real data (or set corpus_config for the demo)"
    [ -d "$mlsuperb_root" ] || die "--mlsuperb_root $mlsuperb_root is not a directory"
    local lid_opt=()
    [ "$lid" = true ] && lid_opt=(--lid)
    python -m espnet2_ext.bin.prepare_data mlsuperb --root "$mlsuperb_root" --setup "$mlsuperb_setup" \
        --out_dir "$data/local/mlsuperb" "${lid_opt[@]}" --reserved_langs "${reserved_langs// /,}"
    local -A sources=([$train_set]="$data/local/mlsuperb/train" [$valid_set]="$data/local/mlsuperb/dev" [test_1h]="$data/local/mlsuperb/test")
    if [ -n "$librispeech_root" ]; then
        [ -d "$librispeech_root" ] || die "--librispeech_root $librispeech_root is not a directory"
        python -m espnet2_ext.bin.prepare_data librispeech --root "$librispeech_root" \
            --out_dir "$data/local/librispeech" "${lid_opt[@]}"
        sources[$train_set]+=" $data/local/librispeech/train_clean_100"
        sources[$valid_set]+=" $data/local/librispeech/dev_clean"
        local s
        for s in dev_clean dev_other test_clean test_other; do sources[$s]="$data/local/librispeech/$s"; done
    else
        log "no librispeech_root: English LibriSpeech sets are skipped"
    fi
    local set
    for set in "${!sources[@]}"; do
        if [ -f "$data/$set/.done" ]; then log "data/$set is complete"; continue; fi
        # shellcheck disable=SC2086  # sources are space-separated paths we built above
        python -m espnet2_ext.bin.prepare_data combine --out_dir "$data/$set" ${sources[$set]}
        ${train_cmd} JOB=1:"$nj" "$logdir/data/measure_$set.JOB.log" \
            python -m espnet2_ext.bin.prepare_data measure --data_dir "$data/$set" --shard JOB --nshard "$nj" --fs "$fs"
        local max_opt=()
        [ "$set" = "$train_set" ] && max_opt=(--max_seconds "$max_train_seconds")
        python -m espnet2_ext.bin.prepare_data finalize --data_dir "$data/$set" --nshard "$nj" --fs "$fs" "${max_opt[@]}"
    done
}

stage_ssl() {
    # Writes exp/ssl/upstream.json: how to load the upstream, its hash, layers, sizes. Later stages
    # read the SSL model from there only.
    local path=$ssl_path
    if [ -n "$ssl_pretrain_config" ] && { [ "$ssl_retrain" = true ] || [ -z "$ssl_path" ] || [ ! -e "$ssl_path" ]; }; then
        local pre=$workdir/exp/ssl_pretrain set
        if [ -f "$pre/.done" ]; then
            log "pre-trained SSL model already in $pre/model"
        else
            for set in "$train_set" "$valid_set"; do
                [ -f "$pre/$set.ipa" ] || python -m espnet2_ext.bin.ssl_model phonemes --data_dir "$data/$set" --out "$pre/$set.ipa"
            done
            log "pre-training the demo SSL model (log: $logdir/ssl_pretrain.log)"
            ${train_cmd} --num_threads 2 "$logdir/ssl_pretrain.log" \
                python -m espnet2_ext.bin.ssl_model pretrain --config "$ssl_pretrain_config" --train_dir "$data/$train_set" \
                --valid_dir "$data/$valid_set" --labels_dir "$pre" --out_dir "$pre"
        fi
        path=$pre/model
    elif [ -n "$ssl_path" ]; then
        log "using the SSL checkpoint $ssl_path"
    fi
    local opts=()
    [ -n "$path" ] && opts+=(--path "$path")
    [ -n "$ssl_cache_dir" ] && opts+=(--cache_dir "$ssl_cache_dir")
    python -m espnet2_ext.bin.ssl_model check --name "$ssl_upstream" "${opts[@]}" --out "$workdir/exp/ssl/upstream.json"
}

stage_score() {
    # Every system's hypotheses live in exp/<system>/decode/<set>/text; scores go to exp/<system>/score/.
    local found=0 dir system sets set
    for dir in "$workdir"/exp/*/decode; do
        [ -d "$dir" ] || continue
        system=$(basename "$(dirname "$dir")")
        sets=()
        for set in $test_sets; do [ -f "$dir/$set/text" ] && sets+=("$set"); done
        [ ${#sets[@]} -gt 0 ] || { log "$system: no hypotheses for any of: $test_sets"; continue; }
        python -m espnet2_ext.bin.score --data_dir "$data" --hyp_dir "$dir" --sets "${sets[@]}" \
            --out_dir "$(dirname "$dir")/score" --fs "$fs" >/dev/null
        log "$system: scores in exp/$system/score/scores.md"
        found=$((found + 1))
    done
    (( found > 0 )) || die "no hypotheses found under $workdir/exp/*/decode/<set>/text; run the decode stage first"
}

log "workdir=$workdir config=$config stages $stage..$stop_stage backend=$cmd_backend"
for ((n = stage; n <= stop_stage && n <= last_stage; n++)); do
    run_stage "$n"
done
log "all requested stages finished"
