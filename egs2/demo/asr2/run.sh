#!/usr/bin/env bash
# ESPnet-style recipe entry point: runs the project's recipe driver with this recipe's config.
# Outputs (data/, dump/, exp/, log/) are written next to this script.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$here/../../../run.sh" --config "$here/../../../conf/recipe/demo.yaml" --workdir "$here" "$@"
