#!/usr/bin/env bash
# End-to-end anchor benchmark: our `dirty` against WSClean, our gridder/degridder against
# ducc0.wgridder, on one large simulated VLA Measurement Set, same ε, size, pixel and threads.
#
#   benches/run_anchors.sh [WORKDIR]          (default /tmp/interf-image-anchors)
#
# Settings (environment): VENV (/work/venv-bench), THREADS (2), EPS (1e-6), SIZE (1024),
# SCALE_ASEC (default: a third of the finest fringe, from the MS builder), MS_ARGS (passed to
# make_large_ms.py, e.g. "--times 414"), OURS_ARGS ("--wgridding on": WSClean's w-gridder and
# ducc0 always correct for w), NICE (10: the machines are shared; every run gets the same).
#
# Installs what is missing: a venv with python-casacore, ducc0 and numpy; the Debian packages
# wsclean and time (needs root or sudo). Builds the MS once (kept between runs), then times
#   wsclean -niter 0 -use-wgridder -no-small-inversion   and   interf-image dirty
# with /usr/bin/time -v (wall, max RSS), and the ms2dirty/dirty2ms pairs (median of 3 inside
# benches/anchor_gridder.rs and benches/anchor_ducc0.py), and prints a table of ratios.
# Nothing is written outside WORKDIR except the cargo target directory and the venv.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-${WORK:-/tmp/interf-image-anchors}}
VENV=${VENV:-/work/venv-bench}
THREADS=${THREADS:-2}
EPS=${EPS:-1e-6}
SIZE=${SIZE:-1024}
NICE=${NICE:-10}
OURS_ARGS=${OURS_ARGS:---wgridding on}
MS_ARGS=${MS_ARGS:-}

say() { printf '\n== %s\n' "$*"; }
die() { printf 'run_anchors: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root for: $* (install it yourself and rerun)"; fi
}

# --- dependencies --------------------------------------------------------------------------
say "dependencies"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || die "cannot create the venv $VENV (Debian: apt-get install python3-venv)"
fi
if ! "$VENV/bin/python" -c 'import casacore.tables, ducc0, numpy' 2>/dev/null; then
    "$VENV/bin/pip" install --quiet python-casacore ducc0 numpy || die "pip install failed"
fi
missing=()
command -v wsclean >/dev/null || missing+=(wsclean)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
    as_root apt-get update -qq || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" ||
        die "apt-get install ${missing[*]} failed"
fi
echo "venv $VENV: $("$VENV/bin/python" -c 'import ducc0, casacore; print("ducc0", ducc0.__version__, "python-casacore", casacore.__version__)')"
echo "$(wsclean --version 2>/dev/null | grep -m1 -i version)"

# --- build ---------------------------------------------------------------------------------
say "build (release)"
(cd "$REPO" && nice -n "$NICE" cargo build --release --bin interf-image &&
    nice -n "$NICE" cargo bench --bench anchor_gridder --no-run) ||
    echo "run_anchors: build failed; the steps that need it will show n/a" >&2

# --- data ----------------------------------------------------------------------------------
say "Measurement Set"
mkdir -p "$WORK" || die "cannot create $WORK"
WORK=$(cd "$WORK" && pwd)
# shellcheck disable=SC2086
nice -n "$NICE" "$VENV/bin/python" "$REPO/benches/make_large_ms.py" "$WORK" $MS_ARGS || die "MS builder failed"
INFO="$WORK/large_vla.ms.info"
MS=$(sed -n 's/^MS=//p' "$INFO")
SAMPLES=$(sed -n 's/^SAMPLES=//p' "$INFO")
MS_BYTES=$(sed -n 's/^MS_BYTES=//p' "$INFO")
SCALE_ASEC=${SCALE_ASEC:-$(sed -n 's/^SCALE_ASEC=//p' "$INFO")}
echo "$MS: $SAMPLES Stokes-I samples, $((MS_BYTES / 1000000)) MB; size $SIZE, scale ${SCALE_ASEC}asec, eps $EPS, $THREADS threads"

# --- timing helpers ------------------------------------------------------------------------
# CPU seconds the whole machine spent (user+nice+system) per /proc/stat, to tell whether
# someone else's work slowed a run down.
machine_cpu_s() { awk '/^cpu /{printf "%.2f", ($2+$3+$4)/100}' /proc/stat; }
declare -A WALL RSS OTHERS
timed() { # timed NAME CMD...: runs CMD with /usr/bin/time -v, log in WORK/NAME.log
    local name=$1; shift
    local before after tfile="$WORK/$name.time" log="$WORK/$name.log"
    before=$(machine_cpu_s)
    nice -n "$NICE" /usr/bin/time -v -o "$tfile" "$@" >"$log" 2>&1
    local rc=$?
    after=$(machine_cpu_s)
    if [ $rc -ne 0 ]; then
        echo "$name: failed (exit $rc), see $log:"; tail -n 5 "$log" | sed 's/^/    /'
        WALL[$name]=n/a; RSS[$name]=n/a; OTHERS[$name]=n/a; return 1
    fi
    WALL[$name]=$(awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; printf "%.2f", s}' "$tfile")
    RSS[$name]=$(awk -F': ' '/Maximum resident set size/{printf "%.0f", $2/1024}' "$tfile")
    local own
    own=$(awk -F': ' '/User time|System time/{s+=$2} END{printf "%.2f", s}' "$tfile")
    OTHERS[$name]=$(awk -v a="$after" -v b="$before" -v o="$own" 'BEGIN{printf "%.1f", a-b-o}')
    echo "$name: ${WALL[$name]} s wall, ${RSS[$name]} MB max RSS, own CPU ${own} s, other processes ${OTHERS[$name]} CPU s"
}
num() { # num KEY FILE: the number after KEY at the start of a line
    awk -v k="$1" '$1==k{print $2; exit}' "$2"
}

export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
status=0

say "WSClean dirty image"
timed wsclean wsclean -j "$THREADS" -niter 0 -use-wgridder -no-small-inversion \
    -wgridder-accuracy "$EPS" -size "$SIZE" "$SIZE" -scale "${SCALE_ASEC}asec" \
    -weight natural -name "$WORK/wsclean" "$MS" || status=1

say "interf-image dirty"
# shellcheck disable=SC2086
timed ours "$REPO/target/release/interf-image" dirty "$MS" --size "$SIZE" \
    --scale "${SCALE_ASEC}asec" --weight natural --epsilon "$EPS" --threads "$THREADS" \
    --name "$WORK/ours" $OURS_ARGS || status=1

say "gridder: ours (cargo bench --bench anchor_gridder)"
export ANCHOR_MS=$MS ANCHOR_EPS=$EPS ANCHOR_SIZE=$SIZE ANCHOR_SCALE_ASEC=$SCALE_ASEC ANCHOR_SAVE=$WORK
rm -f "$WORK/ours_dirty.npy"
(cd "$REPO" && nice -n "$NICE" cargo bench --bench anchor_gridder) >"$WORK/bench-ours.log" 2>&1 ||
    { echo "anchor_gridder failed, see $WORK/bench-ours.log"; tail -n 5 "$WORK/bench-ours.log"; status=1; }
grep -E '^(ours_|samples|rel_)' "$WORK/bench-ours.log"

say "gridder: ducc0.wgridder (benches/anchor_ducc0.py)"
nice -n "$NICE" "$VENV/bin/python" "$REPO/benches/anchor_ducc0.py" >"$WORK/bench-ducc0.log" 2>&1 ||
    { echo "anchor_ducc0.py failed, see $WORK/bench-ducc0.log"; tail -n 5 "$WORK/bench-ducc0.log"; status=1; }
grep -E '^(ducc0_|samples|rel_|peak)' "$WORK/bench-ducc0.log"

# --- agreement of the two dirty images (a fast benchmark of a wrong image is worthless) -----
say "dirty images: ours against WSClean"
"$VENV/bin/python" - "$WORK/ours-dirty.fits" "$WORK/wsclean-dirty.fits" <<'PY' || true
import sys
import numpy as np

def read_fits(path):  # primary HDU only, as both imagers write it
    with open(path, "rb") as f:
        head, cards = b"", {}
        while b"END     " not in [head[i:i + 8] for i in range(0, len(head), 80)]:
            head += f.read(2880)
        for i in range(0, len(head), 80):
            k, v = head[i:i + 8].decode().strip(), head[i + 10:i + 80].decode().split("/")[0].strip()
            cards.setdefault(k, v)
        shape = [int(cards[f"NAXIS{i}"]) for i in range(int(cards["NAXIS"]), 0, -1)]
        dtype = {"-32": ">f4", "-64": ">f8"}[cards["BITPIX"]]
        return np.fromfile(f, dtype, int(np.prod(shape))).reshape(shape)[0, 0].astype(np.float64)

try:
    ours, wsc = read_fits(sys.argv[1]), read_fits(sys.argv[2])
except (OSError, KeyError, ValueError) as e:
    sys.exit(f"cannot compare: {e}")
rel = np.linalg.norm(ours - wsc) / np.linalg.norm(wsc)
at = lambda a: tuple(int(i) for i in np.unravel_index(a.argmax(), a.shape))
print(f"peak [iy, ix]: ours {ours.max():.5f} at {at(ours)}, WSClean {wsc.max():.5f} at {at(wsc)}; "
      f"relative L2 difference {rel:.2e}")
PY

# --- table -----------------------------------------------------------------------------------
OURS_G=$(num ours_ms2dirty_s "$WORK/bench-ours.log"); OURS_D=$(num ours_dirty2ms_s "$WORK/bench-ours.log")
DUCC_G=$(num ducc0_ms2dirty_s "$WORK/bench-ducc0.log"); DUCC_D=$(num ducc0_dirty2ms_s "$WORK/bench-ducc0.log")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a+0 > 0 && b+0 > 0) printf "%.2f", a/b; else printf "n/a" }'; }
say "anchors: $SAMPLES samples, ${SIZE}², ${SCALE_ASEC}asec, eps $EPS, $THREADS threads (ratio = ours / reference; < 1 is faster)"
printf '%-28s %12s %12s %12s  %s\n' "" ours reference ratio reference
printf '%-28s %12s %12s %12s  %s\n' "dirty image, wall s" "${WALL[ours]:-n/a}" "${WALL[wsclean]:-n/a}" "$(ratio "${WALL[ours]:-}" "${WALL[wsclean]:-}")" "wsclean -niter 0 -use-wgridder"
printf '%-28s %12s %12s %12s  %s\n' "dirty image, max RSS MB" "${RSS[ours]:-n/a}" "${RSS[wsclean]:-n/a}" "$(ratio "${RSS[ours]:-}" "${RSS[wsclean]:-}")" "(same runs)"
printf '%-28s %12s %12s %12s  %s\n' "ms2dirty, s" "${OURS_G:-n/a}" "${DUCC_G:-n/a}" "$(ratio "${OURS_G:-}" "${DUCC_G:-}")" "ducc0.wgridder.ms2dirty"
printf '%-28s %12s %12s %12s  %s\n' "dirty2ms, s" "${OURS_D:-n/a}" "${DUCC_D:-n/a}" "$(ratio "${OURS_D:-}" "${DUCC_D:-}")" "ducc0.wgridder.dirty2ms"
echo "CPU seconds used by other processes during the timed runs: ours ${OTHERS[ours]:-n/a}, wsclean ${OTHERS[wsclean]:-n/a} (well above 0: rerun on a quiet machine)"
echo "logs and images: $WORK"
exit $status
