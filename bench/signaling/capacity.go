package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// mem is one reading of the server's memory and goroutines.
type mem struct {
	rss, heapInuse, heapAlloc, stack, sys, goroutines, websockets float64
}

func (s *server) mem() (mem, error) {
	m, err := s.scrape()
	if err != nil {
		return mem{}, err
	}
	return mem{
		rss:        m["process_resident_memory_bytes"],
		heapInuse:  m["go_memstats_heap_inuse_bytes"],
		heapAlloc:  m["go_memstats_heap_alloc_bytes"],
		stack:      m["go_memstats_stack_inuse_bytes"],
		sys:        m["go_memstats_sys_bytes"],
		goroutines: m["go_goroutines"],
		websockets: m["parley_websockets"],
	}, nil
}

// memMedian reads k times, every, and returns each field's median.
func (s *server) memMedian(k int, every time.Duration) (mem, error) {
	var ms []mem
	for i := range k {
		if i > 0 {
			time.Sleep(every)
		}
		m, err := s.mem()
		if err != nil {
			return mem{}, err
		}
		ms = append(ms, m)
	}
	med := func(f func(mem) float64) float64 {
		v := make([]float64, len(ms))
		for i, m := range ms {
			v[i] = f(m)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return mem{
		rss:        med(func(m mem) float64 { return m.rss }),
		heapInuse:  med(func(m mem) float64 { return m.heapInuse }),
		heapAlloc:  med(func(m mem) float64 { return m.heapAlloc }),
		stack:      med(func(m mem) float64 { return m.stack }),
		sys:        med(func(m mem) float64 { return m.sys }),
		goroutines: med(func(m mem) float64 { return m.goroutines }),
		websockets: med(func(m mem) float64 { return m.websockets }),
	}, nil
}

// openConns joins len(rooms)*4 connections, 4 per room, conc at a time,
// each with its reader running.
func openConns(ctx context.Context, s *server, rooms []*benchRoom, conc int) ([]*conn, error) {
	n := len(rooms) * 4
	conns := make([]*conn, n)
	var (
		next     atomic.Int64
		failed   atomic.Int64
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
		t0       = time.Now()
	)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n || failed.Load() > 0 {
					return
				}
				var c *conn
				var err error
				for try := range 5 {
					if try > 0 {
						time.Sleep(time.Duration(try) * 200 * time.Millisecond)
					}
					if c, _, _, err = dialJoin(ctx, s, rooms[i/4], fmt.Sprintf("idle %d", i), ""); err == nil {
						break
					}
				}
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = fmt.Errorf("connection %d: %w", i, err) })
					return
				}
				go c.read()
				conns[i] = c
				if (i+1)%2000 == 0 {
					log.Printf("  %s joined (%.0f/s)", thousands(i+1), float64(i+1)/time.Since(t0).Seconds())
				}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return conns, firstErr
}

func closeAll(conns []*conn) {
	for _, c := range conns {
		if c != nil {
			c.ws.Close()
		}
	}
}

func runCapacityAndLatency(ctx context.Context, bin string, o options, doLatency bool, rep *report) error {
	log.Printf("capacity: starting parley under prlimit --nofile=%d", o.nofile)
	s, err := startServer(bin, o.nofile, o.logLevel, nil)
	if err != nil {
		return err
	}
	defer s.stop()
	time.Sleep(2 * time.Second)
	limit, baseFDs := s.fileLimit(), s.fds()
	n := o.n
	if n <= 0 {
		n = (limit - baseFDs - o.headroom) / 4 * 4
		// This process holds the other end of every connection.
		if own := clientLimit - ownFDs() - 30 - o.joinConc; own < n {
			log.Printf("capacity: this process may open only %d more files: N = %d", own, own)
			n = own
		}
	}
	n = n / 4 * 4
	idle0, err := s.memMedian(3, time.Second)
	if err != nil {
		return err
	}
	log.Printf("capacity: file limit %d, %d open at start; opening %s connections in %s rooms; idle server RSS %s, heap in use %s, %v goroutines",
		limit, baseFDs, thousands(n), thousands(n/4), mb(idle0.rss), mb(idle0.heapInuse), idle0.goroutines)

	rooms, err := s.createRooms(ctx, n/4+o.joinConc, 8)
	if err != nil {
		return fmt.Errorf("creating rooms: %w", err)
	}
	idleRooms, joinRooms := rooms[:n/4], rooms[n/4:]
	t0 := time.Now()
	conns, err := openConns(ctx, s, idleRooms, o.dialConc)
	defer closeAll(conns)
	if err != nil {
		return fmt.Errorf("opening idle connections: %w (server fds %d)", err, s.fds())
	}
	ramp := time.Since(t0)
	log.Printf("capacity: %s joined in %s; settling %s", thousands(n), ramp.Round(time.Millisecond), o.settle)
	sleepCtx(ctx, o.settle)
	held, err := s.memMedian(5, 2*time.Second)
	if err != nil {
		return err
	}
	fds := s.fds()
	perConn := func(a, b float64) float64 { return (b - a) / float64(n) }
	rssPer := perConn(idle0.rss, held.rss)
	rep.add("idle WebSockets held, joined 4 per room", fmt.Sprintf("%s (server: %s fds open of %s)", thousands(int(held.websockets)), thousands(fds), thousands(limit)),
		fmt.Sprintf("the file limit (%s) less %d kept free", thousands(limit), o.headroom), boolp(int(held.websockets) == n))
	rep.add("server RSS per connection (RSS over the idle baseline / N)", kb(rssPer), "≤ 36 KB (30 KB × 1.2)", boolp(rssPer <= 36*1024))
	rep.add("  of which Go heap in use per connection", kb(perConn(idle0.heapInuse, held.heapInuse)), "", nil)
	rep.add("  of which goroutine stacks per connection", kb(perConn(idle0.stack, held.stack)), "", nil)
	rep.add("  goroutines per connection", fmt.Sprintf("%.2f", perConn(idle0.goroutines, held.goroutines)), "", nil)
	rep.section(fmt.Sprintf("Capacity: N = %s connections in %s rooms, joined in %s (%.0f/s, %d at a time); idle server before: RSS %s, heap in use %s, stacks %s, %v goroutines; with N held after %s: RSS %s, heap in use %s (allocated %s), stacks %s, Go sys %s, %v goroutines.\n",
		thousands(n), thousands(n/4), ramp.Round(time.Millisecond), float64(n)/ramp.Seconds(), o.dialConc,
		mb(idle0.rss), mb(idle0.heapInuse), mb(idle0.stack), idle0.goroutines, o.settle,
		mb(held.rss), mb(held.heapInuse), mb(held.heapAlloc), mb(held.stack), mb(held.sys), held.goroutines))

	if o.fill && ctx.Err() == nil {
		fill(ctx, s, n, limit, rep)
	}
	if !doLatency || ctx.Err() != nil {
		return nil
	}
	return runLatency(ctx, s, o, conns, joinRooms, rep)
}

// fill opens more WebSockets (upgraded, not joined) until the server
// cannot accept another, then closes them: how close to its file limit the
// server holds connections, and that it serves again when some go. The
// sockets are opened by a child process (this program with -fill-worker),
// which has a file limit of its own.
func fill(ctx context.Context, s *server, n, limit int, rep *report) {
	self, err := os.Executable()
	if err != nil {
		log.Printf("fill: %v", err)
		return
	}
	cmd := exec.CommandContext(ctx, self, "-fill-worker", "ws://"+s.addr+"/ws")
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		log.Printf("fill: %v", err)
		return
	}
	var opened int
	_, err = fmt.Fscan(out, &opened)
	peak := s.fds()
	in.Close() // the child closes its sockets and exits
	cmd.Wait()
	if err != nil {
		log.Printf("fill: no count from the child: %v", err)
		return
	}
	recovered := false
	for range 100 {
		time.Sleep(200 * time.Millisecond)
		if res, err := s.hc.Get(s.origin + "/healthz"); err == nil {
			res.Body.Close()
			if recovered = res.StatusCode == 200; recovered {
				break
			}
		}
	}
	log.Printf("fill: %d more WebSockets opened before the server stopped accepting (fds %d of %d); serving again afterwards: %v", opened, peak, limit, recovered)
	rep.add("WebSockets open at the file limit (N + more opened until accept fails)", fmt.Sprintf("%s (server fds %s of %s)", thousands(n+opened), thousands(peak), thousands(limit)),
		"accepts until the limit, serves again after", boolp(recovered && peak >= limit-5))
}

// runFillWorker is the child of fill: it opens WebSockets to url until
// three in a row fail, prints how many it holds, and closes them when its
// standard input ends.
func runFillWorker(url string) int {
	raiseFileLimit()
	origin := "http://" + strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/ws")
	d := *dialer
	d.HandshakeTimeout = 2 * time.Second
	var held []*conn
	for fails := 0; fails < 3 && len(held) < 20000; {
		ws, _, err := d.Dial(url, http.Header{"Origin": {origin}})
		if err != nil {
			fails++
			continue
		}
		fails = 0
		c := &conn{ws: ws, closed: make(chan struct{})}
		go c.read()
		held = append(held, c)
	}
	fmt.Println(len(held))
	io.Copy(io.Discard, os.Stdin)
	closeAll(held)
	return 0
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// joinOnce dials, joins and leaves; it returns dial→welcome and join→welcome.
func joinOnce(ctx context.Context, s *server, rm *benchRoom, name string) (time.Duration, time.Duration, error) {
	c, total, join, err := dialJoin(ctx, s, rm, name, "")
	if err != nil {
		return 0, 0, err
	}
	go c.read()
	return total, join, c.leave()
}

func runLatency(ctx context.Context, s *server, o options, conns []*conn, joinRooms []*benchRoom, rep *report) error {
	// Joins one at a time, before any load: the floor.
	var idleTotal, idleJoin []int64
	for i := range o.idleJoins {
		total, join, err := joinOnce(ctx, s, joinRooms[0], fmt.Sprintf("alone %d", i))
		if err != nil {
			return fmt.Errorf("join: %w", err)
		}
		idleTotal, idleJoin = append(idleTotal, int64(total)), append(idleJoin, int64(join))
	}
	it, ij := summarize(idleTotal), summarize(idleJoin)
	log.Printf("latency: joins one at a time, no load: dial+join %v; join alone %v", it, ij)

	// Relay: each sender sends to the next member of its room.
	ns := min(o.senders, len(conns)) / 4 * 4
	senders := conns[:ns]
	interval := time.Duration(float64(ns) / o.rate * float64(time.Second))
	log.Printf("latency: %s senders in %s rooms, one message each every %s (%.0f/s offered), %d joins/s by %d workers; warm-up %s, window %s",
		thousands(ns), thousands(ns/4), interval, o.rate, int(o.joinRate), o.joinConc, o.warmup, o.relayDur)
	var (
		sent    atomic.Int64
		sendErr atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	// The senders leave gorilla for raw frames and epoll (raw_linux.go).
	raws := make([]*rawConn, ns)
	for i, c := range senders {
		r, err := takeOver(c)
		if err != nil {
			return fmt.Errorf("raw sender: %w", err)
		}
		raws[i] = r
	}
	stopReaders := make(chan struct{})
	readers, err := epollReaders(raws, o.readLoops, stopReaders)
	if err != nil {
		return err
	}
	defer func() {
		close(stopReaders)
		readers.Wait()
	}()
	start := time.Now()
	for i := range senders {
		r := raws[i]
		to := senders[i/4*4+(i+1)%4].id
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf, frame []byte
			next := start.Add(time.Duration(rand.Int64N(int64(interval))))
			t := time.NewTimer(time.Hour)
			defer t.Stop()
			for {
				if d := time.Until(next); d > 0 {
					t.Reset(d)
					select {
					case <-stop:
						return
					case <-t.C:
					}
				} else {
					select {
					case <-stop:
						return
					default:
					}
				}
				var err error
				if buf, frame, err = r.sendBench(buf, frame, to); err != nil {
					sendErr.Add(1)
					return
				}
				sent.Add(1)
				next = next.Add(interval)
			}
		}()
	}

	// Joins under load, each worker in its own room.
	var (
		joinMu              sync.Mutex
		loadTotal, loadJoin []int64
		joinRec             atomic.Bool
		joinErrs            atomic.Int64
		firstJoinErr        atomic.Value
		joiners             sync.WaitGroup
		workers             = min(o.joinConc, len(joinRooms))
		joinEvery           = time.Duration(float64(workers) / o.joinRate * float64(time.Second))
		joinStart           = time.Now()
	)
	for w := range workers {
		joiners.Add(1)
		go func() {
			defer joiners.Done()
			next := joinStart.Add(time.Duration(w) * joinEvery / time.Duration(workers))
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				case <-time.After(time.Until(next)):
				}
				next = next.Add(joinEvery)
				rec := joinRec.Load()
				total, join, err := joinOnce(ctx, s, joinRooms[w], fmt.Sprintf("joiner %d-%d", w, k))
				if err != nil {
					joinErrs.Add(1)
					firstJoinErr.CompareAndSwap(nil, err.Error())
					continue
				}
				if rec && joinRec.Load() {
					joinMu.Lock()
					loadTotal, loadJoin = append(loadTotal, int64(total)), append(loadJoin, int64(join))
					joinMu.Unlock()
				}
			}
		}()
	}

	sleepCtx(ctx, o.warmup)
	for _, c := range senders {
		c.takeSamples()
	}
	sent0, relayed0, cpu0, t0 := sent.Load(), relayed.Load(), s.cpu(), time.Now()
	gc0, _ := s.scrape()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	own0 := procCPU("/proc/self/stat")
	busy0, total0 := machineCPU()
	if o.perfOut != "" {
		go perfRecord(s.pid, o.perfOut, o.relayDur/2)
	}
	recording.Store(true)
	joinRec.Store(true)
	sleepCtx(ctx, o.relayDur)
	recording.Store(false)
	joinRec.Store(false)
	window := time.Since(t0)
	sent1, relayed1, cpu1 := sent.Load(), relayed.Load(), s.cpu()
	own1 := procCPU("/proc/self/stat")
	gc1, _ := s.scrape()
	runtime.ReadMemStats(&ms1)
	gcNote := fmt.Sprintf("server: %.0f GC cycles (%.1f ms of pauses), %.0f bytes and %.1f objects allocated per message sent; load generator: %d GC cycles",
		gc1["go_gc_duration_seconds_count"]-gc0["go_gc_duration_seconds_count"], (gc1["go_gc_duration_seconds_sum"]-gc0["go_gc_duration_seconds_sum"])*1000,
		(gc1["go_memstats_alloc_bytes_total"]-gc0["go_memstats_alloc_bytes_total"])/float64(sent.Load()-sent0),
		(gc1["go_memstats_mallocs_total"]-gc0["go_memstats_mallocs_total"])/float64(sent.Load()-sent0), ms1.NumGC-ms0.NumGC)
	log.Printf("latency: %s", gcNote)
	busy1, total1 := machineCPU()
	ownCPU := float64(own1-own0) / float64(window) * 100
	// The machine's busy time as a share of all its CPUs, in % of one core.
	machine := float64(busy1-busy0) / float64(total1-total0) * float64(onlineCPUs()) * 100
	m, _ := s.mem()
	close(stop)
	wg.Wait()
	joiners.Wait()
	time.Sleep(time.Second) // the last messages arrive
	relayedAll, sentAll := relayed.Load(), sent.Load()

	var samples []int64
	perSecond := map[int32][]int64{}
	for _, c := range senders {
		lat, at := c.takeSamples()
		samples = append(samples, lat...)
		for i, sec := range at {
			perSecond[sec] = append(perSecond[sec], lat[i])
		}
	}
	log.Printf("latency: relay by second of the window (p50/p99 ms): %s", timeline(perSecond))
	rd := summarize(samples)
	lt, lj := summarize(loadTotal), summarize(loadJoin)
	offered := float64(sent1-sent0) / window.Seconds()
	delivered := float64(relayed1-relayed0) / window.Seconds()
	cpu := float64(cpu1-cpu0) / float64(window) * 100
	log.Printf("latency: CPU in %% of one core: server %.0f, load generator %.0f, whole machine %.0f of %d00", cpu, ownCPU, machine, onlineCPUs())
	log.Printf("latency: relay %v; sent %.0f/s, delivered %.0f/s; server CPU %.0f %% of one core; joins under load: dial+join %v, join alone %v; join errors %d %v",
		rd, offered, delivered, cpu, lt, lj, joinErrs.Load(), firstJoinErr.Load())

	rep.add("relay rate offered / delivered (window)", fmt.Sprintf("%.0f / %.0f msg/s", offered, delivered), fmt.Sprintf("%.0f msg/s", o.rate),
		boolp(delivered >= 0.98*o.rate))
	rep.add("relay latency, median (send → receive, one way)", ms(rd.p50), "< 1 ms", boolp(rd.n > 0 && rd.p50 < time.Millisecond))
	rep.add("relay latency, p99", ms(rd.p99), "", nil)
	rep.add("join latency under that load, median (dial + join → welcome)", ms(lt.p50), "< 1 ms", boolp(lt.n > 0 && lt.p50 < time.Millisecond))
	rep.add("join latency under that load, p99", ms(lt.p99), "", nil)
	rep.add("join latency alone, median (dial + join → welcome; join → welcome)", ms(it.p50)+"; "+ms(ij.p50), "< 1 ms", boolp(it.p50 < time.Millisecond))
	var errs []string
	serverErrors.Range(func(k, v any) bool {
		errs = append(errs, fmt.Sprintf("%s × %d", k, v.(*atomic.Int64).Load()))
		return true
	})
	slices.Sort(errs)
	rep.section(fmt.Sprintf("Latency, with the %s idle connections held: relay over %s senders in %s rooms (each sends every %s to the next in its room; %s warm-up, then a %s window): %v; messages sent %s, arrived %s in all (errors from the server: %v; send errors %d; bad frames or epoll errors %d); CPU in the window, in %% of one core: server %.0f, load generator %.0f, the whole machine %.0f of %d00 (the rest is other jobs); heap in use at the end %s, %v goroutines; %s.\n\n"+
		"Joins under that load (%d workers, each in its own room, %.0f/s: dial, join, welcome, leave): dial+join %v; join alone %v; %d failed%s.\n\n"+
		"Joins one at a time with no load (%d): dial+join %v; join alone %v.\n",
		thousands(len(conns)), thousands(ns), thousands(ns/4), interval, o.warmup, o.relayDur, rd, thousands(int(sentAll)), thousands(int(relayedAll)), errs, sendErr.Load(), rawErrors.Load(), cpu, ownCPU, machine, onlineCPUs(), mb(m.heapInuse), m.goroutines, gcNote,
		workers, o.joinRate, lt, lj, joinErrs.Load(), errText(firstJoinErr.Load()),
		o.idleJoins, it, ij))
	return nil
}

func errText(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprintf(" (first: %v)", v)
}

// perfRecord samples the server with perf for d (call graphs by frame
// pointer), into dir/perf.data, for `perf report -i`.
func perfRecord(pid int, dir string, d time.Duration) {
	os.MkdirAll(dir, 0o755)
	out := dir + "/perf.data"
	cmd := exec.Command("perf", "record", "-F", "999", "-g", "-p", fmt.Sprint(pid), "-o", out, "--", "sleep", fmt.Sprint(int(d.Seconds())))
	if b, err := cmd.CombinedOutput(); err != nil {
		log.Printf("perf record: %v: %s", err, b)
		return
	}
	log.Printf("perf: server profile in %s", out)
}

// timeline prints p50/p99 of each second's samples, in order.
func timeline(perSecond map[int32][]int64) string {
	secs := make([]int32, 0, len(perSecond))
	for s := range perSecond {
		secs = append(secs, s)
	}
	slices.Sort(secs)
	var parts []string
	for _, s := range secs {
		d := summarize(perSecond[s])
		parts = append(parts, fmt.Sprintf("%.1f/%.0f", float64(d.p50)/1e6, float64(d.p99)/1e6))
	}
	return strings.Join(parts, " ")
}
