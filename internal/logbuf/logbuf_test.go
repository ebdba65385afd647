package logbuf

import (
	"fmt"
	"sync"
	"testing"
)

func TestTail(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"", 3, ""},
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb\nc", 5, "a\nb\nc"},
		{"a\n\n\n", 1, "a"},
	} {
		if got := string(Tail([]byte(c.in), c.n)); got != c.want {
			t.Errorf("Tail(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

func TestBufferConcurrent(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 100 {
				fmt.Fprintf(&b, "w%d %d\n", w, i)
				_ = b.Tail(1)
			}
		})
	}
	wg.Wait()
	if got := len(Tail([]byte(b.String()), 1000)); got == 0 || b.Tail(400) != string(Tail([]byte(b.String()), 400)) {
		t.Fatalf("Tail and String disagree (%d bytes)", got)
	}
	if n := len(b.String()); n != 4*100*len("w0 00\n")-4*10 {
		t.Errorf("%d bytes written, want %d", n, 4*100*len("w0 00\n")-4*10)
	}
}
