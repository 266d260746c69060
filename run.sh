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
slurm_config=           # slurm backend: job options -> sbatch options (default: $CMD_SLURM_CONFIG or conf/slurm.conf)
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
valid_max_utts=0        # the trainings of steps 0-2 validate on this many valid_set utterances, spread evenly (0 = all)
test_sets="test_1h dev_clean dev_other test_clean test_other"
ssl_upstream=xls_r_300m # s3prl upstream name (xls_r_300m, wavlm_large, hf_wav2vec2_custom, hubert_local, ...)
ssl_path=               # local SSL checkpoint (file or directory); empty for s3prl hub names
ssl_cache_dir=          # s3prl download cache holding hub checkpoints (offline: must be filled beforehand)
ssl_pretrain_config=    # demo: pre-train the small SSL model with this config (conf/ssl/*.yaml)
ssl_retrain=false       # demo: pre-train even when ssl_path (the kept checkpoint) exists
ngpu=0                  # GPUs per training job (0 = CPU; N > 1: DDP through ESPnet's espnet2.bin.launch)
train_threads=2         # CPU threads of a training job (local backend: shared by the trainings running at once)
max_train_jobs=1        # stages 5 and 9 train up to this many models at once (one per step-1 upstream / unit system)
gpu_inference=false     # decoding (stages 4, 6, 10) and SSL feature/unit dumping (7, 8) on one GPU per job
typecheck=false         # true: Python jobs keep ESPnet's run-time type checks (typeguard) and asserts; false: python -O
parallel_chains=false   # stages 4-10 as two chains at once: step0 (step 0 and what reads its model) and ssl (the rest)
chain=                  # stages 4-10 of one chain only: ssl | step0 (empty: both; parallel_chains sets it for its runs)
step0_config=           # step 0 (CTC fine-tuning of the SSL model): ESPnet config, conf/step0/*.yaml; empty = off
step0_tag=              # name of the step-0 run (default: the config's file name without .yaml)
step0_model=valid.loss.ave.pth  # step-0 checkpoint that is checked and exported (ESPnet's n-best average)
step0_check_utts=0      # valid_set utterances decoded to check step 0 converged (0 = all)
step0_max_cer=0.95      # step 0 fails when its dev CER is at least this (CTC stuck in the blank phase)
step1_upstreams="step0 ssl"  # step 1 runs exp/step1_<X>/ on exp/<X>/upstream.json, X in: step0 (fine-tuned) ssl (as pre-trained); empty = off
step1_config=conf/step1/demo.yaml  # step 1 (continuous ASR, learnable layer weights): ESPnet config, conf/step1/*.yaml
step1_model=valid.loss.ave.pth  # step-1 checkpoint whose layer weights are exported and which decodes the test sets
step1_decode_config=conf/decode/step1_demo.yaml  # decoding options of the continuous model (beam, ctc_weight)
step1_max_ctc_infeasible=0.05  # stage 5 fails when more train utterances than this are too short for step 1's CTC
units_config=conf/units/demo.yaml  # unit systems (stages 7-8): k-means and BPE settings, systems: name -> features
unit_systems=           # unit systems to build (space-separated names from units_config; empty = all)
step2_config=conf/step2/demo.yaml  # step 2 (discrete-unit ASR, ESPnet MT task, model discrete_asr): conf/step2/*.yaml
step2_token_type=char   # step-2 target tokens: char (data/token_list/char) | bpe (data/token_list/tgt_bpe<N>, real data)
step2_nbpe=6500         # target BPE size with step2_token_type bpe (the challenge's 6500)
step2_max_ctc_infeasible=0.05  # stage 9 fails when more train utterances than this are too short for CTC
step2_model=valid.acc.ave.pth  # step-2 checkpoint that decodes (ESPnet's n-best average by valid accuracy)
step2_decode_config=conf/decode/step2_demo.yaml  # step-2 decoding options (beam, ctc_weight)
step2_seeds=            # extra step-2 training seeds per unit system (space-separated): exp/step2_<system>.seed<S>, same units and config; RESULTS.md gives mean and sd over the seeds
pack_systems=twostep    # step-2 systems packed by stage 13 (space-separated; each -> exp/pack/<system>{,.tar.gz})
pack_copy_ssl=true      # copy the SSL checkpoint into the pack (false: the pack references its path)

option_names=(stage stop_stage config workdir nj max_jobs_run cmd_backend slurm_config corpus_config corpus_seed
    mlsuperb_root librispeech_root mlsuperb_setup lid reserved_langs max_train_seconds fs
    train_set valid_set valid_max_utts test_sets ssl_upstream ssl_path ssl_cache_dir ssl_pretrain_config ssl_retrain
    ngpu train_threads max_train_jobs gpu_inference typecheck parallel_chains chain step0_config step0_tag step0_model step0_check_utts step0_max_cer
    step1_upstreams step1_config step1_model step1_decode_config step1_max_ctc_infeasible
    units_config unit_systems
    step2_config step2_token_type step2_nbpe step2_max_ctc_infeasible step2_model step2_decode_config step2_seeds
    pack_systems pack_copy_ssl)
path_options=" config workdir slurm_config corpus_config mlsuperb_root librispeech_root ssl_path ssl_cache_dir ssl_pretrain_config step0_config step1_config step1_decode_config units_config step2_config step2_decode_config "

# ---- stages: number|name|what it does ----
stage_table=(
    "1|corpus|Synthesise the demo corpus (ML-SUPERB + LibriSpeech layouts; skipped for real data)"
    "2|data|Data preparation: corpora -> Kaldi data dirs (train, dev, test_1h, dev/test_clean/other)"
    "3|ssl|SSL model: pre-train the demo SSL model (or take the kept one), load and record the upstream"
    "4|finetune|Step 0: CTC fine-tuning of the SSL model and export of the fine-tuned upstream"
    "5|step1|Step 1: continuous ASR with learnable layer weights over all SSL layers"
    "6|weights|Export layer_weights.json and its chart; decode and score the continuous model"
    "7|kmeans|Learn k-means on fixed-weight features of every unit system (learned, single-layer, uniform, MFCC)"
    "8|units|Dump units for every set, dedup, source BPE, unit statistics"
    "9|step2|Step 2: train the discrete-unit ASR models"
    "10|decode|Decode the test sets with the step-2 models; challenge submission files"
    "11|score|Score hypotheses: CER per set and language, LibriSpeech micro-average, bitrate"
    "12|results|Write RESULTS.md and the per-language chart"
    "13|pack|Pack a model directory for audio-in inference"
)

usage() {
    cat <<EOF
Usage: $0 [--stage N] [--stop_stage N] [--config conf/recipe/demo.yaml] [--name value ...]

Stages:
EOF
    local row n name what
    for row in "${stage_table[@]}"; do
        IFS='|' read -r n name what <<<"$row"
        printf '  %2s %-9s %s\n' "$n" "$name" "$what"
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
  ./run.sh --stage 5 --stop_stage 6 --step1_upstreams ssl  # step 1 on the pre-trained SSL model only
  ./run.sh --stage 4 --stop_stage 10 --chain ssl          # stages 4-10 of what needs no step 0 (--parallel_chains)
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
[[ $ngpu =~ ^[0-9]+$ ]] || die "--ngpu must be a non-negative integer (got '$ngpu')"
[[ $train_threads =~ ^[1-9][0-9]*$ ]] || die "--train_threads must be a positive integer (got '$train_threads')"
[[ $max_train_jobs =~ ^[1-9][0-9]*$ ]] || die "--max_train_jobs must be a positive integer (got '$max_train_jobs')"
[[ $gpu_inference == true || $gpu_inference == false ]] || die "--gpu_inference must be true or false (got '$gpu_inference')"
[[ $typecheck == true || $typecheck == false ]] || die "--typecheck must be true or false (got '$typecheck')"
[[ $parallel_chains == true || $parallel_chains == false ]] || die "--parallel_chains must be true or false (got '$parallel_chains')"
case $chain in ''|ssl|step0) ;; *) die "--chain must be ssl, step0 or empty for both (got '$chain')" ;; esac
[[ $step2_seeds =~ ^[[:space:]0-9]*$ ]] || die "--step2_seeds must be space-separated non-negative integers (got '$step2_seeds')"
[[ $valid_max_utts =~ ^[0-9]+$ ]] || die "--valid_max_utts must be a non-negative integer (got '$valid_max_utts')"
[[ $step0_check_utts =~ ^[0-9]+$ ]] || die "--step0_check_utts must be a non-negative integer (got '$step0_check_utts')"
case $mlsuperb_setup in 1h|10min) ;; *) die "--mlsuperb_setup must be 1h or 10min (got '$mlsuperb_setup')" ;; esac
# ESPnet's data options are "path,name,type" and Kaldi lists split on whitespace: outputs cannot live there
case $workdir in *[[:space:],]*) die "--workdir '$workdir' contains whitespace or a comma, which ESPnet's" \
    "'path,name,type' data options and Kaldi-style lists cannot hold; choose a path without them" ;; esac

# ESPnet decorates its classes and functions with typeguard's @typechecked, which re-parses and
# recompiles them at import: 4-5 of the ~11 s that importing ESPnet's MT task takes in every job on
# 2 CPU cores. Under python -O (PYTHONOPTIMIZE, inherited by every job, sbatch --export=ALL included)
# @typechecked returns the function unchanged, typeguard's documented switch for production runs; the
# project's own checks raise errors, never assert. Measured: the tiny recipe's stages 4-13 in 243 s
# instead of 339, every model, unit and hypothesis identical (README, "The recipe").
if [ "$typecheck" = false ]; then export PYTHONOPTIMIZE=1; else unset PYTHONOPTIMIZE; fi

# shellcheck source=cmd.sh
. ./cmd.sh
[ -n "$max_jobs_run" ] && train_cmd+=" --max_jobs_run $max_jobs_run" && decode_cmd+=" --max_jobs_run $max_jobs_run" \
    && cuda_cmd+=" --max_jobs_run $max_jobs_run"
# Per-utterance inference jobs (decoding, SSL feature and unit dumps): one GPU each with --gpu_inference
# true (ESPnet's option of that name), else on CPU, whatever --ngpu says (that is for training).
if [ "$gpu_inference" = true ]; then
    infer_cmd="$cuda_cmd --gpu 1" infer_ngpu=1
else
    infer_cmd=$decode_cmd infer_ngpu=0
fi

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
    local n=$1 name what
    (( n >= stage && n <= stop_stage )) || return 0
    IFS='|' read -r _ name what <<<"${stage_table[n-1]}"
    log "stage $n ($name): $what"
    local start=$SECONDS
    "stage_$name"
    log "stage $n ($name): done in $((SECONDS - start)) s"
    stage_time "$n" "$name" "$start" "$chain"
}

stage_time() {  # stage_time N NAME START [CHAIN]: a row of log/stage_times.tsv, for RESULTS.md
    # (the last row of a stage is its latest run; CHAIN: the row of a stage run inside that chain)
    mkdir -p "$logdir"
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$((SECONDS - $3))" "$(date '+%Y-%m-%dT%H:%M:%S')" "${4:-}" \
        >>"$logdir/stage_times.tsv"
}

# ---- stages 4-10 as two chains (--parallel_chains, --chain) ----
# Everything on the pre-trained SSL model (step 1 on it, the unit systems that read neither the
# step-0 model nor weights learned on it, MFCC units, their step 2 and decoding) needs nothing of
# step 0: chain "ssl" runs it while chain "step0" runs step 0 and everything after it. Both are
# this script with --chain: the same stages, on their share of the upstreams, systems and runs.
kill_tree() {  # kill_tree PID: SIGTERM to PID and all its descendants, children first
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$c"; done
    kill -TERM "$1" 2>/dev/null || true
}

in_chain() {  # in_chain X: whether work of chain X (ssl | step0) runs in this invocation
    [ -z "$chain" ] || [ "$chain" = "$1" ]
}

chain_upstreams() {  # the step1_upstreams of this invocation's chain, space-separated
    local x out=()
    for x in $step1_upstreams; do in_chain "$x" && out+=("$x"); done
    echo "${out[*]}"
}

run_chains() {  # run_chains FIRST LAST: stages FIRST..LAST (within 4-10) as chains ssl and step0, at once
    # Each chain is this script with --chain X and the same options, logged to log/chain_X.log and
    # echoed here with an [X] prefix; a failed chain is named after the other one finished. On the
    # local backend a chain's training jobs get half of train_threads (1-thread trainings make more
    # updates per core: one 2-thread step-0 training did 1.18x the updates of one thread), and chain
    # ssl runs at lower CPU priority (nice 10): chain step0 holds the longest path through the
    # stages (step 0, then step 1 on its model, ...), and chain ssl fills the cores it leaves idle.
    local first=$1 last=$2 start=$SECONDS x args=() name p
    for name in "${!cli[@]}"; do args+=("--$name" "${cli[$name]}"); done
    args+=(--config "$config" --stage "$first" --stop_stage "$last" --parallel_chains false)
    if [ "$cmd_backend" = local ]; then args+=(--train_threads $(( train_threads > 1 ? train_threads / 2 : 1 ))); fi
    log "stages $first-$last as two chains at once: step0 (step 0 and what reads its model) and ssl" \
        "(the rest); logs: $logdir/chain_step0.log, $logdir/chain_ssl.log"
    mkdir -p "$logdir"
    local -A pids=()
    for x in step0 ssl; do
        local prio=()
        [ "$cmd_backend" = local ] && [ "$x" = ssl ] && prio=(nice -n 10)
        ( set -o pipefail; "${prio[@]}" "$MAIN_ROOT/run.sh" "${args[@]}" --chain "$x" 2>&1 \
            | tee "$logdir/chain_$x.log" | sed -u "s/^/[$x] /" >&2 ) &
        pids[$x]=$!
    done
    # Jobs started in the background ignore SIGINT in a script: an interrupted run stops the chains itself.
    trap 'trap - INT TERM; for p in "${pids[@]}"; do kill_tree "$p"; done; die "interrupted: stopped both chains"' INT TERM
    local failed=()
    for x in step0 ssl; do wait "${pids[$x]}" || failed+=("$x (log: $logdir/chain_$x.log)"); done
    trap - INT TERM
    (( ${#failed[@]} == 0 )) || die "stages $first-$last: chain ${failed[*]} failed"
    log "stages $first-$last: both chains done in $((SECONDS - start)) s"
    stage_time "$first-$last" chains "$start"
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

with_lock() {  # with_lock FILE COMMAND...: COMMAND (a function too) while holding an exclusive flock on FILE
    # The two chains (--parallel_chains) share a few outputs (the character token list, step 1's
    # shapes, step 2's target BPE): the first to need one makes it while the other waits, then finds it.
    local fd
    mkdir -p "$(dirname "$1")"
    exec {fd}>>"$1"
    flock "$fd"
    "${@:2}"
    exec {fd}>&-
}

# ---- helpers shared by the ESPnet ASR runs of stage 4 (step 0) and stage 5 (step 1) ----
char_token_list() {  # char_token_list LOGNAME: sets char_token_opts (--token_type char, the token list, nlsyms)
    with_lock "$data/token_list/char.lock" make_char_token_list "$@"
}

make_char_token_list() {  # make_char_token_list LOGNAME: char_token_list's work (holding its lock)
    # Character token list in ESPnet's format (espnet2.bin.tokenize_text, as asr.sh makes it), made
    # once by the first stage that needs it: <blank>, <unk>, the characters by frequency with
    # <space> for spaces, <sos/eos> last.
    local tokens=$data/token_list/char/tokens.txt text_opts=()
    if [ "$lid" = true ]; then  # keep the [iso3] language tags whole (ESPnet's non-linguistic symbols)
        local nlsyms=$data/token_list/nlsyms.txt
        mkdir -p "$(dirname "$nlsyms")"
        cut -d' ' -f2- "$data/$train_set/text" | grep -oE '^\[[^]]+\]' | sort -u >"$nlsyms.tmp" || true
        mv "$nlsyms.tmp" "$nlsyms"
        text_opts+=(--non_linguistic_symbols "$nlsyms")
    fi
    if [ ! -f "$tokens" ]; then
        mkdir -p "$(dirname "$tokens")"
        ${train_cmd} "$logdir/$1/tokens.log" python -m espnet2.bin.tokenize_text --token_type char \
            --input "$data/$train_set/text" --output "$tokens.tmp" --field 2- --write_vocabulary true \
            --add_symbol "<blank>:0" --add_symbol "<unk>:1" --add_symbol "<sos/eos>:-1" "${text_opts[@]}"
        mv "$tokens.tmp" "$tokens"
    fi
    char_token_opts=(--token_type char --token_list "$tokens" "${text_opts[@]}")
}

char_asr_data() {  # char_asr_data LOGNAME: sets char_data_opts (token list + train/valid data options)
    char_token_list "$1"
    char_data_opts=(--use_preprocessor true "${char_token_opts[@]}"
        --train_data_path_and_name_and_type "$data/$train_set/wav.scp,speech,sound"
        --train_data_path_and_name_and_type "$data/$train_set/text,text,text"
        --valid_data_path_and_name_and_type "$data/$valid_set/wav.scp,speech,sound"
        --valid_data_path_and_name_and_type "$data/$valid_set/text,text,text")
}

char_asr_shapes() {  # char_asr_shapes CONFIG STATS_DIR LOGNAME: shapes for ESPnet's batching; sets char_shape_opts
    with_lock "$2.lock" make_char_asr_shapes "$@"
}

make_char_asr_shapes() {  # make_char_asr_shapes CONFIG STATS_DIR LOGNAME: char_asr_shapes' work (holding its lock)
    # --input_size 1 builds the model without its frontend, so the SSL model is not run over the
    # training set for feature statistics no config here reads (normalize: null or utterance_mvn).
    local stats=$2
    if [ ! -f "$stats/.done" ]; then
        valid_keys "$data/$valid_set/wav.scp" "$stats/valid_keys"
        ${train_cmd} "$logdir/$3/stats.log" python -m espnet2_ext.bin.asr_train --collect_stats true \
            --config "$1" --input_size 1 --ngpu 0 "${char_data_opts[@]}" \
            --train_shape_file "$data/$train_set/wav.scp" --valid_shape_file "$stats/valid_keys" \
            --output_dir "$stats"
        touch "$stats/.done"
    fi
    char_shape_opts=(--train_shape_file "$stats/train/speech_shape" --train_shape_file "$stats/train/text_shape"
        --valid_shape_file "$stats/valid/speech_shape" --valid_shape_file "$stats/valid/text_shape"
        --fold_length 80000 --fold_length 150)
}

valid_keys() {  # valid_keys TABLE OUT: TABLE's lines of the valid_max_utts utterances the trainings validate on
    # ESPnet's collect_stats reads the keys of its --valid_shape_file only, and the shapes it writes
    # are the validation set of the training: validating on fewer utterances needs no other data.
    python -m espnet2_ext.bin.prepare_data --log_level WARNING subset --table "$1" --max_utts "$valid_max_utts" --out "$2"
}

upstream_spec() {  # upstream_spec UPSTREAM_JSON: its {"name","path","cache_dir"} as JSON (JSON is YAML: paths stay strings)
    python -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))["upstream"]))' "$1"
}

train_job() {  # train_job LOG COMMAND...: one ESPnet training run on --ngpu GPUs (0: CPU), resumable
    # CPU: ${train_cmd}; one GPU: ${cuda_cmd} --gpu 1; N > 1 GPUs: ESPnet's own launcher, which submits
    # one ${cuda_cmd} --gpu N job running N DDP processes (--multiprocessing_distributed true), one
    # CPU core each, as egs2/TEMPLATE/asr1/asr.sh does. It appends --ngpu itself. CPU threads:
    # train_job_threads (train_threads, or its share when parallel_trainings runs several at once).
    local log=$1 threads=${train_job_threads:-$train_threads}
    shift
    if (( ngpu > 1 )); then
        python -m espnet2.bin.launch --cmd "$cuda_cmd --num_threads $ngpu" --log "$log" --ngpu "$ngpu" \
            --num_nodes 1 --multiprocessing_distributed true -- "$@"
    elif (( ngpu == 1 )); then
        ${cuda_cmd} --gpu 1 --num_threads "$threads" "$log" "$@" --ngpu 1
    else
        # ESPnet's --use_amp is CUDA's; on CPU a config's cpu_amp_dtype (espnet2_ext/tasks/cpu_amp.py) does it
        ${train_cmd} --num_threads "$threads" "$log" "$@" --ngpu 0 --use_amp false
    fi
}

train_models() {  # train_models WHAT PREFIX PREPARE FIT NAME...: train exp/PREFIX_NAME for every NAME
    # Skips the finished ones (.done), runs PREPARE NAME for the others one after the other (checks,
    # shapes: they may share files), then FIT NAME max_train_jobs at once (parallel_trainings).
    local what=$1 prefix=$2 prepare=$3 fit=$4 name todo=()
    shift 4
    for name in "$@"; do
        if [ -f "$workdir/exp/${prefix}_$name/.done" ]; then
            log "$what $name already trained: $workdir/exp/${prefix}_$name (remove it to retrain)"
        else
            "$prepare" "$name"
            todo+=("$name")
        fi
    done
    (( ${#todo[@]} > 0 )) || return 0
    parallel_trainings "$fit" "${todo[@]}"
}

in_parallel() {  # in_parallel WHAT N FUNC NAME...: FUNC NAME for every NAME, N at once; fails naming the failed ones
    # Each FUNC call runs in a background subshell (as Kaldi recipes background their decoding
    # loops): it reads the caller's variables and cannot set them. Waits for all before failing.
    local what=$1 n=$2 func=$3
    shift 3
    if (( n <= 1 || $# <= 1 )); then
        local name
        for name in "$@"; do "$func" "$name"; done
        return 0
    fi
    local status_dir
    mkdir -p "$logdir"
    status_dir=$(mktemp -d "$logdir/.parallel.XXXXXX")
    local name
    for name in "$@"; do
        while (( $(jobs -rp | wc -l) >= n )); do wait -n || true; done
        # the inner subshell keeps set -e; the outer records its exit status whatever it is
        ( set +e; ( set -e; "$func" "$name" ); echo $? >"$status_dir/$name" ) &
    done
    wait
    local failed=()
    for name in "$@"; do
        [ "$(cat "$status_dir/$name" 2>/dev/null)" = 0 ] || failed+=("$name")
    done
    rm -rf "$status_dir"
    (( ${#failed[@]} == 0 )) || die "$what failed for: ${failed[*]} (see the messages above and their logs)"
}

parallel_trainings() {  # parallel_trainings FUNC NAME...: FUNC NAME for every NAME, max_train_jobs at once
    # The models of stages 5 and 9 are independent. On the local backend the trainings running at
    # once share the train_threads cores (one thread each when they are more than the cores; on 2
    # CPU cores two 1-thread trainings did 1.4x the updates of one 2-thread training); on slurm
    # every job gets its own train_threads.
    local func=$1
    shift
    local at_once=$(( $# < max_train_jobs ? $# : max_train_jobs ))
    train_job_threads=$train_threads
    if [ "$cmd_backend" = local ] && (( at_once > 1 )); then
        train_job_threads=$(( train_threads / at_once ))
        (( train_job_threads >= 1 )) || train_job_threads=1
    fi
    (( at_once <= 1 )) || log "training $* ($at_once at once, $train_job_threads CPU thread(s) each)"
    in_parallel training "$at_once" "$func" "$@"
    unset train_job_threads
}

stage_finetune() {
    # Step 0: fine-tune the SSL model with CTC on the labelled data (ESPnet's trainer, our ASRTask),
    # check that it left the CTC blank phase (dev CER after epoch 1 and of the final model), and
    # export the fine-tuned upstream. Writes exp/step0/upstream.json (same schema as
    # exp/ssl/upstream.json), which later stages read the SSL model from.
    local exp=$workdir/exp/step0 ssl_json=$workdir/exp/ssl/upstream.json
    in_chain step0 || { log "step 0 is in chain step0, not $chain"; return 0; }
    [ -f "$ssl_json" ] || die "$ssl_json not found; run stage 3 (ssl) first"
    if [ -f "$exp/.done" ]; then
        log "step 0 already done: $exp/upstream.json (remove $exp to redo it)"
        return 0
    fi
    if [ -z "$step0_config" ]; then
        log "step0_config is empty: step 0 is off; exp/step0/upstream.json is a copy of exp/ssl/upstream.json" \
            "(later stages use the SSL model as it is, not fine-tuned)"
        mkdir -p "$exp"
        cp "$ssl_json" "$exp/upstream.json"
        touch "$exp/.done"
        return 0
    fi
    [ -f "$step0_config" ] || die "--step0_config $step0_config not found"
    local tag=${step0_tag:-$(basename "$step0_config" .yaml)}
    mkdir -p "$exp"
    if [ -f "$exp/tag" ] && [ "$(<"$exp/tag")" != "$tag" ]; then
        die "$exp holds the step-0 run '$(<"$exp/tag")', not '$tag': remove $exp to train '$tag'" \
            "(or pass --step0_tag $(<"$exp/tag") to finish that run)"
    fi
    echo "$tag" >"$exp/tag"
    log "step 0 run '$tag' with $step0_config in $exp"

    # 1. Character token list and data options (shared with step 1), 2. shapes for ESPnet's batching
    char_asr_data step0
    local data_opts=("${char_data_opts[@]}")
    char_asr_shapes "$step0_config" "$exp/stats" step0

    # 3. Training, CTC only, the upstream of stage 3 (JSON is YAML: the path stays a string).
    local upstream
    upstream=$(upstream_spec "$ssl_json")
    local train_opts=(--config "$step0_config" "${data_opts[@]}" --frontend_conf "upstream=$upstream"
        "${char_shape_opts[@]}" --use_tensorboard false --use_matplotlib false
        --resume true --output_dir "$exp")

    # The convergence check decodes (CTC, beam 1: a check, not the reported system) a fixed subset of
    # valid_set on CPU and scores it with the project's CER.
    local check=$exp/check
    python -m espnet2_ext.bin.step0 check_set --data_dir "$data/$valid_set" --max_utts "$step0_check_utts" \
        --out_dir "$check/data/$valid_set"
    step0_check() {  # step0_check MODEL LABEL
        local model=$exp/$1 dir=$check/decode_$2/$valid_set
        [ -e "$model" ] || die "$model not found: it is removed once a later epoch is better; remove $exp and rerun"
        log "step 0: decoding $valid_set with $(basename "$model") (logs: $logdir/step0/decode_$2.*.log)"
        rm -rf "$dir"
        ${infer_cmd} JOB=1:"$nj" "$logdir/step0/decode_$2.JOB.log" python -m espnet2_ext.bin.asr_inference \
            --ngpu "$infer_ngpu" --batch_size 1 --beam_size 1 --ctc_weight 1.0 --lm_weight 0.0 \
            --data_path_and_name_and_type "$check/data/$valid_set/wav.scp,speech,sound" \
            --asr_train_config "$exp/config.yaml" --asr_model_file "$model" --output_dir "$dir/output.JOB" \
            --shard JOB --nshard "$nj"
        python -m espnet2_ext.bin.sharded_decoding merge --decode_dir "$check/decode_$2" --sets "$valid_set" \
            --src_pattern "$check/data/{set}/wav.scp"
        python -m espnet2_ext.bin.score --data_dir "$check/data" --hyp_dir "$check/decode_$2" --sets "$valid_set" \
            --out_dir "$check/score_$2" --allow_missing >/dev/null
    }
    # Epoch 1 runs alone so its checkpoint can be decoded before ESPnet removes it (it keeps the
    # n-best epochs only); the full run then resumes from checkpoint.pth.
    if [ ! -f "$check/score_1epoch/scores.json" ]; then
        log "step 0: training epoch 1 (log: $logdir/step0/train_epoch1.log)"
        train_job "$logdir/step0/train_epoch1.log" python -m espnet2_ext.bin.asr_train "${train_opts[@]}" --max_epoch 1
        step0_check 1epoch.pth 1epoch
    fi
    if [ ! -f "$exp/.train.done" ]; then
        log "step 0: training (log: $logdir/step0/train.log)"
        train_job "$logdir/step0/train.log" python -m espnet2_ext.bin.asr_train "${train_opts[@]}"
        touch "$exp/.train.done"
    fi
    [ -f "$check/score_final/scores.json" ] || step0_check "$step0_model" final

    # 4. Before/after dev CER; stops the recipe when CTC never left the blank phase.
    python -m espnet2_ext.bin.step0 dev_cer --exp_dir "$exp" --set "$valid_set" \
        --first "$check/score_1epoch/scores.json" --final "$check/score_final/scores.json" \
        --final_model "$step0_model" --max_cer "$step0_max_cer" --tag "$tag" --config "$step0_config" \
        --out "$exp/dev_cer.json" || exit 1

    # 5. The fine-tuned upstream as a standalone checkpoint, recorded like stage 3's.
    local exported name path
    exported=$(python -m espnet2_ext.bin.step0 export --upstream_json "$ssl_json" --model_file "$exp/$step0_model" \
        --config "$exp/config.yaml" --out "$exp/upstream")
    IFS=$'\t' read -r name path <<<"$exported"
    python -m espnet2_ext.bin.ssl_model check --name "$name" --path "$path" --out "$exp/upstream.json"
    touch "$exp/.done"
}

stage_step1() {
    # Step 1: for each upstream source X of step1_upstreams, an ESPnet ASR run (our ASRTask) on a
    # learnable softmax-weighted sum of the hidden states of the FROZEN SSL model in
    # exp/X/upstream.json: exp/step1_X/. Its checkpoints hold the layer weights and the ASR model,
    # not the SSL weights. Stage 6 reads the weights out and decodes with it. The runs are checked
    # one after the other, then trained max_train_jobs at once.
    if [ -z "${step1_upstreams// /}" ]; then log "step 1 is off (--step1_upstreams is empty)"; return 0; fi
    [ -f "$step1_config" ] || die "--step1_config $step1_config not found"
    local x upstreams
    for x in $step1_upstreams; do
        case $x in step0 | ssl) ;; *) die "--step1_upstreams: unknown upstream source '$x' (step0 or ssl)" ;; esac
    done
    upstreams=$(chain_upstreams)
    [ -n "$upstreams" ] || { log "step 1: none of --step1_upstreams '$step1_upstreams' is in chain $chain"; return 0; }
    # shellcheck disable=SC2086  # space-separated names
    train_models "step 1 on" step1 step1_prepare step1_fit $upstreams
}

step1_prepare() {  # step1_prepare X: check the data of exp/step1_X against the SSL model of exp/X/upstream.json
    local x=$1 exp=$workdir/exp/step1_$1 upstream_json=$workdir/exp/$1/upstream.json
    [ -f "$upstream_json" ] || die "$upstream_json not found; run stage $([ "$x" = ssl ] && echo "3 (ssl)" || echo "4 (finetune)") first"
    local tag
    tag=$(basename "$step1_config" .yaml)
    mkdir -p "$exp"
    if [ -f "$exp/tag" ] && [ "$(<"$exp/tag")" != "$tag" ]; then
        die "$exp holds the step-1 run '$(<"$exp/tag")', not '$tag': remove $exp to train '$tag'" \
            "(or pass --step1_config with the config of '$(<"$exp/tag")' to finish that run)"
    fi
    echo "$tag" >"$exp/tag"
    char_asr_data "step1_$x"
    # CTC needs an encoder frame per target token, and an utterance too short for the encoder's
    # subsampling stops ESPnet's training (TooShortUttError): check before training, naming them.
    python -m espnet2_ext.bin.step1 check_lengths --config "$step1_config" --upstream_json "$upstream_json" \
        --data_dir "$data/$train_set" "${char_token_opts[@]}" --max_infeasible "$step1_max_ctc_infeasible" \
        --out "$exp/length_check.json" || exit 1
    # one set of shapes for every step-1 run: they read the same data with the same tokens
    char_asr_shapes "$step1_config" "$workdir/exp/step1_stats" step1_stats
}

step1_fit() {  # step1_fit X: train exp/step1_X (after step1_prepare, which set the data and shape options)
    local x=$1 exp=$workdir/exp/step1_$1 upstream
    upstream=$(upstream_spec "$workdir/exp/$x/upstream.json")
    local train_opts=(--config "$step1_config" "${char_data_opts[@]}" "${char_shape_opts[@]}"
        --frontend_conf "upstream=$upstream" --use_tensorboard false --use_matplotlib false
        --resume true --output_dir "$exp")
    log "step 1 run '$(<"$exp/tag")' on $x in $exp (log: $logdir/step1_$x/train.log)"
    train_job "$logdir/step1_$x/train.log" python -m espnet2_ext.bin.asr_train "${train_opts[@]}"
    touch "$exp/.done"
}

stage_weights() {
    # For each step-1 run: the learned layer weights (layer_weights.json + chart), then the
    # continuous model's hypotheses for the test sets (exp/step1_X/decode/<set>/text) and scores.
    if [ -z "${step1_upstreams// /}" ]; then log "step 1 is off (--step1_upstreams is empty)"; return 0; fi
    [ -f "$step1_decode_config" ] || die "--step1_decode_config $step1_decode_config not found"
    local x
    for x in $(chain_upstreams); do step1_weights_and_decode "$x"; done
}

step1_weights_and_decode() {  # step1_weights_and_decode X
    local x=$1 exp=$workdir/exp/step1_$1
    [ -f "$exp/.done" ] || die "$exp is not trained; run stage 5 (step1) first"
    if [ -f "$exp/.weights.done" ]; then
        log "step 1 on $x already exported and scored: $exp/score/scores.md (remove $exp/.weights.done to redo)"
        return 0
    fi
    local model=$exp/$step1_model
    python -m espnet2_ext.bin.layer_weights export --config "$exp/config.yaml" --model_file "$model" \
        --upstream_json "$workdir/exp/$x/upstream.json" --out_json "$exp/layer_weights.json" \
        --out_png "$exp/layer_weights.png"
    local set sets=() todo=()
    for set in $test_sets; do
        [ -f "$data/$set/wav.scp" ] || { log "no $data/$set: not decoded"; continue; }
        sets+=("$set")
        [ -f "$exp/decode/$set/text" ] || todo+=("$set")  # written last: a set with it is decoded
    done
    [ ${#sets[@]} -gt 0 ] || die "none of the test sets ($test_sets) has a data dir under $data"
    if [ ${#todo[@]} -gt 0 ]; then
        # nj jobs, each decoding its shard of every set (ESPnet is imported once per job)
        log "step 1 on $x: decoding ${todo[*]} with $(basename "$model") (logs: $logdir/step1_$x/decode.*.log)"
        for set in "${todo[@]}"; do rm -rf "$exp/decode/$set"; done
        ${infer_cmd} JOB=1:"$nj" "$logdir/step1_$x/decode.JOB.log" python -m espnet2_ext.bin.asr_inference \
            --config "$step1_decode_config" --ngpu "$infer_ngpu" \
            --data_path_and_name_and_type "$data/{set}/wav.scp,speech,sound" --sets "${todo[@]}" \
            --asr_train_config "$exp/config.yaml" --asr_model_file "$model" \
            --output_dir "$exp/decode/{set}/output.JOB" --shard JOB --nshard "$nj"
        python -m espnet2_ext.bin.sharded_decoding merge --decode_dir "$exp/decode" --sets "${todo[@]}" \
            --src_pattern "$data/{set}/wav.scp"
    fi
    cp "$step1_decode_config" "$exp/decode/decode.yaml"  # how it was decoded (RESULTS.md shows it)
    python -m espnet2_ext.bin.score --data_dir "$data" --hyp_dir "$exp/decode" --sets "${sets[@]}" \
        --out_dir "$exp/score" --fs "$fs" >/dev/null
    log "step 1 on $x: weights in $exp/layer_weights.{json,png}, scores in $exp/score/scores.md"
    touch "$exp/.weights.done"
}

unit_system_names() {  # the systems of units_config selected by unit_systems (and in chain), one per line
    python -m espnet2_ext.bin.units list --units_config "$units_config" --systems "$unit_systems" --chain "$chain"
}

unit_device_opts() {  # sets unit_opts: SSL forwards of the feature and unit dumps (${infer_cmd} jobs)
    unit_opts=(--device cpu)
    (( infer_ngpu > 0 )) && unit_opts=(--device cuda)
    return 0
}

stage_kmeans() {
    # Per unit system (conf/units/*.yaml): resolve its feature spec (upstream.json of exp/ssl or
    # exp/step0, step 1's layer_weights.json), stream the features of a `portion` of train to disk
    # (sharded; systems on the same SSL model and subset share one SSL forward per utterance), learn
    # faiss k-means on them (memory bounded by K x max_points_per_centroid frames), save the unit
    # model and its km_<K>.mdl export.
    [ -f "$units_config" ] || die "--units_config $units_config not found"
    local systems system exp todo=()
    systems=$(unit_system_names) || exit 1
    unit_device_opts
    for system in $systems; do
        exp=$workdir/exp/kmeans/$system
        if [ -f "$exp/.done" ]; then log "unit model $system already learned: $exp (remove it to relearn)"; continue; fi
        python -m espnet2_ext.bin.units spec --units_config "$units_config" --system "$system" --workdir "$workdir"
        todo+=("$system")
    done
    (( ${#todo[@]} > 0 )) || return 0
    local groups group group_opts
    groups=$(python -m espnet2_ext.bin.units groups --learning --units_config "$units_config" --workdir "$workdir" \
        --systems "${todo[*]}") || exit 1
    mapfile -t groups <<<"$groups"
    for group in "${groups[@]}"; do  # one group's features at a time on disk
        group_opts=()
        for system in $group; do group_opts+=(--system "$system"); done
        log "features of the k-means subset of $train_set for $group, one SSL pass (logs: $logdir/kmeans/${group// /+}/feats.*.log)"
        ${infer_cmd} JOB=1:"$nj" "$logdir/kmeans/${group// /+}/feats.JOB.log" python -m espnet2_ext.bin.units dump_feats \
            --units_config "$units_config" "${group_opts[@]}" --workdir "$workdir" --data_dir "$data/$train_set" \
            "${unit_opts[@]}" --shard JOB --nshard "$nj"
        for system in $group; do
            exp=$workdir/exp/kmeans/$system
            ${train_cmd} --num_threads 2 "$logdir/kmeans/$system/learn.log" python -m espnet2_ext.bin.units learn \
                --units_config "$units_config" --system "$system" --workdir "$workdir"
            rm -rf "$exp/feats"  # only k-means reads them; the unit model is complete
            touch "$exp/.done"
            log "unit system $system: unit model in $exp (learn log: $logdir/kmeans/$system/learn.log)"
        done
    done
}

stage_units() {
    # Per unit system: units of every set (sharded; systems on the same SSL model share one SSL
    # forward per utterance), dedup + one character per unit, source BPE trained on train's unit
    # strings, BPE tokens of every set, and per-set statistics.
    [ -f "$units_config" ] || die "--units_config $units_config not found"
    local systems system exp out set sets=() todo=()
    systems=$(unit_system_names) || exit 1
    unit_device_opts
    for set in "$train_set" "$valid_set" $test_sets; do
        [ -f "$data/$set/wav.scp" ] && sets+=("$set")
    done
    [ -f "$data/$train_set/wav.scp" ] || die "$data/$train_set not found; run stage 2 (data) first"
    for system in $systems; do
        exp=$workdir/exp/kmeans/$system out=$workdir/dump/units/$system
        if [ -f "$out/.done" ]; then log "units of $system already dumped: $out (remove it to redo)"; continue; fi
        [ -f "$exp/.done" ] || die "$exp has no unit model; run stage 7 (kmeans) first"
        todo+=("$system")
    done
    (( ${#todo[@]} > 0 )) || return 0
    local groups group group_opts
    groups=$(python -m espnet2_ext.bin.units groups --workdir "$workdir" --systems "${todo[*]}") || exit 1
    mapfile -t groups <<<"$groups"
    for group in "${groups[@]}"; do
        group_opts=()
        for system in $group; do
            group_opts+=(--model_dir "$workdir/exp/kmeans/$system" --out_root "$workdir/dump/units/$system")
        done
        log "units of ${sets[*]} for $group, one SSL pass (logs: $logdir/units/${group// /+}/dump.*.log)"
        ${infer_cmd} JOB=1:"$nj" "$logdir/units/${group// /+}/dump.JOB.log" python -m espnet2_ext.bin.units dump_units \
            "${group_opts[@]}" --data_root "$data" --sets "${sets[*]}" "${unit_opts[@]}" --shard JOB --nshard "$nj"
    done
    # single-process CPU work per system (merge the shards, BPE, statistics): nj systems at once
    in_parallel "finishing the units" "$nj" units_finish "${todo[@]}"
}

units_finish() {  # units_finish SYSTEM: (in stage_units, which sets sets) unit strings, source BPE, statistics
    local system=$1 out=$workdir/dump/units/$1
    python -m espnet2_ext.bin.units finish_sets --data_root "$data" --out_root "$out" --sets "${sets[*]}" --nshard "$nj"
    python -m espnet2_ext.bin.units bpe --units_config "$units_config" --system "$system" --units_dir "$out" \
        --train_set "$train_set" --sets "${sets[*]}"
    python -m espnet2_ext.bin.units stats --units_config "$units_config" --system "$system" --units_dir "$out" \
        --data_root "$data" --sets "${sets[*]}" --eval_sets "$test_sets" --fs "$fs"
    touch "$out/.done"
    log "unit system $system: units, unit strings and BPE tokens in $out; statistics in $out/stats.md"
}

step2_systems() {  # the unit systems step 2 trains on: unit_systems, or every dump/units/<system>/ of stage 8
    if [ -f "$units_config" ]; then unit_system_names; return; fi
    in_chain step0 || return 0  # no units config to tell the chains apart: chain step0 trains them all
    local dir
    for dir in "$workdir"/dump/units/*/; do [ -f "$dir/.done" ] && basename "$dir"; done
    return 0
}

step2_target_opts() {  # sets step2_tgt_opts: the target token type and list (char, or BPE trained on train)
    case $step2_token_type in
        char) char_token_list step2; step2_tgt_opts=("${char_token_opts[@]}") ;;
        bpe)
            local dir=$data/token_list/tgt_bpe$step2_nbpe
            [ -f "$dir/tokens.txt" ] || with_lock "$dir.lock" make_tgt_bpe "$dir"
            step2_tgt_opts=(--token_type bpe --bpemodel "$dir/bpe.model" --token_list "$dir/tokens.txt") ;;
        *) die "--step2_token_type must be char or bpe (got '$step2_token_type')" ;;
    esac
}

make_tgt_bpe() {  # make_tgt_bpe DIR: step 2's target BPE in DIR unless there (step2_target_opts holds its lock)
    [ -f "$1/tokens.txt" ] || python -m espnet2_ext.bin.step2 tgt_bpe --text "$data/$train_set/text" \
        --vocab_size "$step2_nbpe" --out_dir "$1"
}

step2_runs() {  # the step-2 runs, one per line: every system, then <system>.seed<S> for each of step2_seeds
    local systems system seed
    systems=$(step2_systems) || return 1
    for system in $systems; do
        echo "$system"
        for seed in $step2_seeds; do echo "$system.seed$seed"; done
    done
}

stage_step2() {
    # Step 2: per unit system, a discrete-unit ASR model (ESPnet's MT task, model discrete_asr, our
    # registries: espnet2_ext.bin.discrete_asr_train) from dump/units/<system>/<set>/text (source,
    # with the system's BPE and BPE-dropout from the config) to data/<set>/text; exp/step2_<system>/,
    # and exp/step2_<system>.seed<S>/ for each of step2_seeds (the same training with --seed S).
    # The systems are checked nj at once, then the runs trained max_train_jobs at once.
    [ -f "$step2_config" ] || die "--step2_config $step2_config not found"
    local runs
    runs=$(step2_runs) || exit 1
    if [ -z "$runs" ]; then
        # a chain may have none of the systems; the other one has them, or it is an error
        [ -n "$(chain='' step2_runs)" ] || die "no unit systems in $workdir/dump/units; run stages 7-8 first"
        log "step 2: no unit system of chain $chain"
        return 0
    fi
    step2_target_opts
    # 1. the length check and shapes of every system with a run left to train, nj systems at once
    #    (a seed repeat trains on its system's data and shapes)
    local run todo=()
    for run in $runs; do
        [ -f "$workdir/exp/step2_$run/.done" ] && continue
        [[ " ${todo[*]} " == *" ${run%.seed*} "* ]] || todo+=("${run%.seed*}")
    done
    in_parallel "step-2 preparation" "$nj" step2_prepare "${todo[@]}"
    # 2. the trainings, max_train_jobs at once
    # shellcheck disable=SC2086  # one name per line
    train_models "step 2" step2 step2_run_dir step2_fit $runs
}

step2_data_opts() {  # step2_data_opts SYSTEM: sets step2_opts, the tokens and data of its training
    local units=$workdir/dump/units/$1
    step2_opts=(--use_preprocessor true "${step2_tgt_opts[@]}" --src_token_type bpe
        --src_bpemodel "$units/src_bpe/bpe.model" --src_token_list "$units/src_bpe/tokens.txt"
        --train_data_path_and_name_and_type "$units/$train_set/text,src_text,text"
        --train_data_path_and_name_and_type "$data/$train_set/text,text,text"
        --valid_data_path_and_name_and_type "$units/$valid_set/text,src_text,text"
        --valid_data_path_and_name_and_type "$data/$valid_set/text,text,text")
}

step2_run_dir() { mkdir -p "$workdir/exp/step2_$1"; }  # step2_run_dir RUN: exp/step2_RUN

step2_prepare() {  # step2_prepare SYSTEM: length check and shapes of exp/step2_SYSTEM (its seed repeats use them too)
    local system=$1
    local exp=$workdir/exp/step2_$system units=$workdir/dump/units/$system
    [ -f "$units/.done" ] || die "$units is incomplete; run stage 8 (units) first"
    step2_data_opts "$system"
    mkdir -p "$exp"
    # 1. CTC needs at least one encoder frame per target token: fail early, with figures, if the
    #    source is too short for the target (BPE too coarse, too much subsampling).
    python -m espnet2_ext.bin.step2 check_lengths --config "$step2_config" --src_tokens "$units/$train_set/tokens" \
        --text "$data/$train_set/text" "${step2_tgt_opts[@]}" --max_infeasible "$step2_max_ctc_infeasible" --out "$exp/length_check.json" || exit 1
    # 2. shapes for ESPnet's batching
    local stats=$exp/stats
    if [ ! -f "$stats/.done" ]; then
        valid_keys "$units/$valid_set/text" "$stats/valid_keys"
        ${train_cmd} "$logdir/step2/$system/stats.log" python -m espnet2_ext.bin.discrete_asr_train \
            --collect_stats true --config "$step2_config" --ngpu 0 "${step2_opts[@]}" \
            --train_shape_file "$units/$train_set/text" --valid_shape_file "$stats/valid_keys" --output_dir "$stats"
        touch "$stats/.done"
    fi
}

step2_fit() {  # step2_fit RUN: train exp/step2_RUN (resumes from checkpoint.pth after an interruption)
    local run=$1 system=${1%.seed*} exp=$workdir/exp/step2_$1
    local stats=$workdir/exp/step2_$system/stats seed_opts=()  # a seed repeat's shapes are its system's
    if [ "$run" != "$system" ]; then seed_opts=(--seed "${run##*.seed}"); fi  # after --config: overrides its seed
    step2_data_opts "$system"
    log "step 2 $run: training (log: $logdir/step2/$run/train.log)"
    local train_opts=(--config "$step2_config" "${step2_opts[@]}"
        --train_shape_file "$stats/train/src_text_shape" --train_shape_file "$stats/train/text_shape"
        --valid_shape_file "$stats/valid/src_text_shape" --valid_shape_file "$stats/valid/text_shape"
        --fold_length 500 --fold_length 150 --use_tensorboard false --use_matplotlib false
        --resume true --output_dir "$exp" "${seed_opts[@]}")
    train_job "$logdir/step2/$run/train.log" python -m espnet2_ext.bin.discrete_asr_train "${train_opts[@]}"
    [ -e "$exp/$step2_model" ] || die "$exp/$step2_model not found after training; see $logdir/step2/$run/train.log"
    touch "$exp/.done"
}

stage_decode() {
    # Per step-2 run (step2_runs): joint CTC/attention beam search over test_sets, nj jobs each decoding
    # its shard of every set (espnet2_ext.bin.discrete_asr_inference); exp/step2_<run>/decode/<set>/text
    # and the challenge submission files in exp/step2_<run>/submission/.
    [ -f "$step2_decode_config" ] || die "--step2_decode_config $step2_decode_config not found"
    local runs run units exp dec sets=() set
    runs=$(step2_runs) || exit 1
    for set in $test_sets; do [ -f "$data/$set/text" ] && sets+=("$set"); done
    [ ${#sets[@]} -gt 0 ] || die "none of the test sets exists in $data: $test_sets"
    for run in $runs; do
        units=$workdir/dump/units/${run%.seed*} exp=$workdir/exp/step2_$run dec=$workdir/exp/step2_$run/decode
        if [ -f "$dec/.done" ]; then log "step 2 $run already decoded: $dec (remove it to redo)"; continue; fi
        [ -f "$exp/.done" ] || die "$exp is not trained; run stage 9 (step2) first"
        rm -rf "$dec"
        log "step 2 $run: decoding ${sets[*]} (logs: $logdir/step2/$run/decode.*.log)"
        ${infer_cmd} JOB=1:"$nj" "$logdir/step2/$run/decode.JOB.log" python -m espnet2_ext.bin.discrete_asr_inference \
            --ngpu "$infer_ngpu" --config "$step2_decode_config" --batch_size 1 \
            --data_path_and_name_and_type "$units/{set}/text,src_text,text" --sets "${sets[@]}" \
            --mt_train_config "$exp/config.yaml" --mt_model_file "$exp/$step2_model" \
            --output_dir "$dec/{set}/output.JOB" --shard JOB --nshard "$nj"
        python -m espnet2_ext.bin.sharded_decoding merge --decode_dir "$dec" --sets "${sets[@]}" \
            --src_pattern "$units/{set}/text"
        python -m espnet2_ext.bin.step2 submission --units_dir "$units" --decode_dir "$dec" --sets "${sets[@]}" \
            --out_dir "$exp/submission"
        cp "$step2_decode_config" "$dec/decode.yaml"  # how it was decoded (RESULTS.md shows it)
        touch "$dec/.done"
    done
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
        local streams=()
        if [[ $system == step2_* ]]; then  # bitrate of the source tokens the discrete ASR model consumes
            local units=$workdir/dump/units/${system#step2_}
            units=${units%.seed*}  # a seed repeat (step2_seeds) reads its system's units
            streams=(--stream "units:$(python -m espnet2_ext.bin.step2 vocab_size --bpemodel "$units/src_bpe/bpe.model"):$units/{set}/tokens")
        fi
        python -m espnet2_ext.bin.score --data_dir "$data" --hyp_dir "$dir" --sets "${sets[@]}" \
            --out_dir "$(dirname "$dir")/score" --fs "$fs" "${streams[@]}" >/dev/null
        log "$system: scores in exp/$system/score/scores.md"
        found=$((found + 1))
    done
    (( found > 0 )) || die "no hypotheses found under $workdir/exp/*/decode/<set>/text; run the decode stage first"
}

stage_results() {
    # RESULTS.md + per_language_cer.png in the workdir, from every exp/<system>/score/scores.json.
    python -m espnet2_ext.bin.results --workdir "$workdir" \
        --title "Results: recipe $(basename "$config" .yaml), work directory $(basename "$(dirname "$workdir")")/$(basename "$workdir")"
    log "results: $workdir/RESULTS.md"
}

stage_pack() {
    # Per system in pack_systems: exp/pack/<system>/ (+ .tar.gz) with everything that decodes raw audio
    # (python -m espnet2_ext.bin.recognize --model_dir exp/pack/<system> ...).
    [[ $pack_copy_ssl == true || $pack_copy_ssl == false ]] || die "--pack_copy_ssl must be true or false (got '$pack_copy_ssl')"
    local system
    for system in $pack_systems; do
        python -m espnet2_ext.bin.pack --workdir "$workdir" --system "$system" --out_dir "$workdir/exp/pack/$system" \
            --model_file "$step2_model" --decode_config "$step2_decode_config" --copy_ssl "$pack_copy_ssl" || exit 1
        log "pack: $workdir/exp/pack/$system (+ .tar.gz); decode audio with: python -m espnet2_ext.bin.recognize" \
            "--model_dir $workdir/exp/pack/$system --wav_scp <wav.scp> --output <text>"
    done
}

log "workdir=$workdir config=$config stages $stage..$stop_stage backend=$cmd_backend${chain:+ chain=$chain}"
for ((n = stage; n <= stop_stage && n <= last_stage; n++)); do
    if [ "$parallel_chains" = true ] && [ -z "$chain" ] && (( n >= 4 && n <= 10 )); then
        last=$(( stop_stage < 10 ? stop_stage : 10 ))
        run_chains "$n" "$last"
        n=$last
        continue
    fi
    run_stage "$n"
done
log "all requested stages finished"
