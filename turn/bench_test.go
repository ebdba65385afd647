//go:build linux || darwin

package turn

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRelay pushes 160-byte packets (a typical Opus/RTP payload size)
// at a fixed rate from a pion client, over a bound channel, through the
// relay to a plain UDP sink on 127.0.0.1, and reports:
//
//	pkts/s      packets per second received at the sink
//	loss-%      packets sent by the client but never received at the sink
//	cpu-s/Mpkt  process CPU (user+sys, getrusage) per million relayed packets
//
// cpu-s/Mpkt covers the whole test process, so it includes the in-process
// load generator (pion client) and the sink, not only the relay: it is an
// upper bound for the relay's cost. ns/op is suppressed, being set by the
// pacing. b.N is the number of packets, capped to 3 s of sending.
//
// Environment: PARLEY_BENCH_PPS sets the rate (default 20000);
// PARLEY_BENCH_SOCKBUF sets the socket buffer of the relay, the server's
// and client's sockets and the sink (default 2 MiB; -1 keeps the kernel
// default, to see what the buffers are for).
//
//	go test -bench Relay -run '^$' ./turn/
func BenchmarkRelay(b *testing.B) {
	pps := envInt(b, "PARLEY_BENCH_PPS", 20000)
	sockbuf := envInt(b, "PARLEY_BENCH_SOCKBUF", DefaultSocketBuffer)
	const payload = 160
	n := min(b.N, 3*pps)

	cfg := baseConfig()
	cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.SocketBuffer = sockbuf
	cfg.BandwidthPerAllocation = -1 // this measures the relay, not the cap (80k pps x 160 B is over it)
	s := startServer(b, cfg, discardLogger())
	setBuffers(b, s.udp, sockbuf)

	user, pass := Credentials(testSecret, "bench", time.Hour, time.Now())
	client, clientConn := newClientConn(b, s.udpAddr, user, pass)
	setBuffers(b, clientConn, sockbuf)
	relay, err := client.Allocate()
	if err != nil {
		b.Fatal(err)
	}
	defer relay.Close()

	sinkConn := sink(b, "127.0.0.1")
	setBuffers(b, sinkConn, sockbuf)
	dst := sinkConn.LocalAddr()

	// Bind the channel: the first write creates the permission and starts
	// ChannelBind in the background; until it completes, pion sends Send
	// indications.
	ch, ok := relay.(interface {
		FindChannelNumberByAddr(net.Addr) (uint16, bool)
		IsChannelActive(uint16) bool
	})
	if !ok {
		b.Fatalf("pion relay conn %T has no channel accessors", relay)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, err := relay.WriteTo([]byte("warm-up"), dst); err != nil {
			b.Fatal(err)
		}
		if num, ok := ch.FindChannelNumberByAddr(dst); ok && ch.IsChannelActive(num) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("channel never bound")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Drain the warm-up packets.
	for {
		if _, _, ok := readWithin(sinkConn, 50*time.Millisecond); !ok {
			break
		}
	}

	var received atomic.Int64
	var lastRecv atomic.Int64 // unix nanos
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := sinkConn.ReadFrom(buf); err != nil {
				return
			}
			received.Add(1)
			lastRecv.Store(time.Now().UnixNano())
		}
	}()

	msg := make([]byte, payload)
	relayedBefore := s.Stats().PacketsRelayed
	cpuBefore := cpuTime(b)
	b.ResetTimer()
	start := time.Now()
	sent := 0
	for sent < n {
		due := min(n, int(time.Since(start).Seconds()*float64(pps))+1)
		for ; sent < due; sent++ {
			if _, err := relay.WriteTo(msg, dst); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
	sendTime := time.Since(start)
	// Wait until the sink has everything or nothing more arrives.
	for last, idle := received.Load(), 0; received.Load() < int64(sent) && idle < 20; idle++ {
		time.Sleep(10 * time.Millisecond)
		if cur := received.Load(); cur != last {
			last, idle = cur, 0
		}
	}
	b.StopTimer()
	cpu := cpuTime(b) - cpuBefore
	relayed := s.Stats().PacketsRelayed - relayedBefore
	_ = sinkConn.SetReadDeadline(time.Now())
	<-done

	got := received.Load()
	elapsed := sendTime
	if l := lastRecv.Load(); l != 0 && time.Unix(0, l).Sub(start) > elapsed {
		elapsed = time.Unix(0, l).Sub(start)
	}
	rate := float64(got) / elapsed.Seconds()
	loss := 100 * float64(int64(sent)-got) / float64(sent)
	cpuPerM := 0.0
	if relayed > 0 {
		cpuPerM = cpu.Seconds() / float64(relayed) * 1e6
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(rate, "pkts/s")
	b.ReportMetric(loss, "loss-%")
	b.ReportMetric(cpuPerM, "cpu-s/Mpkt")
	b.Logf("target=%d pps  sent=%d  sink=%d  relayed=%d  rate=%.0f pkts/s  loss=%.2f%%  cpu=%.2fs  cpu-s/Mpkt=%.1f  sockbuf=%d",
		pps, sent, got, relayed, rate, loss, cpu.Seconds(), cpuPerM, sockbuf)
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n == 0 {
		b.Fatalf("%s=%q: want a non-zero integer", name, v)
	}
	return n
}

func setBuffers(b *testing.B, conn any, size int) {
	if size < 0 {
		return
	}
	if _, _, err := SetSocketBuffers(conn, size); err != nil {
		b.Fatal(err)
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
