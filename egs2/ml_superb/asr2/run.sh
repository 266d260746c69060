#!/usr/bin/env bash
# ESPnet-style recipe entry point for real data (ML-SUPERB 1h + LibriSpeech-100): runs the project's
# recipe driver with one of two recipe configs, chosen by --system (the first option):
#   twostep_xls_r       (default) the two-step method on XLS-R 300M: step 0, step 1, units of every
#                       system of conf/units/ml_superb.yaml, step 2; conf/recipe/ml_superb.yaml;
#                       outputs next to this script
#   challenge_baseline  the Interspeech 2024 DSU challenge baseline itself: WavLM-large layer 21,
#                       K=2000, no step 0/1; conf/recipe/ml_superb_wavlm_baseline.yaml; outputs in
#                       challenge_baseline/ next to this script
# Every other option goes to run.sh, e.g.
#   ./run.sh --system challenge_baseline --mlsuperb_root /data/ml_superb --librispeech_root /data/LibriSpeech
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
system=twostep_xls_r
if [ "${1:-}" = --system ]; then
    [ $# -ge 2 ] || { echo "$0: --system needs a value: twostep_xls_r or challenge_baseline" >&2; exit 2; }
    system=$2
    shift 2
fi
case $system in
    twostep_xls_r) exec "$root/run.sh" --config "$root/conf/recipe/ml_superb.yaml" --workdir "$here" "$@" ;;
    challenge_baseline)
        exec "$root/run.sh" --config "$root/conf/recipe/ml_superb_wavlm_baseline.yaml" \
            --workdir "$here/challenge_baseline" "$@" ;;
    *) echo "$0: unknown --system '$system': twostep_xls_r or challenge_baseline" >&2; exit 2 ;;
esac
