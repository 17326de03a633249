#!/usr/bin/env bash
# Forward and training-step times of the score network at 64²: PyTorch (CPU), candle's stock
# conv2d/group-norm path, and ours (prior::fast_conv + prior::ops), for the 2 M-parameter
# U-Net of the performance issue (nf 32, ch_mult 1-2-2-2, 2 res blocks) and the default
# prior's network (priors/default/config.json), at batch 16 and 64. Runs alternate between
# the three so that all see the same machine load; /proc/loadavg is printed around each.
#
# usage: benches/run_prior_bench.sh [REPS]        (median of REPS timed runs, default 3)
#        ROUNDS=R repeats each alternation R times (default 1): the table gives the median of
#        the rounds and the range of the per-round ratios, as the machine's speed drifts by
#        10-30 % over minutes here.
# env:   THREADS (default 2) for rayon and torch; TORCH_VENV (default /work/venv-torch, made
#        with `python3 -m venv` and torch installed if missing); PAUSE_PID: a process to
#        SIGSTOP during each measurement (and SIGCONT after); CONFIGS, BATCHES, IMPLS to narrow;
#        CLOCK=thread to time the CPU time of the main thread instead of wall time (with
#        THREADS=1 that is all the work, a measure that survives a busy machine).
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
THREADS=${THREADS:-2}
VENV=${TORCH_VENV:-/work/venv-torch}
CONFIGS=${CONFIGS:-"unet2m default"}
BATCHES=${BATCHES:-"16 64"}
IMPLS=${IMPLS:-"torch ours stock"}
ROUNDS=${ROUNDS:-1}
CLOCK=${CLOCK:-wall}

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q torch --index-url https://download.pytorch.org/whl/cpu ||
        "$VENV/bin/pip" install -q torch
fi

BIN=$(cargo bench --bench prior_compare --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "prior_compare" in m["target"]["name"]:
        print(m["executable"])')
[ -x "$BIN" ] || { echo "could not build benches/prior_compare.rs" >&2; exit 1; }

# As the CLI's tune_malloc(), for both PyTorch and us: glibc's defaults serve every buffer of
# 32 MiB or more (a batch-64 activation) by a fresh mmap whose pages fault in on first touch;
# both frameworks run faster from a heap that is never trimmed (PyTorch's batch-64 training
# step of the 2 M U-Net: 6.3 s with mmap, 3.7 s without).
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=268435456
export MALLOC_MMAP_MAX_=${MALLOC_MMAP_MAX_:-0}
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS

resume() { [ -n "${PAUSE_PID:-}" ] && kill -CONT "$PAUSE_PID" 2>/dev/null || true; }
trap resume EXIT

OUT=$(mktemp)
for cfg in $CONFIGS; do
    for b in $BATCHES; do
        for round in $(seq "$ROUNDS"); do
        for imp in $IMPLS; do
            [ -n "${PAUSE_PID:-}" ] && kill -STOP "$PAUSE_PID"
            l0=$(cut -d' ' -f1 /proc/loadavg)
            if [ "$imp" = torch ]; then
                line=$("$VENV/bin/python" benches/prior_torch.py --config "$cfg" --batch "$b" \
                    --reps "$REPS" --threads "$THREADS" --clock "$CLOCK")
            else
                line=$("$BIN" --config "$cfg" --batch "$b" --impl "$imp" --reps "$REPS" --clock "$CLOCK")
            fi
            resume
            l1=$(cut -d' ' -f1 /proc/loadavg)
            echo "$line round=$round load=$l0..$l1" | tee -a "$OUT"
        done
        done
    done
done

python3 - "$OUT" "$CLOCK" "$THREADS" "$ROUNDS" <<'EOF'
import sys
from statistics import median
rows = {}
for l in open(sys.argv[1]):
    kv = dict(f.split("=", 1) for f in l.split())
    rows.setdefault((kv["config"], int(kv["batch"]), kv["impl"]), {})[kv["round"]] = kv
print(f"\nclock: {sys.argv[2]}, threads: {sys.argv[3]}, rounds: {sys.argv[4]}")
print(f"{'config':8} {'batch':>5} {'what':10} {'params':>8} {'torch s':>8} {'stock s':>8} {'ours s':>8} "
      f"{'ours/torch':>10} {'(rounds)':>11} {'stock/torch':>11}")
nan = float("nan")
for (cfg, b) in sorted({(k[0], k[1]) for k in rows}, key=lambda k: (k[0] != "unet2m", k[1])):
    for what, key in (("forward", "forward_s"), ("train step", "train_step_s")):
        per = {i: {r: float(kv[key]) for r, kv in rows.get((cfg, b, i), {}).items()} for i in ("torch", "stock", "ours")}
        v = {i: median(per[i].values()) if per[i] else nan for i in per}
        ratios = [per["ours"][r] / per["torch"][r] for r in per["ours"] if r in per["torch"]]
        span = f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else ""
        p = next(next(iter(rows[k].values()))["params"] for k in rows if k[:2] == (cfg, b))
        print(f"{cfg:8} {b:>5} {what:10} {p:>8} {v['torch']:8.3f} {v['stock']:8.3f} {v['ours']:8.3f} "
              f"{v['ours'] / v['torch']:10.2f} {span:>11} {v['stock'] / v['torch']:11.2f}")
EOF
rm -f "$OUT"
