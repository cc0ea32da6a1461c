#!/usr/bin/env bash
# The GPU check, under 5 minutes on one H100: the CUDA tests (attention backends against the
# reference in bf16 and fp32, training steps under bf16 autocast) and their mutation check, then
# the training-step benchmark for the small and medium presets with torch.compile off and on, and
# the attention backends at bf16. Everything lands as JSON in the output folder.
#
#   benchmarks/gpu_check.sh [OUT_DIR]    (default: $OUT if set, else benchmarks/results/gpu_check)
#
# Needs torch with CUDA, numpy, pytest and accelerate's dependencies (safetensors, tqdm); not
# xformers, decord or PyAV. PEAK_TFLOPS (default 989, a dense-bf16 H100 SXM) sets the MFU's
# denominator; set it for other cards.
set -euo pipefail
out="${1:-${OUT:-}}"
[ -z "$out" ] || out="$(realpath -m -- "$out")"  # relative to the caller's folder
cd "$(dirname "$0")/.."
out="${out:-$PWD/benchmarks/results/gpu_check}"
python="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if ! "$python" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    echo "gpu_check.sh: no CUDA device visible to torch ($("$python" -c 'import torch; print(torch.__version__)')); run it on a GPU machine" >&2
    exit 1
fi
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >"$out/nvidia_smi.csv" 2>/dev/null || true
began=$(date +%s)

# 1. CUDA tests (~1 min with inductor's compilation), junit XML turned into JSON; failures are
# reported, the benchmarks still run
tests_rc=0
"$python" -m pytest -m cuda tests/test_attention.py tests/test_cuda.py tests/test_train.py -q -rs \
    -p no:cacheprovider \
    --junitxml "$out/cuda_tests.xml" || tests_rc=$?
"$python" - "$out/cuda_tests.xml" "$out/cuda_tests.json" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
cases = []
for case in ET.parse(sys.argv[1]).iter("testcase"):
    outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
    detail = next((c.get("message", "") for c in case if c.tag != "system-out"), "")
    cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                  "seconds": float(case.get("time", 0)), "detail": detail[:500]})
summary = {o: sum(c["outcome"] == o for c in cases) for o in ("passed", "failure", "error", "skipped")}
json.dump({"summary": summary, "tests": cases}, open(sys.argv[2], "w"), indent=2)
print("cuda tests:", summary)
EOF

# 1b. The CUDA breakage of tests/mutation_check.py (~30 s): a 0.5% bf16 loss error must fail them
"$python" tests/mutation_check.py bf16_loss_off >"$out/mutation_check.txt" 2>&1 || tests_rc=$?
tail -n 2 "$out/mutation_check.txt"

# 2. Training-step throughput (~3 min with compilation): 2 presets x 2 stages x compile off/on,
# the MFU target (medium, stage 2) first. No setting starts after 180 s; the JSON is rewritten
# after each setting, so a run stopped by the timeout keeps what it measured.
bench_rc=0
timeout 240 "$python" benchmarks/bench_train_step.py --device cuda --presets medium small \
    --stages 2 1 --compile off on --dtype bf16 --peak_tflops "${PEAK_TFLOPS:-989}" \
    --warmup 3 --steps 10 --max_seconds 180 --out "$out/gpu_train_step.json" >/dev/null \
    || bench_rc=$?

# 3. Attention backends at bf16 (~10 s): SDPA against the naive reference
"$python" benchmarks/bench_attention_backends.py --device cuda --dtype bf16 --heads 16 \
    --tokens 32768 --repeats 10 --out "$out/gpu_attention_backends.json" >/dev/null \
    || bench_rc=$?

echo "gpu_check.sh: done in $(($(date +%s) - began)) s; JSON in $out" >&2
"$python" - "$out/gpu_train_step.json" <<'EOF'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    numbers = [f"{k}={r[k]:.4g}" for k in ("examples_per_s", "tokens_per_s", "mfu") if r.get(k)]
    print(f"{r['preset']} stage {r['stage']} {r['dtype']} compile {r['compile']} batch "
          f"{r['batch_size']}:", *numbers, r.get("error", r.get("skipped", "")))
EOF
if [ "$tests_rc" -ne 0 ] || [ "$bench_rc" -ne 0 ]; then
    echo "gpu_check.sh: failed (tests exit $tests_rc, benchmarks exit $bench_rc)" >&2
    exit 1
fi
