#!/usr/bin/env bash
# The GPU measurements of issue 14 in ONE command, on a machine with one NVIDIA GPU:
#
#   scripts/gpu_check.sh [OUT [TARBALL]]   # default OUT: experiments/results/gpu
#
# runs every part of `qnas bench gpu` (QuadraConv2d, Table II blocks, supernet steps, a search
# and a retrain end to end, latencies, training options) as its own process under its own time
# limit, then rewrites OUT/report.md from the CSVs. The limits add up to 7.25 minutes (7.75
# with every kill's grace), so the whole check ends within 8 minutes. A part that overruns is
# killed and marked in the report; the others still run. Each part also gets a budget inside it
# (--budget-s: its limit less start-up) and measures less, saying so, rather than run over.
# With TARBALL (a path outside OUT, e.g. "$OUT/gpu.tgz" on a lent machine that returns only a
# few files) the results are also packed into that one file, checkpoints (*.pt) left out.
#
# The qnas to run: $QNAS if set (e.g. QNAS=".venv/bin/qnas"), else .venv/bin/qnas when there,
# else `python3 -m qnas` from this checkout (a machine with torch, timm, pandas, click,
# pyyaml, scikit-learn and scipy installed needs no other set-up). $GPU_CHECK_ARGS is added to
# every part: GPU_CHECK_ARGS="--accelerator cpu --tiny" tries the script itself without a GPU.
set -u
cd "$(dirname "$0")/.." || exit 2
OUT=${1:-experiments/results/gpu}
TARBALL=${2:-}
if [ -n "${QNAS:-}" ]; then
    read -r -a RUN <<< "$QNAS"
elif [ -x .venv/bin/qnas ]; then
    RUN=(.venv/bin/qnas)
else
    RUN=(python3 -m qnas)
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
started=$(date +%s)
say() { echo "gpu_check: $*" | tee -a "$LOG"; }

if ! "${RUN[@]}" bench gpu --help > /dev/null 2>> "$LOG"; then
    say "cannot start qnas with '${RUN[*]}' (see $LOG); set QNAS to a working qnas"
    exit 2
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || say "nvidia-smi did not answer"

# part LIMIT_S: one part under `timeout`; its own budget is the limit less 15 s of start-up
part() {
    local name=$1 limit=$2
    say "$name: up to ${limit} s"
    # shellcheck disable=SC2086  # GPU_CHECK_ARGS: several words on purpose
    timeout --kill-after=5 "$limit" "${RUN[@]}" bench gpu --out "$OUT" --parts "$name" \
        --budget-s $((limit - 15)) ${GPU_CHECK_ARGS:-} 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        say "$name: exit $rc$([ "$rc" -ge 124 ] && echo " (killed at its ${limit} s limit)")"
    fi
}

part quadraconv 30
part blocks 80
part supernet 45
part e2e 160
part latency 80
part options 40
"${RUN[@]}" bench gpu --out "$OUT" --parts report 2>&1 | tee -a "$LOG"
say "done in $(( $(date +%s) - started )) s; see $OUT/report.md"
if [ -n "$TARBALL" ]; then
    tar -czf "$TARBALL" --exclude='*.pt' --exclude='*.pt.sha256' --exclude='tensorboard' \
        -C "$OUT" . && say "packed into $TARBALL ($(du -h "$TARBALL" | cut -f1))"
fi
