#!/usr/bin/env bash
# The GPU suite (benchmarks/gpu_suite.py): train step, 250-prompt generation and RL throughput on
# one H100/H200 in under 8 minutes, one JSON.
#   benchmarks/gpu_suite.sh --tokenizer DIR [--out gpu_suite.json]
#   benchmarks/gpu_suite.sh --tiny            # tiny shapes on a CPU: checks the suite itself
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m benchmarks.gpu_suite "$@"
