// Command signaling is the load benchmark of Parley's signaling server
// (issue 10, "Load"): it builds and runs the real parley binary on
// 127.0.0.1 under prlimit, and is itself the load generator, in a separate
// process. It measures
//
//   - capacity and memory: as many idle, joined WebSockets as the server's
//     file limit allows (4 per room, rooms made through POST /api/rooms with
//     join verifiers, the page's Origin), and the server's RSS and heap per
//     connection over its idle baseline; then it opens more until the
//     server cannot accept any, to show where the limit is;
//   - latency, with those connections held: join (dial + join → welcome)
//     and relay (e2ee messages to a peer in the same room, timestamped in
//     the payload, at 20,000 messages/s over thousands of senders);
//   - a soak on a fresh server: constant join/leave churn (leave, dropped
//     connections kept for the resume grace, resumes) while it samples
//     goroutines and heap, and says whether they grow;
//
// and prints every figure against its target. bench/signaling.md explains
// the method; bench/README.md records the figures. It is a benchmark, not
// a test: it exits 0 whatever the figures (non-zero only when it cannot run).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
)

// clientLimit is this process's file limit: it holds one socket per
// connection, like the server.
var clientLimit int

type options struct {
	parley   string
	nofile   int
	headroom int
	n        int
	phases   string
	logLevel string

	settle    time.Duration
	fill      bool
	dialConc  int
	rate      float64
	senders   int
	relayDur  time.Duration
	warmup    time.Duration
	readLoops int
	pin       bool
	joinRate  float64
	joinConc  int
	idleJoins int

	soak       time.Duration
	soakRate   float64
	soakRooms  int
	soakIdle   int
	soakSample time.Duration
	grace      time.Duration
	drain      bool
	samplesOut string
	perfOut    string
}

func main() {
	var o options
	flag.StringVar(&o.parley, "parley", "", "parley binary to run (default: build ./cmd/parley of this repository)")
	flag.IntVar(&o.nofile, "nofile", 20000, "the server's file limit (prlimit --nofile, soft and hard)")
	flag.IntVar(&o.headroom, "headroom", 100, "file descriptors left free below the limit when opening the idle connections (for join tests, metrics, the database)")
	flag.IntVar(&o.n, "n", 0, "idle connections to open (0: the server's file limit minus the descriptors it has open minus -headroom, rounded down to whole rooms)")
	flag.StringVar(&o.phases, "phases", "capacity,latency,soak", "phases to run (capacity,latency,soak; latency needs capacity)")
	flag.StringVar(&o.logLevel, "log-level", "info", "the server's -log-level (its default is info)")
	flag.DurationVar(&o.settle, "settle", 25*time.Second, "wait after the last connection joined before reading memory (covers a keepalive ping round)")
	flag.BoolVar(&o.fill, "fill", true, "after the memory figures, open connections until the server cannot accept more")
	flag.IntVar(&o.dialConc, "dial-concurrency", 32, "connections dialled at once while opening the idle ones")
	flag.Float64Var(&o.rate, "rate", 20000, "relay: messages per second offered, in total")
	flag.IntVar(&o.senders, "senders", 4000, "relay: sending connections (whole rooms of 4; each sends to the next in its room); the server allows 20 messages/s per connection")
	flag.BoolVar(&o.pin, "pin", false, "run the server on CPU 0 and this load generator on CPU 1 (taskset), so that neither takes the other's CPU")
	flag.IntVar(&o.readLoops, "read-loops", 2, "relay: epoll loops reading the senders' sockets")
	flag.DurationVar(&o.relayDur, "duration", 30*time.Second, "relay: measured window")
	flag.DurationVar(&o.warmup, "warmup", 5*time.Second, "relay: warm-up before the window")
	flag.Float64Var(&o.joinRate, "join-rate", 100, "joins per second during the relay window (dial + join + leave)")
	flag.IntVar(&o.joinConc, "join-workers", 8, "connections joining at once during the relay window (each in its own room)")
	flag.IntVar(&o.idleJoins, "idle-joins", 500, "joins measured one at a time before the relay load starts")
	flag.DurationVar(&o.soak, "soak", 10*time.Minute, "soak: length of the churn")
	flag.Float64Var(&o.soakRate, "soak-rate", 40, "soak: joins per second")
	flag.IntVar(&o.soakRooms, "soak-rooms", 1000, "soak: rooms the churn joins")
	flag.IntVar(&o.soakIdle, "soak-idle", 2000, "soak: idle connections held throughout (whole rooms of 4)")
	flag.DurationVar(&o.soakSample, "sample", 5*time.Second, "soak: sampling interval")
	flag.DurationVar(&o.grace, "grace", 60*time.Second, "the server's resume grace (a dropped member keeps its place this long)")
	flag.BoolVar(&o.drain, "drain", true, "soak: after the churn, wait out the grace and compare with the start")
	flag.StringVar(&o.samplesOut, "samples", "", "soak: also write every sample to this CSV file")
	flag.StringVar(&o.perfOut, "perf", "", "latency: record the server with perf (linux-perf) for half the relay window, into this directory")
	fillWorker := flag.String("fill-worker", "", "(internal) open WebSockets to this ws:// URL until refused, in a child process")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: go run ./bench/signaling [flags]   (as root; see bench/signaling.md)\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	log.SetFlags(log.Ltime)
	log.SetPrefix("bench/signaling ")

	if *fillWorker != "" {
		os.Exit(runFillWorker(*fillWorker))
	}
	if o.pin && os.Getenv("PARLEY_BENCH_PINNED") == "" {
		// Again on CPU 1 alone: every thread of the new process is there.
		self, err := os.Executable()
		if err != nil {
			log.Fatal(err)
		}
		cmd := exec.Command("taskset", append([]string{"-c", "1", self}, os.Args[1:]...)...)
		cmd.Env = append(os.Environ(), "PARLEY_BENCH_PINNED=1")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		signal.Ignore(os.Interrupt) // the child gets ^C and cleans up
		if err := cmd.Run(); err != nil {
			log.Fatalf("load generator under taskset: %v", err)
		}
		return
	}
	if o.pin {
		serverCPUs = "0"
	}
	clientLimit = raiseFileLimit()
	// The load generator's garbage is collected less often than Go's
	// default: it shares the CPUs with the server it measures.
	debug.SetGCPercent(400)
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	bin := o.parley
	if bin == "" {
		var err error
		if bin, err = build(); err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(filepath.Dir(bin))
	}
	rep := &report{}
	rep.note("machine: %s", machine())
	rep.note("parley: %s", describe(bin, o.parley == ""))
	rep.note("load generator: this process, file limit %d", clientLimit)
	if o.pin {
		rep.note("-pin: the server runs on CPU 0 alone, the load generator on CPU 1 alone")
	}
	started := time.Now()
	want := map[string]bool{}
	for _, p := range strings.Split(o.phases, ",") {
		want[strings.TrimSpace(p)] = true
	}
	if want["capacity"] || want["latency"] {
		if err := runCapacityAndLatency(ctx, bin, o, want["latency"], rep); err != nil {
			log.Printf("capacity/latency: %v", err)
			rep.note("capacity/latency failed: %v", err)
		}
	}
	if want["soak"] && ctx.Err() == nil {
		if err := runSoak(ctx, bin, o, rep); err != nil {
			log.Printf("soak: %v", err)
			rep.note("soak failed: %v", err)
		}
	}
	rep.note("total time %s", time.Since(started).Round(time.Second))
	rep.print(os.Stdout)
}

// raiseFileLimit lets this process hold as many sockets as it may: the
// soft limit up to the hard one (Go does that at start too), and the hard
// one to 100,000 where the process is allowed to (CAP_SYS_RESOURCE). It
// returns the limit in force.
func raiseFileLimit() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return -1
	}
	if l.Max < 100000 {
		up := syscall.Rlimit{Cur: 100000, Max: 100000}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up) == nil {
			return int(up.Cur)
		}
	}
	l.Cur = l.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	return int(l.Cur)
}

// ownFDs counts this process's open file descriptors.
func ownFDs() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents)
}

// build compiles ./cmd/parley of the repository this program is in.
func build() (string, error) {
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	dir, err := os.MkdirTemp("", "parley-bench-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "parley")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/parley")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(root)))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	log.Printf("building parley in %s", cmd.Dir)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/parley: %w", err)
	}
	return bin, nil
}

// describe names the binary: its Go version and, when this program built
// it, the commit of the repository (and whether it had uncommitted changes).
func describe(bin string, built bool) string {
	out, _ := exec.Command("go", "version", bin).Output()
	ver := strings.TrimSpace(string(out))
	if i := strings.LastIndex(ver, " "); i >= 0 {
		ver = ver[i+1:]
	}
	if !built {
		return fmt.Sprintf("%s (%s)", bin, ver)
	}
	rev, _ := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	dirty, _ := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output()
	s := fmt.Sprintf("built from commit %s", strings.TrimSpace(string(rev)))
	if len(dirty) > 0 {
		s += " with uncommitted changes"
	}
	return fmt.Sprintf("%s, %s", s, ver)
}

func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.Fields(strings.Split(string(b), "\n")[0])[1] + " kB RAM"
	}
	return fmt.Sprintf("%d CPUs (%s), %s, %s, load average at start %s", onlineCPUs(), model, mem, runtime.Version(),
		strings.Join(strings.Fields(string(load))[:3], " "))
}
