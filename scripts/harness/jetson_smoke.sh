#!/usr/bin/env bash
# First contact with a Jetson: run edgekd's whole device path once on a bundle exported on a workstation, and pack
# everything needed to see what happened into one archive to send back.
#
#   scripts/harness/jetson_smoke.sh BUNDLE [TARGET]
#
# BUNDLE  an exported bundle (edgekd export / the end of edgekd train), copied to the Jetson
# TARGET  a device target (edgekd targets); default: the one `edgekd doctor` suggests for this board
#
# Steps, each logged to logs/NN-NAME.log with its exit status in summary.tsv (a failed step does not stop the
# script; the steps that need its output are recorded as skipped):
#   system facts, edgekd doctor --json, build fp16 and int8 (and int8 on DLA core 0 when the doctor reports DLA
#   cores), a short test video made from the bundle's own validation images, edgekd run (early exit and full vote,
#   headless, --jsonl, --max-frames) on every build, edgekd profile of every build, then the acceptance report
#   (acceptance.json: one file with the doctor's report, every build with its accuracy against ONNX Runtime FP32 on
#   the bundle's validation images, every run scored against the video's labels, and the profile) and one .tar.gz
#   of logs, reports, manifests and the doctor's report. Engines go to an engine cache of this run's own
#   (OUT/engine-cache), so nothing built earlier on this machine is reused.
#
# Environment (all optional):
#   EDGEKD_SMOKE_BACKEND     tensorrt (default) or onnxruntime (no GPU needed; how the script is tested on a CPU)
#   EDGEKD_SMOKE_OUT         output folder (default ./edgekd-smoke-HOST-DATE); the archive is OUT.tar.gz
#   EDGEKD_SMOKE_FRAMES      frames in the test video and per run (default 120)
#   EDGEKD_SMOKE_ITERATIONS  edgekd profile --iterations (default 200)
#   EDGEKD_SMOKE_FORCE=1     keep a build that fails its accuracy check (build --force), so run/profile still go
#   PYTHON                   the Python that has edgekd (default python3)
#   EDGEKD                   the edgekd command (default: $PYTHON -m edgekd)
#
# Exit status: 0 when every step passed, 1 when one failed (the archive is written either way), 2 on bad usage.
set -euo pipefail

usage() {
    sed -n '5,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
[[ "$1" != "-h" && "$1" != "--help" ]] || usage
BUNDLE=$1
TARGET=${2:-}
BACKEND=${EDGEKD_SMOKE_BACKEND:-tensorrt}
FRAMES=${EDGEKD_SMOKE_FRAMES:-120}
ITERATIONS=${EDGEKD_SMOKE_ITERATIONS:-200}
PYTHON=${PYTHON:-python3}
read -r -a EDGEKD <<< "${EDGEKD:-$PYTHON -m edgekd}"
case "$BACKEND" in
    tensorrt|onnxruntime) ;;
    *) echo "error: EDGEKD_SMOKE_BACKEND must be tensorrt or onnxruntime, got '$BACKEND'" >&2; exit 2 ;;
esac
HOST=$(hostname 2>/dev/null || echo host)
OUT=${EDGEKD_SMOKE_OUT:-"$PWD/edgekd-smoke-$HOST-$(date +%Y%m%d-%H%M%S)"}
mkdir -p "$OUT/logs" "$OUT/runs" "$OUT/manifests"
OUT=$(cd "$OUT" && pwd)
export EDGEKD_ENGINE_CACHE="$OUT/engine-cache"  # this run's own: every engine is built here, none reused
SUMMARY="$OUT/summary.tsv"
printf 'step\tstatus\tseconds\n' > "$SUMMARY"
FAILED=0
N=0

# step NAME COMMAND...: run it, log stdout+stderr, record its exit status; never stops the script.
step() {
    local name=$1 rc=0 start end
    shift
    N=$((N + 1))
    local log
    log="$OUT/logs/$(printf '%02d' "$N")-$name.log"
    echo "== $name: $*" | tee "$log"
    start=$(date +%s)
    "$@" >> "$log" 2>&1 || rc=$?
    end=$(date +%s)
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((end - start))" >> "$SUMMARY"
    if [[ $rc -ne 0 ]]; then
        FAILED=1
        echo "   FAILED (exit $rc), see $log"
        tail -n 5 "$log" | sed 's/^/   | /'
    fi
    return 0
}

skip() {  # skip NAME WHY
    N=$((N + 1))
    printf '%s\tskipped: %s\t0\n' "$1" "$2" >> "$SUMMARY"
    echo "== $1: skipped ($2)"
}

ok() {  # ok NAME: did step NAME pass?
    awk -F'\t' -v n="$1" '$1 == n && $2 == "0" {found = 1} END {exit !found}' "$SUMMARY"
}

system_facts() {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "bundle: $BUNDLE"
    echo "backend: $BACKEND target: ${TARGET:-auto} frames: $FRAMES iterations: $ITERATIONS"
    uname -a || true
    for f in /proc/device-tree/model /etc/nv_tegra_release /etc/os-release; do
        [[ -r $f ]] && { echo "--- $f"; tr -d '\0' < "$f"; echo; }
    done
    command -v nvpmodel > /dev/null && { echo "--- nvpmodel -q"; nvpmodel -q 2>&1 || true; }
    command -v dpkg-query > /dev/null && { echo "--- dpkg-query"; dpkg-query -W nvidia-jetpack 2>&1 || true; }
    echo "--- $PYTHON -m pip list"
    "$PYTHON" -m pip list 2>&1 || true
}

doctor() {
    # (inside step's `||`, bash ignores set -e in functions: every command that can fail returns explicitly)
    "${EDGEKD[@]}" doctor --json > "$OUT/doctor.json" || return
    COLUMNS=160 "${EDGEKD[@]}" doctor > "$OUT/doctor.txt" || return
    cat "$OUT/doctor.txt"
}

make_video() {  # the bundle's validation images as a short video (mp4v; MJPG .avi or a folder as fallbacks);
    # runs/video-labels.json holds each frame's true label, to score the runs' JSONL afterwards
    "$PYTHON" - "$BUNDLE" "$OUT/video" "$FRAMES" "$OUT/runs" <<'PY'
import json, os, sys
from pathlib import Path
import cv2
import numpy as np

bundle, out, frames = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
try:
    name = json.loads((bundle / "manifest.json").read_text())["files"]["val_sample"]["path"]
except (OSError, ValueError, KeyError, TypeError):
    name = "val_sample.npz"
with np.load(bundle / name) as f:
    images, labels = f["images"], f["labels"]
out.mkdir(parents=True, exist_ok=True)
h, w = images.shape[1:3]
scale = max(1, -(-128 // max(h, w)))  # small images are enlarged so the codecs accept them
size = (w * scale + (w * scale) % 2, h * scale + (h * scale) % 2)

def frame(i):
    img = images[i % len(images)]
    img = img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img
    img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    return cv2.resize(img, size, interpolation=cv2.INTER_NEAREST)

source = None
formats = ((out / "val.mp4", "mp4v", None), (out / "val.avi", "MJPG", getattr(cv2, "CAP_OPENCV_MJPEG", None)))
for path, fourcc, api in formats:
    args = (str(path), api, cv2.VideoWriter_fourcc(*fourcc), 30.0, size) if api is not None else \
        (str(path), cv2.VideoWriter_fourcc(*fourcc), 30.0, size)
    writer = cv2.VideoWriter(*args)
    if not writer.isOpened():
        continue
    for i in range(frames):
        writer.write(frame(i))
    writer.release()
    cap = cv2.VideoCapture(str(path))
    readable = cap.isOpened() and cap.read()[0]
    cap.release()
    if readable:
        source = path
        break
    print(f"{path.name} was written but OpenCV cannot read it back; trying the next format")
if source is None:  # no usable video codec in this OpenCV: a folder of images is a source edgekd run reads too
    source = out / "frames"
    source.mkdir(exist_ok=True)
    for i in range(frames):
        cv2.imwrite(str(source / f"{i:05d}.png"), frame(i))
(Path(sys.argv[4]) / "video-labels.json").write_text(json.dumps([int(labels[i % len(labels)]) for i in range(frames)]))
(out / "source.txt").write_text(str(source))
print(f"{frames} frames of {size[0]}x{size[1]} from {len(images)} validation images -> {source}")
PY
}

build() {  # build NAME PRECISION [EXTRA...]: NAME is fp16, int8 or int8-dla
    local name=$1 precision=$2 extra=()
    shift 2
    extra+=("$@")
    [[ "${EDGEKD_SMOKE_FORCE:-0}" == 1 ]] && extra+=(--force)
    "${EDGEKD[@]}" build "$BUNDLE" --precision "$precision" --backend "$BACKEND" --target "$TARGET" \
        --out "$OUT/builds/$name" --cache-dir "$OUT/calibration" "${extra[@]+"${extra[@]}"}" || return
    cp "$OUT/builds/$name/manifest.json" "$OUT/manifests/$name.json"
}

dla_cores() {  # the DLA cores the doctor's TensorRT builder reports (0 when unknown)
    "$PYTHON" -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["tensorrt"].get("dla_cores") or 0))' \
        "$OUT/doctor.json" 2>/dev/null || echo 0
}

run_mode() {  # run_mode PRECISION MODE
    "${EDGEKD[@]}" run "$OUT/builds/$1" --source "$(cat "$OUT/video/source.txt")" --mode "$2" --headless \
        --jsonl "$OUT/runs/$1-$2.jsonl" --max-frames "$FRAMES"
}

acceptance_report() {  # OUT/acceptance.json: everything a bug report needs, in one file (docs/JETSON.md)
    "$PYTHON" - "$OUT" "$BUNDLE" "$BACKEND" "${TARGET:-}" <<'PY'
import csv, json, sys, time
from collections import Counter
from pathlib import Path

out, bundle, backend, target = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

def load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None

with open(out / "summary.tsv", newline="") as f:
    steps = {row["step"]: row["status"] for row in csv.DictReader(f, delimiter="\t")}
builds = {}
for path in sorted((out / "manifests").glob("*.json")):
    m = load(path) or {}
    b = m.get("build") or {}
    builds[path.stem] = {
        "precision": m.get("precision"), "backend": m.get("backend"), "target": b.get("target"),
        # ONNX Runtime FP32 against this build, per exit and vote, on the bundle's validation images
        "accuracy_vs_onnxruntime_fp32": b.get("verification"),
        "calibration": b.get("calibration"), "engines": b.get("engines"), "thresholds": m.get("thresholds"),
        "versions": m.get("versions")}
labels = load(out / "runs" / "video-labels.json") or []
runs = {}
for path in sorted((out / "runs").glob("*.jsonl")):
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    scored = [r for r in records if isinstance(r.get("index"), int) and r["index"] < len(labels)]
    right = sum(1 for r in scored if r.get("label") == labels[r["index"]])
    runs[path.stem] = {"frames": len(records),
                       "top1_vs_video_labels": right / len(scored) if scored else None,
                       "exits": dict(sorted(Counter(str(r.get("exit")) for r in records).items()))}
report = {"schema": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "bundle": bundle,
          "backend": backend, "target": target or None, "steps": steps, "passed": all(s == "0" for s in steps.values()
          if not s.startswith("skipped")), "doctor": load(out / "doctor.json"), "builds": builds, "runs": runs,
          "profile": load(out / "profile" / "report.json")}
(out / "acceptance.json").write_text(json.dumps(report, indent=1, default=str))
print(f"acceptance report: {out / 'acceptance.json'} ({len(builds)} builds, {len(runs)} runs)")
PY
}

echo "edgekd smoke test: $BUNDLE -> $OUT"
step system system_facts
step doctor doctor

if [[ -z "$TARGET" ]]; then
    if [[ "$BACKEND" == onnxruntime ]]; then
        TARGET=x86-cpu
    else
        TARGET=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["target"]["name"] or "")' \
            "$OUT/doctor.json" 2>/dev/null || true)
    fi
fi
if [[ -z "$TARGET" ]]; then
    echo "no target given and the doctor suggests none: pass one (edgekd targets)"
    skip target "no target (give one as the second argument)"
else
    echo "target: $TARGET"
fi

BUILDS=(fp16 int8)
DLA=0
[[ "$BACKEND" == tensorrt ]] && DLA=$(dla_cores)
if [[ "$DLA" -gt 0 ]]; then
    BUILDS+=(int8-dla)  # int8 on DLA core 0 (GPU fallback): TensorRT's implicit calibration path
    echo "the doctor reports $DLA DLA core(s): building int8 for DLA core 0 too"
fi
BUILT=()
for name in "${BUILDS[@]}"; do
    if [[ -z "$TARGET" ]]; then
        skip "build-$name" "no target"
        continue
    fi
    case "$name" in
        int8-dla) step "build-$name" build "$name" int8 --dla-core 0 ;;
        *) step "build-$name" build "$name" "$name" ;;
    esac
    ok "build-$name" && BUILT+=("$name")
done

step video make_video
for name in "${BUILDS[@]}"; do
    for mode in early-exit full-vote; do
        if ! ok video; then
            skip "run-$name-$mode" "no test video"
        elif ! ok "build-$name"; then
            skip "run-$name-$mode" "build-$name did not pass"
        else
            step "run-$name-$mode" run_mode "$name" "$mode"
        fi
    done
done

if [[ ${#BUILT[@]} -gt 0 ]]; then
    paths=()
    for name in "${BUILT[@]}"; do paths+=("$OUT/builds/$name"); done
    step profile "${EDGEKD[@]}" profile "${paths[@]}" --out "$OUT/profile" --iterations "$ITERATIONS"
else
    skip profile "no build passed"
fi

step report acceptance_report

ARCHIVE="$OUT.tar.gz"
# engines, the video and the calibration and engine caches stay out: the manifests, logs and reports say the rest
tar -czf "$ARCHIVE" -C "$(dirname "$OUT")" --exclude="$(basename "$OUT")/builds" \
    --exclude="$(basename "$OUT")/video" --exclude="$(basename "$OUT")/calibration" \
    --exclude="$(basename "$OUT")/engine-cache" "$(basename "$OUT")"
echo
column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
echo
echo "acceptance report: $OUT/acceptance.json"
echo "archive: $ARCHIVE"
echo "send it back together with what you expected to happen"
exit "$FAILED"
