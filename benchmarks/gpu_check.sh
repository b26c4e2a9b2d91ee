#!/usr/bin/env bash
# The one GPU check (issue 14): under ~8 minutes on one GPU, one results file.
#   bash benchmarks/gpu_check.sh [--dry-run] [--out FILE]
# (a) the CUDA tests (pytest -m cuda), (b) benchmarks/mfu.py on the CIFAR-10 and FFHQ-256 paper recipes for
# fp32 / bf16 / fp16 x {none, channels_last} and bf16 x {compile, compile+channels_last}, (c) sampling network calls/s (in mfu.py's
# table), (d) everything appended to one file, (e) the heat operator's sweep on the GPU. --dry-run runs the CPU-safe parts on the CPU (the CUDA tests skip,
# mfu.py on the quickstart recipe for two steps) to check the script itself.
set -u
cd "$(dirname "$0")/.."
DRY=0
OUT="benchmarks/results/gpu_check.txt"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; OUT="${OUT%.txt}_dryrun.txt" ;;
    --out) shift; OUT="$1" ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
log() { echo "$@" | tee -a "$OUT"; }
log "# genproc GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
python - <<'EOF' 2>&1 | tee -a "$OUT"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
for i in range(torch.cuda.device_count()):
    print("device", i, torch.cuda.get_device_name(i), torch.cuda.get_device_capability(i))
EOF
status=0
log "## (a) CUDA tests"
timeout 240 python -m pytest -q -m cuda tests/test_cuda.py 2>&1 | tail -15 | tee -a "$OUT" || status=1
log "## (b, c) training-step and sampling FLOP utilisation"
if [ "$DRY" = 1 ]; then
  timeout 120 python benchmarks/mfu.py --recipes quickstart --precisions fp32 --steps 2 --warmup 1 --peak-size 512 \
    2>&1 | tee -a "$OUT" || status=1
else
  timeout 150 python benchmarks/mfu.py --recipes ihdm_cifar ihdm_ffhq256 --precisions fp32 bf16 fp16 \
    --knobs none,channels_last --steps 10 --warmup 3 2>&1 | tee -a "$OUT" || status=1
  # compilation costs about a minute per configuration: bf16 only
  timeout 240 python benchmarks/mfu.py --recipes ihdm_cifar ihdm_ffhq256 --precisions bf16 \
    --knobs compile,compile+channels_last --steps 10 --warmup 3 2>&1 | tee -a "$OUT" || status=1
fi
log "## (e) the heat operator on the GPU: matmul vs fft by image side, auto / best"
if [ "$DRY" = 1 ]; then
  timeout 120 python benchmarks/heat_operator.py --repeats 2 --warmup 1 --sweep --sweep-elems 65536 2>&1 | tail -16 \
    | tee -a "$OUT" || status=1
else
  timeout 90 python benchmarks/heat_operator.py --device cuda --repeats 20 --sweep 2>&1 | tee -a "$OUT" || status=1
fi
log "## done, status $status; results in $OUT"
exit $status
