#!/usr/bin/env bash
# Runs every Go fuzz target of the module for a short while on top of its
# checked-in corpus (testdata/fuzz/), one after the other. Found crashers
# are written to testdata/fuzz/<Target>/ by go test and fail the run.
#   FUZZTIME  how much each target runs: a count of inputs ("20000x", the
#             default: 1-5 s each here) or a duration ("5s")
#   FUZZLIMIT the wall-clock bound on each target's run (default 3m)
#
# A count, not a duration, by default: with a duration, Go's fuzzing
# coordinator up to go1.26 can fail a run that found nothing with "context
# deadline exceeded" when the deadline catches a worker mid-input on a busy
# machine (go.dev/issue/75804, fixed in go1.27). A count has no deadline to
# race; FUZZLIMIT (go test -timeout) still bounds a target that got slow.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-20000x}"
fuzzlimit="${FUZZLIMIT:-3m}"
n=0
while IFS=: read -r file name; do
  pkg="./$(dirname "$file")"
  printf -- '--- %s %s (%s)\n' "$pkg" "$name" "$fuzztime"
  run() { go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -timeout "$fuzzlimit" -parallel 1 "$pkg"; }
  if ! run; then
    # A crasher is written under testdata/fuzz/: that is a real failure.
    # Without one, the fuzzing engine itself gave up (with a duration, see
    # go.dev/issue/75804 above): once more.
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
