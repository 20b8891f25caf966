#!/usr/bin/env bash
# One GPU check, ready to run (issue 16), from anywhere: installs the project (--no-deps, offline), then
# data, bases, CUDA tests, a train + eval smoke run, training throughput at batch 128 and a slice of the
# study, each step with its own time limit, all within 12 minutes; prints one table. See gpu_check.py.
#
#   bash benchmarks/gpu_check.sh                           # on the GPU machine
#   bash benchmarks/gpu_check.sh --base DIR --work DIR     # a real MiniLM directory; keep what was made
#   bash benchmarks/gpu_check.sh --device cpu --dry-run    # every step at tiny sizes on the CPU
set -uo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
