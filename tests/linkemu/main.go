// Command linkemu is a network link in user space between two network
// namespaces, with loss, delay and jitter like `tc qdisc ... netem`, for the
// browser tests that need a bad line (tests/browser/netns.test.mjs) on
// kernels built without sch_netem (as this project's test machines are:
// `tc qdisc add ... netem` answers "Specified qdisc kind is unknown").
//
// It opens one TAP device in each namespace (Ethernet frames, so both ends
// look like an ordinary Ethernet link: ARP, any address, link up/down) and
// copies every frame from one to the other. For each direction it can drop
// a frame at random (loss), hold it for delay ± jitter (uniform, like netem's
// "delay 50ms 50ms"; frames overtake each other when the jitter exceeds
// their spacing, as with netem), or drop everything (an outage).
//
//	linkemu -a <netns> -a-dev eth0 -b <netns> -b-dev tapa
//
// A namespace is a name under /run/netns or a path. Once both devices exist
// it prints "ready" on standard output; then it reads commands on standard
// input, one per line, and answers each with one line ("ok ..." or
// "error ..."):
//
//	set <dir> loss=<0..1> delay=<duration> jitter=<duration>
//	                 dir: ab (from a to b), ba, or both; missing keys are 0
//	down             drop every frame both ways (the line is cut)
//	up               carry frames again
//	stats            counters per direction as JSON
//
// It exits when standard input closes; the devices go with it. Uses only
// the standard library (syscall), like the rest of the test helpers.
package main

import (
	"bufio"
	"container/heap"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// setns(2)'s number, which package syscall does not export on every
// architecture (amd64 lacks it).
var sysSetns = map[string]uintptr{"amd64": 308, "arm64": 268, "riscv64": 268, "386": 346, "arm": 375, "ppc64le": 350, "s390x": 339}[runtime.GOARCH]

const (
	iffTap   = 0x0002
	iffNoPI  = 0x1000
	tunSetIf = 0x400454ca // TUNSETIFF
)

// openTap creates (or attaches to) TAP device name inside the network
// namespace ns, from a thread that enters ns for the call only.
func openTap(ns, name string) (*os.File, error) {
	if !strings.Contains(ns, "/") {
		ns = filepath.Join("/run/netns", ns)
	}
	if sysSetns == 0 {
		return nil, fmt.Errorf("setns: unknown system call number on %s", runtime.GOARCH)
	}
	runtime.LockOSThread()
	// The thread goes back to its namespace below; if that fails it must
	// not run anything else, so it stays locked and dies with the goroutine.
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer self.Close()
	target, err := os.Open(ns)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if _, _, e := syscall.RawSyscall(sysSetns, target.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("setns %s: %v", ns, e)
	}
	f, openErr := tapIn(name)
	if _, _, e := syscall.RawSyscall(sysSetns, self.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
		return nil, fmt.Errorf("setns back: %v", e) // the thread stays locked: it is discarded
	}
	runtime.UnlockOSThread()
	return f, openErr
}

// tapIn opens /dev/net/tun and binds it to TAP device name in the current
// thread's namespace. The descriptor is blocking (plain read and write in
// one goroutine each).
func tapIn(name string) (*os.File, error) {
	fd, err := syscall.Open("/dev/net/tun", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	var req [40]byte // struct ifreq: name[16], flags u16, padding
	copy(req[:15], name)
	*(*uint16)(unsafe.Pointer(&req[16])) = iffTap | iffNoPI
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), tunSetIf, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
		syscall.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %v", name, e)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// impairment is one direction's settings.
type impairment struct {
	Loss   float64       `json:"loss"`
	Delay  time.Duration `json:"delay"`
	Jitter time.Duration `json:"jitter"`
}

// counters of one direction.
type counters struct {
	In, Out, Lost, Cut, WriteErr atomic.Int64
}

type pending struct {
	due   time.Time
	seq   uint64
	frame []byte
}

type queue []pending

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].due.Equal(q[j].due) {
		return q[i].seq < q[j].seq
	}
	return q[i].due.Before(q[j].due)
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(pending)) }
func (q *queue) Pop() any {
	old := *q
	p := old[len(old)-1]
	*q = old[:len(old)-1]
	return p
}

// direction carries frames from src to dst.
type direction struct {
	name     string
	src, dst *os.File
	cut      *atomic.Bool
	mu       sync.Mutex
	imp      impairment
	q        queue
	seq      uint64
	wake     chan struct{}
	c        counters
}

func (d *direction) settings() impairment {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.imp
}

func (d *direction) read() {
	buf := make([]byte, 65536)
	for {
		n, err := d.src.Read(buf)
		if err != nil {
			if pe, ok := err.(*os.PathError); ok && (pe.Err == syscall.EIO || pe.Err == syscall.EAGAIN || pe.Err == syscall.EINTR) {
				time.Sleep(10 * time.Millisecond) // the device is down for a moment
				continue
			}
			log.Fatalf("%s: read: %v", d.name, err)
		}
		d.c.In.Add(1)
		if d.cut.Load() {
			d.c.Cut.Add(1)
			continue
		}
		imp := d.settings()
		if imp.Loss > 0 && rand.Float64() < imp.Loss {
			d.c.Lost.Add(1)
			continue
		}
		frame := append([]byte(nil), buf[:n]...)
		delay := imp.Delay
		if imp.Jitter > 0 {
			delay += time.Duration(rand.Int64N(int64(2*imp.Jitter)+1)) - imp.Jitter
		}
		if delay <= 0 {
			d.write(frame)
			continue
		}
		d.mu.Lock()
		d.seq++
		heap.Push(&d.q, pending{due: time.Now().Add(delay), seq: d.seq, frame: frame})
		d.mu.Unlock()
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// release writes held frames when they are due.
func (d *direction) release() {
	t := time.NewTimer(time.Hour)
	for {
		d.mu.Lock()
		var next time.Duration = time.Hour
		now := time.Now()
		var ready [][]byte
		for len(d.q) > 0 && !d.q[0].due.After(now) {
			ready = append(ready, heap.Pop(&d.q).(pending).frame)
		}
		if len(d.q) > 0 {
			next = d.q[0].due.Sub(now)
		}
		d.mu.Unlock()
		for _, f := range ready {
			if d.cut.Load() {
				d.c.Cut.Add(1)
				continue
			}
			d.write(f)
		}
		t.Reset(next)
		select {
		case <-t.C:
		case <-d.wake:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		}
	}
}

func (d *direction) write(f []byte) {
	if _, err := d.dst.Write(f); err != nil {
		d.c.WriteErr.Add(1) // the far device is down: the frame is lost, as on a wire
		return
	}
	d.c.Out.Add(1)
}

func parseSet(args []string) (string, impairment, error) {
	var imp impairment
	if len(args) == 0 {
		return "", imp, fmt.Errorf("set needs a direction")
	}
	dir := args[0]
	if dir != "ab" && dir != "ba" && dir != "both" {
		return "", imp, fmt.Errorf("direction %q: want ab, ba or both", dir)
	}
	for _, kv := range args[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return "", imp, fmt.Errorf("%q: want key=value", kv)
		}
		var err error
		switch k {
		case "loss":
			imp.Loss, err = strconv.ParseFloat(v, 64)
			if err == nil && (imp.Loss < 0 || imp.Loss > 1) {
				err = fmt.Errorf("out of 0..1")
			}
		case "delay":
			imp.Delay, err = time.ParseDuration(v)
		case "jitter":
			imp.Jitter, err = time.ParseDuration(v)
		default:
			err = fmt.Errorf("unknown key")
		}
		if err != nil {
			return "", imp, fmt.Errorf("%s: %v", kv, err)
		}
	}
	if imp.Jitter > imp.Delay {
		return "", imp, fmt.Errorf("jitter %v over delay %v", imp.Jitter, imp.Delay)
	}
	return dir, imp, nil
}

func main() {
	aNS := flag.String("a", "", "namespace of side a (name under /run/netns, or a path)")
	aDev := flag.String("a-dev", "eth0", "TAP device name in a")
	bNS := flag.String("b", "", "namespace of side b")
	bDev := flag.String("b-dev", "tap0", "TAP device name in b")
	flag.Parse()
	log.SetFlags(log.Lmicroseconds)
	log.SetPrefix("linkemu: ")
	if *aNS == "" || *bNS == "" {
		log.Fatal("-a and -b are required")
	}
	fa, err := openTap(*aNS, *aDev)
	if err != nil {
		log.Fatal(err)
	}
	fb, err := openTap(*bNS, *bDev)
	if err != nil {
		log.Fatal(err)
	}
	var cut atomic.Bool
	ab := &direction{name: "ab", src: fa, dst: fb, cut: &cut, wake: make(chan struct{}, 1)}
	ba := &direction{name: "ba", src: fb, dst: fa, cut: &cut, wake: make(chan struct{}, 1)}
	for _, d := range []*direction{ab, ba} {
		go d.read()
		go d.release()
	}
	fmt.Println("ready")

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "set":
			dir, imp, err := parseSet(f[1:])
			if err != nil {
				fmt.Println("error", err)
				continue
			}
			for _, d := range []*direction{ab, ba} {
				if dir == "both" || dir == d.name {
					d.mu.Lock()
					d.imp = imp
					d.mu.Unlock()
				}
			}
			fmt.Printf("ok %s loss=%g delay=%v jitter=%v\n", dir, imp.Loss, imp.Delay, imp.Jitter)
		case "down":
			cut.Store(true)
			fmt.Println("ok down")
		case "up":
			cut.Store(false)
			fmt.Println("ok up")
		case "stats":
			out := map[string]any{}
			for _, d := range []*direction{ab, ba} {
				out[d.name] = map[string]any{
					"in": d.c.In.Load(), "out": d.c.Out.Load(), "lost": d.c.Lost.Load(),
					"cut": d.c.Cut.Load(), "writeErrors": d.c.WriteErr.Load(), "settings": d.settings(),
				}
			}
			b, _ := json.Marshal(out)
			fmt.Printf("ok %s\n", b)
		default:
			fmt.Println("error unknown command", f[0])
		}
	}
}
