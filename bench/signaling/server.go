package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/parleyhq/parley/signaling"
)

// server is one parley process on 127.0.0.1, started under prlimit so that
// its file limit is exactly -nofile (soft and hard: Go raises the soft limit
// to the hard one at start).
type server struct {
	cmd     *exec.Cmd
	pid     int
	addr    string // host:port of the app
	metrics string // host:port of /metrics
	origin  string // http://addr, the page's own origin
	dir     string
	logPath string
	hc      *http.Client
	exited  chan struct{}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startServer runs bin with the flags the benchmark needs, plus extra.
// serverCPUs, if set, is the taskset CPU list the server runs on (-pin).
var serverCPUs string

func startServer(bin string, nofile int, logLevel string, extra []string) (*server, error) {
	dir, err := os.MkdirTemp("", "parley-bench-sig-")
	if err != nil {
		return nil, err
	}
	p1, err := freePort()
	if err != nil {
		return nil, err
	}
	p2, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &server{
		addr:    fmt.Sprintf("127.0.0.1:%d", p1),
		metrics: fmt.Sprintf("127.0.0.1:%d", p2),
		dir:     dir,
		logPath: filepath.Join(dir, "parley.log"),
		hc: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: 16, DisableCompression: true,
		}},
		exited: make(chan struct{}),
	}
	s.origin = "http://" + s.addr
	args := []string{fmt.Sprintf("--nofile=%d:%d", nofile, nofile), bin,
		"-listen", s.addr, "-open-rooms", "-data-dir", filepath.Join(dir, "data"),
		"-turn-listen", "", "-metrics-listen", s.metrics, "-log-level", logLevel,
		// One client address creates every room: lift the per-IP and
		// server-wide room limits (both are plain settings).
		"-rooms-per-ip", "1000000", "-max-rooms", "1000000"}
	args = append(args, extra...)
	logf, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	if serverCPUs != "" {
		// taskset execs the server as prlimit does: still one process.
		args = append([]string{args[0], "taskset", "-c", serverCPUs}, args[1:]...)
	}
	s.cmd = exec.Command("prlimit", args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	// The server runs in its own process group so that ^C on the benchmark
	// reaches it only through stop.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s under prlimit: %w", bin, err)
	}
	s.pid = s.cmd.Process.Pid // prlimit execs the command: same process
	go func() { s.cmd.Wait(); logf.Close(); close(s.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := s.hc.Get(s.origin + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("parley exited at start; its log:\n%s", tail(s.logPath, 20))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("parley did not answer /healthz within 30 s")
		}
	}
	return s, nil
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop ends the server (SIGTERM, then SIGKILL) and removes its directory.
func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.hc.CloseIdleConnections()
	os.RemoveAll(s.dir)
}

// scrape reads the Prometheus text of /metrics into name → value (labelled
// series are skipped).
func (s *server) scrape() (map[string]float64, error) {
	res, err := s.hc.Get("http://" + s.metrics + "/metrics")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// procStatus returns a field of /proc/PID/status in bytes (for kB fields).
func (s *server) procStatus(field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseFloat(f[0], 64)
				return n * 1024
			}
		}
	}
	return 0
}

// cpu returns the server's user+system CPU time so far.
func (s *server) cpu() time.Duration { return procCPU(fmt.Sprintf("/proc/%d/stat", s.pid)) }

// procCPU reads user+system CPU time from a /proc/PID/stat file.
func procCPU(path string) time.Duration {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// machineCPU returns the busy and total CPU time of the whole machine, all
// CPUs together (/proc/stat).
func machineCPU() (busy, total time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		d := time.Duration(n) * 10 * time.Millisecond
		total += d
		if i != 3 && i != 4 { // idle, iowait
			busy += d
		}
	}
	return busy, total
}

// onlineCPUs is how many CPUs the machine has (runtime.NumCPU counts only
// those this process may run on, one under -pin).
func onlineCPUs() int {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return runtime.NumCPU()
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if len(line) > 3 && strings.HasPrefix(line, "cpu") && line[3] >= '0' && line[3] <= '9' {
			n++
		}
	}
	return max(n, 1)
}

// fds counts the server's open file descriptors.
func (s *server) fds() int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// fileLimit reads the server's soft RLIMIT_NOFILE.
func (s *server) fileLimit() int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", s.pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			f := strings.Fields(line)
			n, _ := strconv.Atoi(f[3])
			return n
		}
	}
	return -1
}

// benchRoom is a room made through POST /api/rooms, with its join token.
type benchRoom struct {
	id    string
	token string
}

// createRooms makes n rooms as the landing page does: a random join token,
// its verifier in the body, the page's Origin.
func (s *server) createRooms(ctx context.Context, n, workers int) ([]*benchRoom, error) {
	rooms := make([]*benchRoom, n)
	var (
		mu       sync.Mutex
		firstErr error
		next     int
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := i >= n || firstErr != nil
				mu.Unlock()
				if stop {
					return
				}
				r, err := s.createRoom(ctx)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				rooms[i] = r
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return rooms, firstErr
}

func (s *server) createRoom(ctx context.Context) (*benchRoom, error) {
	tok := newToken()
	tb, _ := b64.DecodeString(tok)
	body := `{"joinVerifier":"` + b64.EncodeToString(signaling.JoinVerifier(tb)) + `"}`
	req, _ := http.NewRequestWithContext(ctx, "POST", s.origin+"/api/rooms", strings.NewReader(body))
	req.Header.Set("Origin", s.origin)
	req.Header.Set("Content-Type", "application/json")
	res, err := s.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("POST /api/rooms: %s %s", res.Status, b)
	}
	var rr signaling.RoomResponse
	if err := json.Unmarshal(b, &rr); err != nil {
		return nil, err
	}
	if rr.ID == "" {
		return nil, errors.New("POST /api/rooms: no id")
	}
	return &benchRoom{id: rr.ID, token: tok}, nil
}
