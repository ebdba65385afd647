#!/usr/bin/env bash
# Runs Parley's whole test suite on a fresh Debian machine with Go:
# installs what the tests need (Debian chromium, coturn's test client when
# later tests need it, gcc for the race detector, npm packages), then go
# vet, the Go tests (some again under -race), the JS type check, the JS unit
# tests and the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
step() { printf '\n=== %s (at %d s) ===\n' "$*" $((SECONDS - started)); }

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/firefox-esr ] || need_apt+=(firefox-esr)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v turnutils_uclient >/dev/null || need_apt+=(coturn)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev) # go test -race needs cgo
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing Debian packages: ${need_apt[*]}"
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # coturn is installed for its test client (tests/turn/) only. Its sysv
  # script starts nothing (/etc/default/coturn leaves TURNSERVER_ENABLED
  # off) and containers without systemd have no service manager, but under
  # systemd the package enables and starts turnserver on port 3478: stop it.
  if [[ " ${need_apt[*]} " == *" coturn "* ]] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now coturn >/dev/null 2>&1 || true
  fi
fi

step "npm packages (playwright-core, typescript; no browser download)"
if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/typescript ] || [ ! -d node_modules/puppeteer-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './node_modules/*'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi

step "go vet"
go vet ./...

step "go test"
go test -count=1 ./...

# The packages whose concurrency contracts are subtle (e2ee: a Sender shared
# by goroutines, Open beside AddKey/RemoveKey/Stats; signaling: rooms), once
# more under the race detector.
step "go test -race (e2ee, signaling)"
go test -count=1 -race ./e2ee/ ./signaling/

# Every Go fuzz target, 20,000 inputs (a few seconds) each on top of its
# corpus (bounded: about two minutes in all, builds included).
step "go fuzz targets (scripts/fuzz.sh, FUZZTIME=${FUZZTIME:-20000x} each)"
./scripts/fuzz.sh

step "tsc --noEmit (checkJs)"
npx tsc --noEmit -p tsconfig.json

step "JS unit tests (node --test: e2ee, page helpers)"
node --test e2ee/ tests/unit/

step "browser tests (Chromium)"
# One binary for every test file (each would otherwise link its own).
bindir=$(mktemp -d)
trap 'rm -rf "$bindir"' EXIT
go build -o "$bindir/parley" ./cmd/parley
PARLEY_BIN="$bindir/parley" node --test --test-concurrency=1 --test-timeout=600000 tests/browser/

echo
echo "All Parley tests passed ($((SECONDS - started)) s)."
