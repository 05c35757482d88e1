#!/usr/bin/env bash
# Record lfqcodec against x265, x264 and SVT-AV1 on the real shared clips that the shipped model
# never saw in training (bikes: 640x272 real footage; carphone: 176x144 classic test sequence).
#   benchmarks/run_bench.sh [FRAMES] [SEARCH]
# Writes benchmarks/results/bench.json (numbers, machine, date, command), bench.txt (the table)
# and rd.png (the RD plot shown in the README); with SEARCH > 0 (lfqcodec encode --search SEARCH)
# bench-search$SEARCH.{json,txt} and rd-search$SEARCH.png.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shared=${LFQ_SHARED_DATA:-$here/../../shared/data}
frames=${1:-33}
search=${2:-0}
suffix=""
if [ "$search" -gt 0 ]; then suffix="-search$search"; fi
mkdir -p "$here/results"
lfqcodec bench "$shared/video/bikes.mp4" "$shared/video/carphone_pristine.mp4" \
  --frames "$frames" --codecs x265,x264,svtav1 --search "$search" \
  --json "$here/results/bench$suffix.json" --plot "$here/results/rd$suffix.png" -q | tee "$here/results/bench$suffix.txt"
