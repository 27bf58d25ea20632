#!/usr/bin/env bash
# The one command: make the TRL virtualenvs (once), then run every stage through this project
# and TRL, interleaved, plus the bare PyTorch loop; the table lands in benchmarks/results/table.md.
#
#   bash benchmarks/run_all.sh                 # 3 repeats, 1 torch thread per run
#   bash benchmarks/run_all.sh --repeats 5 --threads 2 --stages sft,ppo
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$HERE/setup_trl.sh"
exec python "$HERE/compare.py" "$@"
