// Package nat tests Parley's embedded TURN relay where it is meant to help:
// two callers, each behind its own NAT, in network namespaces this test
// creates and removes itself (ip netns, veth, a bridge, nftables
// masquerade). The parley binary is built and run in a "server" namespace;
// each caller is a pion/webrtc peer run in its own "client" namespace (this
// test binary, started again under `ip netns exec`, see helper_test.go).
//
//   - udp: the routers masquerade and forward everything. With ICE policy
//     "relay" the call goes through the relay over UDP (TURN on 3478/udp).
//   - tls-443-only: each router's firewall drops everything the client sends
//     out except TCP 443 to the server. Signaling (HTTPS, WSS) still works;
//     TURN on 3478 (UDP and TCP) is blocked, and the call connects through
//     TURN over TLS on 443 (the port shared with HTTPS through tlsmux),
//     with media both ways.
//
// The server's /metrics must show the allocations and relayed packets.
//
// Needs root, iproute2 (`ip`) and nftables (`nft`; scripts/test.sh installs
// it); otherwise the test is skipped.
//
//	go test ./tests/nat/ -count=1 -v
//
// NAT_SHOW_HELPER_LOG=1 (with -v) prints every helper's log (pion warnings,
// signaling, candidates) even when it succeeds; PION_LOG_DEBUG=ice adds
// pion's ICE debug log.
//
// Trusting the test certificate: the signaling client (HTTPS, WSS) uses a
// cert pool. pion/webrtc v4 has no setting for the TLS config of turns:
// URLs: pion/ice dials them with tls.Config{ServerName: <URL host>} (only
// InsecureSkipVerify exists, as ice.AgentConfig.InsecureSkipVerify, and
// webrtc's SettingEngine does not expose it). So the peers get the
// certificate through SSL_CERT_FILE, which Go reads for its system roots:
// the turns: connection is verified for real, against the IP SAN
// 203.0.113.1 (the URL's host). The other hook, SettingEngine's
// SetICEProxyDialer, hands the raw conn of both turn:?transport=tcp and
// turns: URLs to a dialer that cannot tell them apart; it is not used.
//
// Topology. Every namespace name starts with a per-run prefix
// "parleynat-<pid>-<random>-"; the public segment is a bridge in a namespace
// of its own ("wan"), so the server host is an ordinary host on it:
//
//	                   ns wan: bridge br0 (no address)
//	      to-pub ------------- to-r1 -------------- to-r2
//	        |                    |                    |
//	ns pub  eth0           ns r1 wan0           ns r2 wan0
//	203.0.113.1/24         203.0.113.11/24      203.0.113.12/24
//	parley:                masquerade out wan0  masquerade out wan0
//	 :8080 HTTP            [tls-443-only: forward policy drop, allow
//	 :443  HTTPS+TURN/TLS   established/related and lan0 -> 203.0.113.1
//	 :3478 TURN UDP+TCP     tcp dport 443]
//	 :9090 metrics         lan0 10.1.0.1/24     lan0 10.2.0.1/24
//	                         |                    |
//	                 ns c1 eth0 10.1.0.2  ns c2 eth0 10.2.0.2
//	                 default via 10.1.0.1 default via 10.2.0.1
//	                 pion peer "c1"       pion peer "c2"
//
// The server has no route to 10.0.0.0/8: everything from the clients
// reaches it from 203.0.113.11 or .12, as from a NAT on the internet.
package nat

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/logbuf"
	"github.com/parleyhq/parley/internal/testcert"
)

const (
	serverIP = "203.0.113.1"
	// turnSecret is the relay's shared secret; the server derives each
	// participant's TURN credentials from it.
	turnSecret = "parley-nat-test-secret-0123456789abcdef"
	certName   = "parley.nat.test"

	nsPrefix = "parleynat-"

	// caseTimeout bounds one case, from firewall set-up to the last check.
	caseTimeout = 60 * time.Second
	// peerDeadline bounds one peer process (signaling, ICE, media, stats).
	peerDeadline = 45 * time.Second
	// sendFor is how long each peer sends media once connected: 50 RTP
	// packets a second, so about 300 packets.
	sendFor = 6 * time.Second
	// minPackets is what each peer must receive from the other.
	minPackets = 100
)

// routers and clients of the lab, by index (1 and 2).
var sides = []int{1, 2}

func TestNAT(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it creates network namespaces, veth pairs, a bridge and nftables rules")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (iproute2 / nftables; scripts/test.sh installs nftables): %v", tool, err)
		}
	}
	start := time.Now()
	dir := t.TempDir()
	bin := buildParley(t, dir)
	certFile, keyFile := writeCert(t, dir)
	l := newLab(t, certFile)
	l.startServer(t, bin, certFile, keyFile)
	t.Logf("lab ready in %.1fs (namespaces %s*)", time.Since(start).Seconds(), l.prefix)

	for _, c := range []natCase{
		{name: "udp", firewall: false, wantRelay: "udp"},
		{name: "tls-443-only", firewall: true, wantRelay: "tls"},
	} {
		if !t.Run(c.name, func(t *testing.T) { l.runCase(t, c) }) {
			break
		}
	}
	t.Logf("total run time %.1fs", time.Since(start).Seconds())
}

// natCase is one network setting.
type natCase struct {
	name      string
	firewall  bool   // routers drop all but TCP 443 to the server
	wantRelay string // the relay protocol both peers must use
}

func (l *lab) runCase(t *testing.T, c natCase) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), caseTimeout)
	defer cancel()
	if c.firewall {
		for _, i := range sides {
			l.nft(t, l.router(i), firewallRules)
		}
		t.Logf("firewall on both routers: forward policy drop; only lan0 -> %s tcp/443 (and replies) pass", serverIP)
	}

	// What can a client reach? Probe the TURN ports directly.
	var wg sync.WaitGroup
	probes := make([]probeResult, 3)
	for _, i := range sides {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := l.helper(ctx, l.client(i), "probe", nil)
			if err != nil {
				t.Errorf("probe from c%d: %v", i, err)
				return
			}
			if err := decodeResult(out, &probes[i]); err != nil {
				t.Errorf("probe from c%d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	for _, i := range sides {
		p := probes[i]
		t.Logf("c%d probe: TURN UDP 3478 answered=%v (mapped %s), TCP 3478 open=%v, TCP 443 open=%v",
			i, p.UDP3478, p.Mapped, p.TCP3478, p.TCP443)
		if !p.TCP443 {
			t.Errorf("c%d cannot open TCP 443 on the server: %s", i, p.Err443)
		}
		if c.firewall {
			if p.UDP3478 || p.TCP3478 {
				t.Errorf("c%d reaches TURN on 3478 through the firewall (udp %v, tcp %v)", i, p.UDP3478, p.TCP3478)
			}
		} else {
			if !p.UDP3478 || !p.TCP3478 {
				t.Errorf("c%d cannot reach TURN on 3478 without a firewall (udp %v %s, tcp %v %s)", i, p.UDP3478, p.ErrUDP, p.TCP3478, p.Err3478)
			}
			// The server sees the router's public address: the NAT works.
			if want := fmt.Sprintf("203.0.113.1%d", i); p.MappedIP != want {
				t.Errorf("c%d: server saw %q, want the router's address %s (masquerade)", i, p.MappedIP, want)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	before := l.metrics(t, ctx)

	// Room over HTTPS on 443 from behind NAT 1.
	out, err := l.helper(ctx, l.client(1), "create", nil)
	if err != nil {
		t.Fatalf("creating a room from c1: %v", err)
	}
	var room createResult
	if err := decodeResult(out, &room); err != nil {
		t.Fatalf("creating a room from c1: %v", err)
	}
	t.Logf("room %s created by c1 over https://%s/api/rooms", room.ID, serverIP)

	// The call.
	results := make([]peerResult, 3)
	peerLogs := make([]bytes.Buffer, 3)
	for _, i := range sides {
		wg.Add(1)
		go func() {
			defer wg.Done()
			other := 3 - i
			out, err := l.helperLog(ctx, l.client(i), "peer", map[string]string{
				"NAT_ROOM":      room.ID,
				"NAT_ROLE":      fmt.Sprintf("c%d", i),
				"NAT_PEER_ROLE": fmt.Sprintf("c%d", other),
				"NAT_POLICY":    "relay",
				"NAT_SEND":      sendFor.String(),
				"NAT_DEADLINE":  peerDeadline.String(),
				// pion dials turns: URLs with a tls.Config that only
				// sets ServerName: the system roots are used, and
				// Go reads them from SSL_CERT_FILE.
				"SSL_CERT_FILE": l.caFile,
			}, &peerLogs[i])
			if err != nil {
				t.Errorf("peer c%d: %v", i, err)
			}
			if err := decodeResult(out, &results[i]); err != nil {
				t.Errorf("peer c%d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	after := l.metrics(t, ctx)

	received := 0
	for _, i := range sides {
		r := results[i]
		t.Logf("c%d: connected after %dms; selected pair local %s/%s relayProtocol=%q %s:%d -> remote %s/%s %s:%d; nominated %v; relay candidates gathered by protocol %v; sent %d, received %d (%d carrying c%d's marker)",
			i, r.ConnectedAfterMS, r.Local.Type, r.Local.Protocol, r.Local.RelayProtocol, r.Local.Address, r.Local.Port,
			r.Remote.Type, r.Remote.Protocol, r.Remote.Address, r.Remote.Port, r.Nominated, r.Gathered,
			r.Sent, r.Received, r.ReceivedOK, 3-i)
		if r.Error != "" {
			t.Errorf("c%d: %s", i, r.Error)
			continue
		}
		if r.Local.Type != "relay" || r.Remote.Type != "relay" {
			t.Errorf("c%d: selected pair %s -> %s, want relay -> relay", i, r.Local.Type, r.Remote.Type)
		}
		if r.Local.RelayProtocol != c.wantRelay {
			t.Errorf("c%d: local relay candidate reaches the server over %q, want %q", i, r.Local.RelayProtocol, c.wantRelay)
		}
		if r.Local.Address != serverIP || r.Remote.Address != serverIP {
			t.Errorf("c%d: selected pair %s -> %s, want relayed addresses on %s", i, r.Local.Address, r.Remote.Address, serverIP)
		}
		if r.ReceivedOK < minPackets {
			t.Errorf("c%d received %d packets from c%d (%d in all), want at least %d", i, r.ReceivedOK, 3-i, r.Received, minPackets)
		}
		if r.ReceivedOK != r.Received {
			t.Errorf("c%d received %d packets, of which only %d are c%d's", i, r.Received, r.ReceivedOK, 3-i)
		}
		if c.firewall && (r.Gathered["udp"] > 0 || r.Gathered["tcp"] > 0) {
			t.Errorf("c%d got relay candidates over %v through a firewall that only passes TCP 443", i, r.Gathered)
		}
		if !c.firewall && r.Gathered["udp"] == 0 {
			t.Errorf("c%d got no relay candidate over UDP: %v", i, r.Gathered)
		}
		received += r.Received
	}

	delta := func(name string) float64 { return after[name] - before[name] }
	allocs := delta("parley_turn_allocations_total")
	relayed := delta("parley_turn_relayed_packets_total")
	relayedWant := delta(`parley_turn_relayed_packets_total{transport="` + c.wantRelay + `"}`)
	authFail := delta("parley_turn_auth_failures_total")
	var byTransport, refusals []string
	for _, tr := range []string{"udp", "tcp", "tls"} {
		byTransport = append(byTransport, fmt.Sprintf("%s +%.0f", tr, delta(`parley_turn_relayed_packets_total{transport="`+tr+`"}`)))
	}
	unexpectedRefusals := 0.0
	for name := range after {
		if reason, ok := strings.CutPrefix(name, `parley_turn_permission_refusals_total{reason="`); ok {
			reason = strings.TrimSuffix(reason, `"}`)
			if d := delta(name); d > 0 {
				refusals = append(refusals, fmt.Sprintf("%s +%.0f", reason, d))
				// A packet still on its way to the other's relay when
				// that allocation is freed at hang-up is dropped as
				// own-address: expected at the end of a call.
				if reason != "own-address" {
					unexpectedRefusals += d
				}
			}
		}
	}
	t.Logf("server /metrics: allocations_total +%.0f (current %.0f); relayed_packets_total +%.0f by client transport [%s]; relayed_bytes_total +%.0f; auth_failures_total +%.0f; permission_refusals_total by reason %v",
		allocs, after["parley_turn_allocations"], relayed, strings.Join(byTransport, ", "),
		delta("parley_turn_relayed_bytes_total"), authFail, refusals)
	if allocs < 2 {
		t.Errorf("allocations_total rose by %.0f, want at least 2 (one per peer)", allocs)
	}
	if relayedWant < float64(received) {
		t.Errorf("relayed_packets_total{transport=%q} rose by %.0f, less than the %d packets the peers received", c.wantRelay, relayedWant, received)
	}
	if c.firewall {
		for _, tr := range []string{"udp", "tcp"} {
			if d := delta(`parley_turn_relayed_packets_total{transport="` + tr + `"}`); d != 0 {
				t.Errorf("%.0f packets relayed for clients over %s through a firewall that only passes TCP 443", d, tr)
			}
		}
	}
	if authFail != 0 {
		t.Errorf("the relay refused %.0f authentications", authFail)
	}
	if unexpectedRefusals != 0 {
		t.Errorf("the relay refused permissions or packets: %v", refusals)
	}
	if d := time.Since(start); d > caseTimeout {
		t.Errorf("case took %.1fs, over its %v bound", d.Seconds(), caseTimeout)
	} else {
		t.Logf("case run time %.1fs", d.Seconds())
	}
	if t.Failed() {
		for _, i := range sides {
			t.Logf("c%d candidate pairs:\n%s\nc%d log:\n%s", i, strings.Join(results[i].Pairs, "\n"), i, logbuf.Tail(peerLogs[i].Bytes(), 80))
		}
		t.Logf("server log (tail):\n%s", l.serverLog.Tail(60))
	}
}

// firewallRules make a router drop everything forwarded except replies
// and the client's TCP connections to the server's port 443. nft wants one
// rule per line here.
const firewallRules = `table inet fw {
  chain forward_filter {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "lan0" ip daddr ` + serverIP + ` tcp dport 443 accept
  }
}
`

const natRules = `table ip nat {
  chain post {
    type nat hook postrouting priority 100;
    oifname "wan0" masquerade
  }
}
`

// lab is the set of namespaces of one run.
type lab struct {
	prefix    string
	names     []string // every namespace, in creation order
	exe       string   // this test binary, run again as a helper
	caFile    string
	serverLog *logbuf.Buffer
}

func (l *lab) ns(role string) string { return l.prefix + role }
func (l *lab) router(i int) string   { return l.ns(fmt.Sprintf("r%d", i)) }
func (l *lab) client(i int) string   { return l.ns(fmt.Sprintf("c%d", i)) }

// newLab builds the topology drawn at the top of this file and registers
// its teardown. Namespaces left by earlier runs whose process is gone are
// removed first.
func newLab(t *testing.T, caFile string) *lab {
	t.Helper()
	removeLeftovers(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	rand.Read(b)
	l := &lab{
		prefix:    fmt.Sprintf("%s%d-%s-", nsPrefix, os.Getpid(), hex.EncodeToString(b)),
		exe:       exe,
		caFile:    caFile,
		serverLog: &logbuf.Buffer{},
	}
	for _, role := range []string{"wan", "pub", "r1", "r2", "c1", "c2"} {
		l.names = append(l.names, l.ns(role))
	}
	// Same names from an earlier attempt of this very run, if any.
	for _, n := range l.names {
		exec.Command("ip", "netns", "del", n).Run()
	}
	t.Cleanup(func() { l.teardown(t) })

	if out, err := exec.Command("ip", "netns", "add", l.names[0]).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace here (needs CAP_SYS_ADMIN): %v: %s", err, out)
	}
	for _, n := range l.names[1:] {
		l.ip(t, "netns", "add", n)
	}
	wan := l.ns("wan")
	l.ip(t, "-n", wan, "link", "add", "br0", "type", "bridge")
	l.ip(t, "-n", wan, "link", "set", "br0", "up")
	port := func(bridgePort, host, ifname, addr string) {
		l.ip(t, "-n", wan, "link", "add", bridgePort, "type", "veth", "peer", "name", ifname, "netns", host)
		l.ip(t, "-n", wan, "link", "set", bridgePort, "master", "br0")
		l.ip(t, "-n", wan, "link", "set", bridgePort, "up")
		l.ip(t, "-n", host, "addr", "add", addr, "dev", ifname)
		l.ip(t, "-n", host, "link", "set", ifname, "up")
		l.ip(t, "-n", host, "link", "set", "lo", "up")
	}
	port("to-pub", l.ns("pub"), "eth0", serverIP+"/24")
	for _, i := range sides {
		r, c := l.router(i), l.client(i)
		port(fmt.Sprintf("to-r%d", i), r, "wan0", fmt.Sprintf("203.0.113.1%d/24", i))
		l.ip(t, "-n", r, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", c)
		l.ip(t, "-n", r, "addr", "add", fmt.Sprintf("10.%d.0.1/24", i), "dev", "lan0")
		l.ip(t, "-n", r, "link", "set", "lan0", "up")
		l.ip(t, "-n", c, "addr", "add", fmt.Sprintf("10.%d.0.2/24", i), "dev", "eth0")
		l.ip(t, "-n", c, "link", "set", "eth0", "up")
		l.ip(t, "-n", c, "link", "set", "lo", "up")
		l.ip(t, "-n", c, "route", "add", "default", "via", fmt.Sprintf("10.%d.0.1", i))
		l.ip(t, "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		l.nft(t, r, natRules)
	}
	return l
}

// teardown deletes every namespace of the run, and checks none is left.
func (l *lab) teardown(t *testing.T) {
	var failed []string
	for i := len(l.names) - 1; i >= 0; i-- {
		n := l.names[i]
		if _, err := os.Stat(filepath.Join("/run/netns", n)); err != nil {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", n).CombinedOutput(); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v: %s", n, err, bytes.TrimSpace(out)))
		}
	}
	if left := listNamespaces(l.prefix); len(left) > 0 || len(failed) > 0 {
		t.Errorf("teardown left namespaces %v (%s)", left, strings.Join(failed, "; "))
	} else {
		t.Logf("teardown: namespaces %s* deleted", l.prefix)
	}
}

// removeLeftovers deletes namespaces of this test whose run (the pid in
// the name) is no longer alive, e.g. after a killed `go test`.
func removeLeftovers(t *testing.T) {
	for _, n := range listNamespaces(nsPrefix) {
		rest := strings.TrimPrefix(n, nsPrefix)
		pid, err := strconv.Atoi(rest[:max(strings.IndexByte(rest, '-'), 0)])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // another run, still going
		}
		if err := exec.Command("ip", "netns", "del", n).Run(); err == nil {
			t.Logf("removed leftover namespace %s", n)
		}
	}
}

func listNamespaces(prefix string) []string {
	entries, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func (l *lab) ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (l *lab) nft(t *testing.T, ns, rules string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v\n%s\nrules:\n%s", ns, err, out, rules)
	}
}

// startServer runs parley in ns pub and waits for /healthz.
func (l *lab) startServer(t *testing.T, bin, certFile, keyFile string) {
	t.Helper()
	args := []string{"netns", "exec", l.ns("pub"), bin,
		"-listen", serverIP + ":8080",
		"-tls-listen", serverIP + ":443",
		"-tls-cert", certFile, "-tls-key", keyFile,
		"-turn-listen", serverIP + ":3478",
		"-turn-public-ip", serverIP,
		"-public-url", "https://" + serverIP,
		"-turn-secret", turnSecret,
		"-metrics-listen", serverIP + ":9090",
		"-log-level", "debug",
		"-data-dir", t.TempDir(), "-open-rooms",
	}
	cmd := exec.Command("ip", args...)
	cmd.Env = cleanEnv(nil)
	cmd.Stdout, cmd.Stderr = l.serverLog, l.serverLog
	// Its own process group, killed in cleanup; and killed by the kernel
	// if this test process dies first (a -timeout panic runs no cleanup).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting parley: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		pgid := cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-done
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := l.helper(ctx, l.ns("pub"), "get", map[string]string{
		"NAT_URL":   "http://" + serverIP + ":8080/healthz",
		"NAT_RETRY": "20s",
	})
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("parley did not come up: %v %q\nserver log:\n%s", err, out, l.serverLog.Tail(40))
	}
	t.Logf("parley up in ns pub: http %s:8080, https+turns %s:443, turn %s:3478, metrics %s:9090", serverIP, serverIP, serverIP, serverIP)
}

// metrics reads the server's /metrics from inside ns pub.
func (l *lab) metrics(t *testing.T, ctx context.Context) map[string]float64 {
	t.Helper()
	out, err := l.helper(ctx, l.ns("pub"), "get", map[string]string{"NAT_URL": "http://" + serverIP + ":9090/metrics"})
	if err != nil {
		t.Fatalf("reading /metrics: %v", err)
	}
	// Samples by their full name (labels included), and each metric's
	// sum over its labels by its bare name.
	m := map[string]float64{}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name := line[:i]
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[name] = v
		if base, _, ok := strings.Cut(name, "{"); ok {
			m[base] += v
		}
	}
	if _, ok := m["parley_turn_allocations_total"]; !ok {
		t.Fatalf("/metrics has no parley_turn_allocations_total:\n%s", out)
	}
	return m
}

// helper runs this test binary in namespace ns in helper mode (see
// TestMain) and returns its standard output. Its standard error (pion and
// helper logs) comes back in the error, or is dropped on success.
func (l *lab) helper(ctx context.Context, ns, mode string, env map[string]string) ([]byte, error) {
	return l.helperLog(ctx, ns, mode, env, nil)
}

// helperLog is helper that also copies the helper's standard error to
// logs.
func (l *lab) helperLog(ctx context.Context, ns, mode string, env map[string]string, logs *bytes.Buffer) ([]byte, error) {
	all := map[string]string{
		helperEnv:    mode,
		"NAT_SERVER": serverIP,
		"NAT_CA":     l.caFile,
	}
	for k, v := range env {
		all[k] = v
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, l.exe, "-test.run=^$")
	cmd.Env = cleanEnv(all)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 3 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if logs != nil {
		logs.Write(stderr.Bytes())
	}
	if err != nil {
		return stdout.Bytes(), fmt.Errorf("helper %s in %s: %w (ctx: %v)\nstdout:\n%s\nstderr:\n%s", mode, ns, err, ctx.Err(), logbuf.Tail(stdout.Bytes(), 20), logbuf.Tail(stderr.Bytes(), 60))
	}
	if testing.Verbose() && os.Getenv("NAT_SHOW_HELPER_LOG") != "" {
		fmt.Fprintf(os.Stderr, "--- helper %s in %s stderr:\n%s\n", mode, ns, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// cleanEnv is this process's environment without proxy settings (nothing
// here may leave the lab), plus extra.
func cleanEnv(extra map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR":
			continue
		}
		if _, ok := extra[k]; ok {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// decodeResult finds the helper's result line in its output.
func decodeResult(out []byte, v any) error {
	for _, line := range bytes.Split(out, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte(resultPrefix)); ok {
			return json.Unmarshal(rest, v)
		}
	}
	return fmt.Errorf("no %q line in the helper's output:\n%s", resultPrefix, logbuf.Tail(out, 20))
}

func buildParley(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "parley")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/parleyhq/parley/cmd/parley")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/parley: %v\n%s", err, out)
	}
	return bin
}

// writeCert writes a self-signed certificate for the server's name and
// address (the test's own CA: the peers trust it through SSL_CERT_FILE).
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	return testcert.New(t, []string{certName}, []net.IP{net.ParseIP(serverIP)}).WriteFiles(t, dir)
}
