#!/usr/bin/env bash
# Go SFrame seal+open against raw crypto/cipher AES-128-GCM seal+open on the
# same frame sizes (issue: end-to-end encryption; target: SFrame at least
# 90 % of raw GCM's throughput). Runs the benchmarks in e2ee/bench_test.go:
#   BenchmarkSealOpen/{100,1200,100+md16,1200+md16}
#   BenchmarkSealOpenPooled/... (the same with exact-size buffers: no
#     scratch room, so Seal and Open use their sync.Pool path)
#   BenchmarkRawGCM/...
# and prints a table of medians.
#
# The test binary is built once and the two benchmarks are run in ROUNDS
# alternating rounds (SealOpen first, then RawGCM first, ...), so slow
# drift in the load of a shared machine hits both sides alike; go test
# -count would run all SealOpen samples before any RawGCM one.
#
# Usage: bench/sframe.sh [-n ROUNDS] [-t BENCHTIME] [-o RAWFILE] [-r GIT-REF]
#   -n rounds per benchmark (default 6: benchstat wants >= 6 for a CI)
#   -t -test.benchtime per run (default 1s)
#   -o keep the raw benchmark output there (default: a temp file, removed)
#   -r build from this git ref (e.g. HEAD) instead of the work tree
# Env: SFRAME_TARGET (default 90), BENCHSTAT (path to benchstat; default:
# installed from the Go module proxy into a temp GOBIN, skipped if that fails).
set -euo pipefail

rounds=6
benchtime=1s
rawfile=''
ref=''
while getopts 'n:t:o:r:h' opt; do
  case $opt in
    n) rounds=$OPTARG ;;
    t) benchtime=$OPTARG ;;
    o) rawfile=$OPTARG ;;
    r) ref=$OPTARG ;;
    h) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0" >&2; exit 2 ;;
  esac
done
target=${SFRAME_TARGET:-90}

repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d /tmp/parley-sframe-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
out=${rawfile:-$tmp/bench.txt}
: >"$out"

src=$repo
if [[ -n $ref ]]; then
  src=$tmp/src
  mkdir -p "$src"
  git -C "$repo" archive "$ref" | tar -x -C "$src"
fi
echo "building the e2ee test binary from ${ref:+git }${ref:-the work tree}..." >&2
(cd "$src" && go test -c -o "$tmp/e2ee.test" ./e2ee)

run() { # $1: benchmark name
  (cd "$src/e2ee" && "$tmp/e2ee.test" -test.run '^$' -test.bench "^Benchmark$1\$" \
    -test.benchtime "$benchtime" -test.count 1 -test.benchmem) >>"$out"
}

start=$(date +%s)
for ((i = 1; i <= rounds; i++)); do
  echo "round $i/$rounds" >&2
  if ((i % 2)); then run SealOpen; run RawGCM; run SealOpenPooled; else run SealOpenPooled; run RawGCM; run SealOpen; fi
done
echo "benchmarks took $(($(date +%s) - start)) s" >&2

# Medians per (benchmark, case); MB/s from the median ns/op (1 MB = 1e6 B, as go test).
awk -v target="$target" '
function median(key,   n, i, j, t, a) {
  n = cnt[key]
  for (i = 1; i <= n; i++) a[i] = val[key, i]
  for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
  lo[key] = a[1]; hi[key] = a[n]
  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
/^Benchmark(SealOpen|SealOpenPooled|RawGCM)\// {
  name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name)
  split(name, p, "/"); b = p[1]; c = p[2]
  for (f = 2; f <= NF; f++) if ($f == "ns/op") ns = $(f - 1)
  k = b SUBSEP c
  val[k, ++cnt[k]] = ns
  if (!(c in seen)) { seen[c] = 1; order[++ncase] = c }
}
END {
  if (ncase == 0) { print "no benchmark results" > "/dev/stderr"; exit 1 }
  printf "\nGo SFrame (suite 0x0004, AES-128-GCM, 5-byte KID) seal+open vs raw crypto/cipher AES-GCM seal+open\n"
  printf "medians of %d runs each; spread = max/min - 1 over the runs; MB/s = frame bytes per second / 1e6\n\n", cnt["SealOpen" SUBSEP order[1]]
  printf "| frame size | SFrame ns/op | SFrame MB/s | spread | raw GCM ns/op | raw GCM MB/s | spread | SFrame %% of raw | target >= %d %% | pooled path ns/op | pooled %% of raw |\n", target
  printf "|---|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|\n"
  for (i = 1; i <= ncase; i++) {
    c = order[i]; size = c; sub(/\+.*/, "", size)
    s = median("SealOpen" SUBSEP c); r = median("RawGCM" SUBSEP c)
    ss = hi["SealOpen" SUBSEP c] / lo["SealOpen" SUBSEP c] - 1
    rs = hi["RawGCM" SUBSEP c] / lo["RawGCM" SUBSEP c] - 1
    ratio = 100 * r / s
    label = c; sub(/\+md16/, " B + 16 B metadata", label); if (label !~ / B/) label = label " B"
    pooled = cnt["SealOpenPooled" SUBSEP c] ? median("SealOpenPooled" SUBSEP c) : 0
    printf "| %s | %.1f | %.0f | %.0f %% | %.1f | %.0f | %.0f %% | %.1f %% | %s | %s | %s |\n", label, s, size * 1000 / s, 100 * ss, r, size * 1000 / r, 100 * rs, ratio, (ratio >= target ? "yes" : "no"), (pooled ? sprintf("%.1f", pooled) : "-"), (pooled ? sprintf("%.1f %%", 100 * r / pooled) : "-")
  }
}' "$out"

# benchstat's view of the same samples (confidence intervals, p-values),
# SealOpen as the base column.
bs=${BENCHSTAT:-}
if [[ -z $bs ]]; then
  if (cd "$tmp" && GOBIN="$tmp/bin" GOFLAGS= go install golang.org/x/perf/cmd/benchstat@latest) >/dev/null 2>&1; then
    bs=$tmp/bin/benchstat
  fi
fi
if [[ -n $bs && -x $bs ]]; then
  echo
  echo "benchstat (base column: SealOpen):"
  "$bs" -col .name -filter '.name:(SealOpen OR RawGCM OR SealOpenPooled) .unit:sec/op' "$out" | grep -v '^\(goos\|goarch\|pkg\|cpu\):'
else
  echo "(benchstat not available: medians above only)" >&2
fi
