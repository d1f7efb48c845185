#!/usr/bin/env bash
# Run every fuzz harness for N seconds each (default 20), one after the other.
#   fuzz/run.sh [SECONDS] [HARNESS...]        e.g. fuzz/run.sh 20   or   fuzz/run.sh 300 tokenizer
# New corpus entries go to $FUZZ_WORKDIR/<harness> (default /tmp/xmppd-fuzz), crashes to
# $FUZZ_WORKDIR/artifacts/; the seeds in fuzz/corpus/ are only read.  Exits non-zero on
# the first finding.  PYTHON selects the interpreter (default: python on PATH);
# FUZZ_SEED fixes libFuzzer's seed (CI uses one, so that its short run is repeatable).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(tokenizer jid sasl wsframe clustercodec serialize)
python="${PYTHON:-python}"
work="${FUZZ_WORKDIR:-/tmp/xmppd-fuzz}"
mkdir -p "$work/artifacts"

declare -A max_len=([tokenizer]=4096 [jid]=1024 [sasl]=1024 [wsframe]=4096 [clustercodec]=4096 [serialize]=2048)

for name in "${harnesses[@]}"; do
    mkdir -p "$work/$name"
    echo "== fuzz_$name: ${seconds}s"
    # -timeout bounds one input (a hang is a finding); -rss_limit_mb catches blow-ups.
    FUZZ_ARTIFACTS="$work/artifacts" "$python" "fuzz/fuzz_$name.py" \
        "$work/$name" "fuzz/corpus/$name" \
        -dict="fuzz/$name.dict" \
        -max_total_time="$seconds" \
        -seed="${FUZZ_SEED:-0}" \
        -max_len="${max_len[$name]}" \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/$name-"
done
