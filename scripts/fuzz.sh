#!/usr/bin/env bash
# Runs every Go fuzz target of the module for a short while on top of its
# checked-in corpus (testdata/fuzz/), one after the other. Found crashers
# are written to testdata/fuzz/<Target>/ by go test and fail the run.
#   FUZZTIME  how long each target runs (default 5s)
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-5s}"
n=0
while IFS=: read -r file name; do
  pkg="./$(dirname "$file")"
  printf -- '--- %s %s (%s)\n' "$pkg" "$name" "$fuzztime"
  run() { go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -parallel 1 "$pkg"; }
  if ! run; then
    # A crasher is written under testdata/fuzz/: that is a real failure.
    # Without one, the fuzzing engine itself gave up (its coordinator can
    # time out on a loaded machine: "context deadline exceeded"): once more.
    if [ -n "$(git status --porcelain --untracked-files=all -- "$(dirname "$file")/testdata/fuzz")" ]; then
      echo "fuzz: $name found a failing input (see above and $(dirname "$file")/testdata/fuzz/$name/)"
      exit 1
    fi
    echo "fuzz: $name stopped without a failing input; running it again"
    run
  fi
  n=$((n + 1))
done < <(git ls-files '*_test.go' | xargs grep -Ho '^func Fuzz[A-Za-z0-9_]*' | sed 's/:func /:/' | sort)
echo "fuzzed $n targets for $fuzztime each"
