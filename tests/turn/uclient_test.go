// Package turn holds conformance tests of Parley's TURN relay against
// coturn's test client: the parley binary is built, `parley turn` is run on
// 127.0.0.1 and coturn's turnutils_uclient drives it in each of its modes
// against turnutils_peer, an echo peer on 127.0.0.1.
//
// turnutils_uclient and turnutils_peer come with Debian's coturn package
// (scripts/test.sh installs it); without them the test is skipped.
//
//	go test ./tests/turn/ -count=1 -v
package turn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/logbuf"
	"github.com/parleyhq/parley/internal/testcert"
)

const (
	// secret is the relay's static-auth-secret; turnutils_uclient derives
	// the REST API credentials from it with -W.
	secret = "parley-uclient-test-secret-0123456789"

	// The load of one mode: a few clients, -n messages of -l bytes each,
	// one message every -z ms per session. uclient starts each session
	// 1 to 6 s after connecting, then sends for n*z ms.
	clients  = 2
	messages = 200
	msgLen   = 160
	interval = 5 // ms: 200 messages/s per session

	// runTimeout bounds one uclient run. A clean run takes 3 to 9 s; with
	// loss uclient waits some seconds more for the missing packets.
	runTimeout = 90 * time.Second
)

// mode is one way of driving the relay with turnutils_uclient.
type mode struct {
	name string
	args []string // uclient flags besides the common ones
	tls  bool     // connect to the TURN-over-TLS port
	c2c  bool     // -y: relays talk to each other, no peer
	rtcp bool     // without -c uclient pairs each session with an RTCP session
}

// modes are turnutils_uclient's ways of using a TURN server. By default
// uclient relays to the peer with ChannelBind and ChannelData, and pairs
// each (RTP) session with an RTCP session whose allocation takes the next
// port through EVEN-PORT and RESERVATION-TOKEN; -c drops the RTCP session
// (it does not turn channels off); -s uses Send/Data indications instead
// of channels; -y relays from one client's allocation to another's; -t
// speaks TURN over TCP and -t -S over TLS, the relayed leg staying UDP.
var modes = []mode{
	{name: "udp-channel", rtcp: true},
	{name: "udp-channel-no-rtcp", args: []string{"-c"}},
	{name: "udp-send-indication", args: []string{"-s"}, rtcp: true},
	{name: "udp-client-to-client", args: []string{"-y"}, c2c: true, rtcp: true},
	{name: "tcp-channel", args: []string{"-t"}, rtcp: true},
	{name: "tls-channel", args: []string{"-t", "-S"}, tls: true, rtcp: true},
}

// sessions is how many sessions uclient runs for -m clients, as its
// start_mclient rounds them: RTP+RTCP pairs, and client-to-client in pairs
// of those.
func (m mode) sessions(clients int) int {
	switch {
	case m.c2c && m.rtcp:
		return (clients + 3) &^ 3
	case m.c2c || m.rtcp:
		return (clients + 1) &^ 1
	}
	return clients
}

func TestUclient(t *testing.T) {
	uclient, err1 := exec.LookPath("turnutils_uclient")
	peerBin, err2 := exec.LookPath("turnutils_peer")
	if err := errors.Join(err1, err2); err != nil {
		t.Skipf("coturn's test tools are not installed (apt-get install coturn; scripts/test.sh does it): %v", err)
	}

	dir := t.TempDir()
	bin := buildParley(t, dir)
	cert, key := writeSelfSigned(t, dir)
	peerPort := startPeer(t, peerBin)

	// The modes run at once, each against a relay of its own, so that each
	// mode's metrics are its own: uclient spends most of its 4-6 s waiting.
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			relay := startRelay(t, bin, cert, key, t.TempDir())
			port := relay.port
			if m.tls {
				port = relay.tlsPort
			}
			// A user per mode: the relay caps allocations per user, and
			// uclient leaves its probe allocations to expire.
			args := append([]string{
				"-W", secret, "-u", "uclient-" + m.name, "-p", strconv.Itoa(port),
				"-e", "127.0.0.1", "-r", strconv.Itoa(peerPort),
				"-m", strconv.Itoa(clients), "-n", strconv.Itoa(messages),
				"-l", strconv.Itoa(msgLen), "-z", strconv.Itoa(interval),
			}, m.args...)
			args = append(args, "127.0.0.1")

			before := relay.metrics(t)
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, uclient, args...)
			cmd.WaitDelay = 5 * time.Second
			out, err := cmd.CombinedOutput()
			elapsed := time.Since(start)
			after := relay.metrics(t)
			if ctx.Err() != nil {
				t.Fatalf("turnutils_uclient %s did not finish within %v\n%s\nrelay log:\n%s",
					strings.Join(args, " "), runTimeout, logbuf.Tail(out, 40), relay.logTail())
			}
			if err != nil {
				t.Fatalf("turnutils_uclient %s: %v\n%s\nrelay log:\n%s",
					strings.Join(args, " "), err, logbuf.Tail(out, 40), relay.logTail())
			}
			st, err := parseStats(out)
			if err != nil {
				t.Fatalf("%v\n%s", err, logbuf.Tail(out, 40))
			}

			allocs := after["parley_turn_allocations_total"] - before["parley_turn_allocations_total"]
			relayed := after["parley_turn_relayed_packets_total"] - before["parley_turn_relayed_packets_total"]
			authFail := after["parley_turn_auth_failures_total"] - before["parley_turn_auth_failures_total"]
			refused := after["parley_turn_permission_refusals_total"] - before["parley_turn_permission_refusals_total"] +
				after["parley_turn_quota_refusals_total"] - before["parley_turn_quota_refusals_total"] +
				after["parley_turn_auth_rate_limited_total"] - before["parley_turn_auth_rate_limited_total"]
			t.Logf("uclient %s", strings.Join(args, " "))
			t.Logf("sessions=%d sent=%d received=%d lost=%d send-dropped=%d bytes=%d/%d rtt=%.2fms (max %dms) jitter=%.2fms in %.1fs; relay: allocations +%.0f, relayed packets +%.0f, auth failures +%.0f, refusals +%.0f",
				m.sessions(clients), st.sent, st.received, st.lost, st.sendDropped, st.sentBytes, st.recvBytes,
				st.rtt, st.rttMax, st.jitter, elapsed.Seconds(), allocs, relayed, authFail, refused)

			want := m.sessions(clients) * messages
			switch {
			case st.sent != want:
				t.Errorf("uclient sent %d messages, want %d (%d sessions x %d)", st.sent, want, m.sessions(clients), messages)
			case st.received == 0:
				t.Errorf("uclient received nothing back")
			}
			if st.lost != 0 || st.sendDropped != 0 || st.received != st.sent {
				t.Errorf("loss: sent %d, received %d, lost %d, send dropped %d; want all back", st.sent, st.received, st.lost, st.sendDropped)
			}
			if st.sentBytes != st.sent*msgLen || st.recvBytes != st.received*msgLen {
				t.Errorf("bytes: sent %d, received %d; want %d-byte messages (%d and %d)",
					st.sentBytes, st.recvBytes, msgLen, st.sent*msgLen, st.received*msgLen)
			}
			// Each session has its allocation, plus one probe allocation
			// per uclient connection setup.
			if allocs < float64(m.sessions(clients)) {
				t.Errorf("relay allocations_total rose by %.0f, want at least %d (one per session)", allocs, m.sessions(clients))
			}
			// Every message crosses a relay socket twice: out of the
			// client's relay to the peer (or the other client's relay),
			// and back.
			if relayed < float64(st.sent+st.received) {
				t.Errorf("relay relayed_packets_total rose by %.0f, want at least %d", relayed, st.sent+st.received)
			}
			if authFail != 0 || refused != 0 {
				t.Errorf("relay refused requests: %.0f auth failures, %.0f permission/quota/rate-limit refusals", authFail, refused)
			}
		})
	}
}

// stats are the totals turnutils_uclient prints at the end of a run.
type stats struct {
	sent, received       int
	sentBytes, recvBytes int
	lost, sendDropped    int
	rtt, jitter          float64
	rttMax               int
}

var (
	reMsgs   = regexp.MustCompile(`(?m)start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$`)
	reBytes  = regexp.MustCompile(`(?m)start_mclient: tot_send_bytes ~ (\d+), tot_recv_bytes ~ (\d+)\s*$`)
	reLost   = regexp.MustCompile(`Total lost packets (\d+) \([^)]*\),\s*total send dropped (\d+) `)
	reRTT    = regexp.MustCompile(`Average round trip delay ([\d.]+) ms; min = \d+ ms, max = (\d+) ms`)
	reJitter = regexp.MustCompile(`Average jitter ([\d.]+|-?nan) ms`)
)

// parseStats reads uclient's final statistics, e.g.
//
//	6: : start_mclient: tot_send_msgs=200, tot_recv_msgs=200
//	6: : start_mclient: tot_send_bytes ~ 32000, tot_recv_bytes ~ 32000
//	6: : Total transmit time is 6
//	6: : Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
//	6: : Average round trip delay 1.155000 ms; min = 0 ms, max = 75 ms
//	6: : Average jitter 10.740000 ms; min = 0 ms, max = 268 ms
//
// The per-second progress lines ("start_mclient: msz=2, tot_send_msgs=...")
// are not matched: the final lines have no msz.
func parseStats(out []byte) (stats, error) {
	var st stats
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	m := reMsgs.FindAllSubmatch(out, -1)
	if len(m) == 0 {
		return st, errors.New("no final tot_send_msgs/tot_recv_msgs line in uclient's output")
	}
	st.sent, st.received = atoi(string(m[len(m)-1][1])), atoi(string(m[len(m)-1][2]))
	if b := reBytes.FindAllSubmatch(out, -1); len(b) > 0 {
		st.sentBytes, st.recvBytes = atoi(string(b[len(b)-1][1])), atoi(string(b[len(b)-1][2]))
	} else {
		return st, errors.New("no final tot_send_bytes line in uclient's output")
	}
	l := reLost.FindSubmatch(out)
	if l == nil {
		return st, errors.New(`no "Total lost packets" line in uclient's output`)
	}
	st.lost, st.sendDropped = atoi(string(l[1])), atoi(string(l[2]))
	if r := reRTT.FindSubmatch(out); r != nil {
		st.rtt, _ = strconv.ParseFloat(string(r[1]), 64)
		st.rttMax = atoi(string(r[2]))
	}
	if j := reJitter.FindSubmatch(out); j != nil {
		st.jitter, _ = strconv.ParseFloat(string(j[1]), 64)
	}
	return st, nil
}

func TestParseStats(t *testing.T) {
	out := []byte(`1: : start_mclient: msz=4, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0, tot_recv_bytes ~ 0
6: : start_mclient: msz=4, tot_send_msgs=152, tot_recv_msgs=146, tot_send_bytes ~ 24320, tot_recv_bytes ~ 23360
6: : start_mclient: tot_send_msgs=200, tot_recv_msgs=197
6: : start_mclient: tot_send_bytes ~ 32000, tot_recv_bytes ~ 31520
6: : Total transmit time is 6
6: : Total lost packets 3 (1.500000%), total send dropped 1 (0.497512%)
6: : Average round trip delay 1.155000 ms; min = 0 ms, max = 75 ms
6: : Average jitter 10.740000 ms; min = 0 ms, max = 268 ms
`)
	st, err := parseStats(out)
	if err != nil {
		t.Fatal(err)
	}
	want := stats{sent: 200, received: 197, sentBytes: 32000, recvBytes: 31520, lost: 3, sendDropped: 1, rtt: 1.155, rttMax: 75, jitter: 10.74}
	if st != want {
		t.Fatalf("got %+v, want %+v", st, want)
	}
	if _, err := parseStats([]byte("0: : Total connect time is 0\n")); err == nil {
		t.Fatal("no error for output without totals")
	}
}

// buildParley builds cmd/parley into dir.
func buildParley(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not in PATH: %v", err)
	}
	bin := filepath.Join(dir, "parley")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, "github.com/parleyhq/parley/cmd/parley")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/parley: %v\n%s", err, out)
	}
	return bin
}

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and
// localhost (turnutils_uclient does not verify it).
func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	return testcert.New(t, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}).WriteFiles(t, dir)
}

// relay is a running `parley turn`.
type relay struct {
	port, tlsPort int
	metricsURL    string
	log           *logbuf.Buffer
}

// startRelay runs `parley turn` on free 127.0.0.1 ports: TURN over UDP and
// TCP on one port, TURN over TLS on another, /metrics on a third. Loopback
// peers are allowed (they are refused by default). A port taken by someone
// else between the probe and parley's bind makes parley exit; it is retried
// on other ports.
func startRelay(t *testing.T, bin, cert, key, dir string) *relay {
	t.Helper()
	var lastErr error
	for range 5 {
		r := &relay{port: freePort(t, true, 0), tlsPort: freePort(t, false, 0), log: &logbuf.Buffer{}}
		metricsPort := freePort(t, false, 0)
		r.metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
		cmd := exec.Command(bin, "turn",
			"-turn-listen", fmt.Sprintf("127.0.0.1:%d", r.port),
			"-turn-tls-listen", fmt.Sprintf("127.0.0.1:%d", r.tlsPort),
			"-tls-cert", cert, "-tls-key", key,
			"-turn-public-ip", "127.0.0.1",
			"-turn-secret", secret,
			"-turn-allow-peer", "127.0.0.0/8",
			"-metrics-listen", fmt.Sprintf("127.0.0.1:%d", metricsPort),
			"-log-level", "info",
		)
		cmd.Dir = dir
		cmd.Env = cleanEnv()
		cmd.Stdout, cmd.Stderr = r.log, r.log
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting parley turn: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		stop := func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
		if err := r.waitReady(exited); err != nil {
			stop()
			lastErr = fmt.Errorf("%w\n%s", err, r.log.String())
			continue
		}
		t.Cleanup(func() {
			stop()
			if t.Failed() {
				t.Logf("relay log:\n%s", r.logTail())
			}
		})
		return r
	}
	t.Fatalf("parley turn did not start: %v", lastErr)
	return nil
}

// waitReady waits until /metrics answers and the TURN ports accept TCP.
func (r *relay) waitReady(exited <-chan error) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("parley turn exited: %v", err)
		default:
		}
		ok := true
		for _, p := range []int{r.port, r.tlsPort} {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), time.Second)
			if err != nil {
				ok = false
				break
			}
			c.Close()
		}
		if ok {
			if resp, err := http.Get(r.metricsURL); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("parley turn not ready within 15s")
}

// metrics reads the relay's Prometheus samples, summing a metric's labelled
// series (e.g. relayed packets by transport) under its bare name.
func (r *relay) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(r.metricsURL)
	if err != nil {
		t.Fatalf("GET %s: %v", r.metricsURL, err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// name{label="v",...} value [timestamp]; label values here hold
		// no spaces.
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(f[0], "{")
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			m[name] += v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading %s: %v", r.metricsURL, err)
	}
	if _, ok := m["parley_turn_allocations_total"]; !ok {
		t.Fatalf("%s has no parley_turn_allocations_total", r.metricsURL)
	}
	return m
}

func (r *relay) logTail() string { return r.log.Tail(30) }

// startPeer runs turnutils_peer, the echo peer, on 127.0.0.1. It listens on
// a port and the next one (uclient's RTCP sessions use port+1).
func startPeer(t *testing.T, bin string) int {
	t.Helper()
	port := freePort(t, false, 1)
	var out logbuf.Buffer
	cmd := exec.Command(bin, "-L", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting turnutils_peer: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	// Wait until both ports are bound.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if udpBound(port) && udpBound(port+1) {
			return port
		}
		select {
		case <-exited:
			t.Fatalf("turnutils_peer exited:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("turnutils_peer did not bind 127.0.0.1:%d and %d:\n%s", port, port+1, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// udpBound reports whether 127.0.0.1:port is taken (binding it fails).
func udpBound(port int) bool {
	c, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// freePort finds a 127.0.0.1 port free for UDP (and TCP too when both),
// with the next extra ports free for UDP as well.
func freePort(t *testing.T, both bool, extra int) int {
	t.Helper()
	for range 100 {
		var closers []io.Closer
		ok := true
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closers = append(closers, l)
		port := l.Addr().(*net.TCPAddr).Port
		if !both && extra == 0 {
			l.Close()
			return port
		}
		for p := port; p <= port+extra && ok; p++ {
			if p > 65535 {
				ok = false
				break
			}
			c, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				break
			}
			closers = append(closers, c)
		}
		for _, c := range closers {
			c.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no free port found")
	return 0
}

// cleanEnv is the environment without PARLEY_* settings, so that a
// developer's own configuration does not change the relay under test.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PARLEY_") {
			env = append(env, kv)
		}
	}
	return env
}
