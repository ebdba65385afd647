package main

import (
	"context"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// churnRoom is a room the soak's sessions join, with the client's view of
// its four places: a place is free from freeAt on. A member that dropped
// keeps its place on the server for the resume grace, so its place frees
// only after that.
type churnRoom struct {
	rm     *benchRoom
	mu     sync.Mutex
	freeAt [4]time.Time
}

var busy = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

func (r *churnRoom) take(now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, t := range r.freeAt {
		if !t.After(now) {
			r.freeAt[i] = busy
			return i
		}
	}
	return -1
}

func (r *churnRoom) release(slot int, at time.Time) {
	r.mu.Lock()
	r.freeAt[slot] = at
	r.mu.Unlock()
}

type churnStats struct {
	started, skipped, joinErrs, left, dropped, resumed, resumeErrs, leaveErrs atomic.Int64
}

// session is one participant of the churn: join, say something, stay a
// moment, then go in one of three ways: leave (50 %), drop the connection
// (35 %, half with a reset, half with a FIN and no close frame), or drop
// and come back with the resume token a second later, then leave (15 %).
func session(ctx context.Context, s *server, cr *churnRoom, slot int, grace time.Duration, st *churnStats, k int64) {
	kept := grace + 5*time.Second // the server's grace, and then some
	c, _, _, err := dialJoin(ctx, s, cr.rm, fmt.Sprintf("churn %d", k), "")
	if err != nil {
		st.joinErrs.Add(1)
		cr.release(slot, time.Now().Add(kept))
		return
	}
	go c.read()
	// As a page does: a hello to everyone, then a few addressed messages.
	buf, _ := c.sendBench(nil, "")
	for _, p := range c.peers[:min(len(c.peers), 2)] {
		buf, _ = c.sendBench(buf, p)
	}
	sleepCtx(ctx, 500*time.Millisecond+rand.N(2500*time.Millisecond))
	switch r := rand.IntN(100); {
	case r < 50:
		if err := c.leave(); err != nil {
			st.leaveErrs.Add(1)
		}
		st.left.Add(1)
		cr.release(slot, time.Now())
	case r < 85:
		c.drop(r%2 == 0)
		st.dropped.Add(1)
		cr.release(slot, time.Now().Add(kept))
	default:
		c.drop(false)
		st.dropped.Add(1)
		sleepCtx(ctx, time.Second)
		c2, _, _, err := dialJoin(ctx, s, cr.rm, "resumed", c.resume)
		if err != nil {
			st.resumeErrs.Add(1)
			cr.release(slot, time.Now().Add(kept))
			return
		}
		st.resumed.Add(1)
		go c2.read()
		sleepCtx(ctx, 500*time.Millisecond)
		if err := c2.leave(); err != nil {
			st.leaveErrs.Add(1)
		}
		st.left.Add(1)
		cr.release(slot, time.Now())
	}
}

type sample struct {
	t time.Duration
	m mem
}

func runSoak(ctx context.Context, bin string, o options, rep *report) error {
	log.Printf("soak: starting a fresh parley under prlimit --nofile=%d", o.nofile)
	s, err := startServer(bin, o.nofile, o.logLevel, nil)
	if err != nil {
		return err
	}
	defer s.stop()
	rooms, err := s.createRooms(ctx, o.soakIdle/4+o.soakRooms, 8)
	if err != nil {
		return fmt.Errorf("creating rooms: %w", err)
	}
	idle, err := openConns(ctx, s, rooms[:o.soakIdle/4], o.dialConc)
	defer closeAll(idle)
	if err != nil {
		return fmt.Errorf("opening idle connections: %w", err)
	}
	churn := make([]*churnRoom, o.soakRooms)
	for i := range churn {
		churn[i] = &churnRoom{rm: rooms[o.soakIdle/4+i]}
	}
	sleepCtx(ctx, 5*time.Second)
	before, err := s.memMedian(3, time.Second)
	if err != nil {
		return err
	}
	log.Printf("soak: %s idle connections held; before the churn: %v goroutines, heap in use %s, RSS %s; churn %.0f joins/s in %d rooms for %s",
		thousands(len(idle)), before.goroutines, mb(before.heapInuse), mb(before.rss), o.soakRate, o.soakRooms, o.soak)

	var (
		st       churnStats
		sessions sync.WaitGroup
		samples  []sample
		smu      sync.Mutex
		t0       = time.Now()
		end      = t0.Add(o.soak)
		stopSamp = make(chan struct{})
		sampDone = make(chan struct{})
	)
	var csv *os.File
	if o.samplesOut != "" {
		if csv, err = os.Create(o.samplesOut); err != nil {
			return err
		}
		defer csv.Close()
		fmt.Fprintln(csv, "seconds,phase,goroutines,heap_inuse_bytes,heap_alloc_bytes,stack_inuse_bytes,rss_bytes,websockets")
	}
	record := func(phase string) {
		m, err := s.mem()
		if err != nil {
			log.Printf("soak: scrape: %v", err)
			return
		}
		t := time.Since(t0)
		smu.Lock()
		if phase == "churn" {
			samples = append(samples, sample{t, m})
		}
		smu.Unlock()
		if csv != nil {
			fmt.Fprintf(csv, "%.1f,%s,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f\n", t.Seconds(), phase, m.goroutines, m.heapInuse, m.heapAlloc, m.stack, m.rss, m.websockets)
		}
		if int(t/o.soakSample)%int(max(1, time.Minute/o.soakSample)) == 0 || phase != "churn" {
			log.Printf("soak %s %4.0fs: goroutines %v, heap in use %s, RSS %s, websockets %v; sessions %d, skipped %d, join errors %d, resumed %d, resume errors %d",
				phase, t.Seconds(), m.goroutines, mb(m.heapInuse), mb(m.rss), m.websockets, st.started.Load(), st.skipped.Load(), st.joinErrs.Load(), st.resumed.Load(), st.resumeErrs.Load())
		}
	}
	go func() {
		defer close(sampDone)
		tick := time.NewTicker(o.soakSample)
		defer tick.Stop()
		record("churn")
		for {
			select {
			case <-stopSamp:
				return
			case <-tick.C:
				record("churn")
			}
		}
	}()

	every := time.Duration(float64(time.Second) / o.soakRate)
	tick := time.NewTicker(every)
	for k := int64(0); time.Now().Before(end) && ctx.Err() == nil; k++ {
		<-tick.C
		now := time.Now()
		var cr *churnRoom
		slot := -1
		for range 20 {
			cr = churn[rand.IntN(len(churn))]
			if slot = cr.take(now); slot >= 0 {
				break
			}
		}
		if slot < 0 {
			st.skipped.Add(1)
			continue
		}
		st.started.Add(1)
		sessions.Add(1)
		go func() {
			defer sessions.Done()
			session(ctx, s, cr, slot, o.grace, &st, k)
		}()
	}
	tick.Stop()
	close(stopSamp)
	<-sampDone
	churnTime := time.Since(t0)
	sessions.Wait()

	var drained mem
	if o.drain && ctx.Err() == nil {
		log.Printf("soak: churn over; waiting out the resume grace (%s + 15 s) with the idle connections held", o.grace)
		sleepCtx(ctx, o.grace+15*time.Second)
		if drained, err = s.memMedian(3, time.Second); err != nil {
			return err
		}
		if csv != nil {
			record("drained")
		}
	}

	// Verdict: the first minute after the plateau (the grace plus 30 s:
	// dropped members are kept for the grace, so their number only stops
	// rising then) against the last minute.
	warm := o.grace + 30*time.Second
	win := min(time.Minute, (churnTime-warm)/2)
	if win <= 0 {
		return fmt.Errorf("soak of %s is too short for a verdict: it needs more than the grace + 30 s", o.soak)
	}
	avg := func(from, to time.Duration) (g, h, r, w float64, n int) {
		for _, x := range samples {
			if x.t >= from && x.t <= to {
				g, h, r, w, n = g+x.m.goroutines, h+x.m.heapInuse, r+x.m.rss, w+x.m.websockets, n+1
			}
		}
		if n > 0 {
			g, h, r, w = g/float64(n), h/float64(n), r/float64(n), w/float64(n)
		}
		return
	}
	fg, fh, fr, fw, fn := avg(warm, warm+win)
	lg, lh, lr, lw, ln := avg(churnTime-win, churnTime)
	gOK := lg <= fg*1.05+20
	hOK := lh <= fh*1.10
	slopeG, slopeH := slope(samples, warm, func(m mem) float64 { return m.goroutines }), slope(samples, warm, func(m mem) float64 { return m.heapInuse })
	rep.add(fmt.Sprintf("soak goroutines, first → last minute after the %s plateau", warm),
		fmt.Sprintf("%.0f → %.0f (%+.1f %%; trend %+.1f/min)", fg, lg, (lg/fg-1)*100, slopeG), "no growth (≤ +5 % + 20)", boolp(gOK))
	rep.add("soak heap in use, first → last minute", fmt.Sprintf("%s → %s (%+.1f %%; trend %+.2f MB/min)", mb(fh), mb(lh), (lh/fh-1)*100, slopeH/(1<<20)), "no growth (≤ +10 %)", boolp(hOK))
	if o.drain && drained.goroutines > 0 {
		ok := drained.goroutines <= before.goroutines+10
		rep.add("soak goroutines before the churn → after it and the grace", fmt.Sprintf("%.0f → %.0f", before.goroutines, drained.goroutines), "back to the start (± 10)", boolp(ok))
	}

	pick := func(at time.Duration) sample {
		best := samples[0]
		for _, x := range samples {
			if x.t <= at {
				best = x
			}
		}
		return best
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Soak: %s of churn at %.0f joins/s into %d rooms (4 places each; %s idle connections held in %d more rooms), on a fresh server; sampled every %s. Sessions %s (skipped for want of a free place: %d; join errors %d); ended by leave %d, by a dropped connection %d (of which resumed a second later, then left: %d; resume errors %d); leave errors %d.\n\n",
		churnTime.Round(time.Second), o.soakRate, o.soakRooms, thousands(len(idle)), len(idle)/4, o.soakSample,
		thousands(int(st.started.Load())), st.skipped.Load(), st.joinErrs.Load(), st.left.Load(), st.dropped.Load(), st.resumed.Load(), st.resumeErrs.Load(), st.leaveErrs.Load())
	fmt.Fprintln(&b, "| soak | time | goroutines | heap in use | RSS | WebSockets |")
	fmt.Fprintln(&b, "|---|---:|---:|---:|---:|---:|")
	fmt.Fprintf(&b, "| before the churn | — | %.0f | %s | %s | %.0f |\n", before.goroutines, mb(before.heapInuse), mb(before.rss), before.websockets)
	for _, p := range []struct {
		name string
		at   time.Duration
	}{{"start", 0}, {"plateau (grace + 30 s)", warm}, {"middle", churnTime / 2}, {"end", churnTime}} {
		x := pick(p.at)
		fmt.Fprintf(&b, "| %s | %.0f s | %.0f | %s | %s | %.0f |\n", p.name, x.t.Seconds(), x.m.goroutines, mb(x.m.heapInuse), mb(x.m.rss), x.m.websockets)
	}
	fmt.Fprintf(&b, "| first minute after the plateau, mean of %d | %.0f–%.0f s | %.0f | %s | %s | %.0f |\n", fn, warm.Seconds(), (warm + win).Seconds(), fg, mb(fh), mb(fr), fw)
	fmt.Fprintf(&b, "| last minute, mean of %d | %.0f–%.0f s | %.0f | %s | %s | %.0f |\n", ln, (churnTime - win).Seconds(), churnTime.Seconds(), lg, mb(lh), mb(lr), lw)
	if o.drain && drained.goroutines > 0 {
		fmt.Fprintf(&b, "| after the churn and the grace | +%.0f s | %.0f | %s | %s | %.0f |\n", (o.grace + 15*time.Second).Seconds(), drained.goroutines, mb(drained.heapInuse), mb(drained.rss), drained.websockets)
	}
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "Per-minute means (goroutines / heap in use):")
	fmt.Fprintln(&b)
	var mins []string
	for m := time.Duration(0); m < churnTime; m += time.Minute {
		g, h, _, _, n := avg(m, m+time.Minute-time.Nanosecond)
		if n > 0 {
			mins = append(mins, fmt.Sprintf("%d: %.0f / %s", int(m/time.Minute), g, mb(h)))
		}
	}
	fmt.Fprintln(&b, strings.Join(mins, "; "))
	rep.section(b.String())
	return nil
}

// slope is the least-squares trend of f over the samples after from, per minute.
func slope(samples []sample, from time.Duration, f func(mem) float64) float64 {
	var n, sx, sy, sxx, sxy float64
	for _, x := range samples {
		if x.t < from {
			continue
		}
		t, y := x.t.Minutes(), f(x.m)
		n, sx, sy, sxx, sxy = n+1, sx+t, sy+y, sxx+t*t, sxy+t*y
	}
	if n < 2 || n*sxx-sx*sx == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / (n*sxx - sx*sx)
}
