package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parleyhq/parley/store"
)

// runWith runs the command with stdin fed from a pipe and stdout and
// stderr captured, as a shell pipeline would.
func runWith(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	oldIn, oldOut, oldErr := os.Stdin, os.Stdout, os.Stderr
	os.Stdin, os.Stdout, os.Stderr = inR, outW, errW
	defer func() { os.Stdin, os.Stdout, os.Stderr = oldIn, oldOut, oldErr }()
	go func() { io.WriteString(inW, stdin); inW.Close() }()
	outc, errc := make(chan string), make(chan string)
	go func() { b, _ := io.ReadAll(outR); outc <- string(b) }()
	go func() { b, _ := io.ReadAll(errR); errc <- string(b) }()
	code = run(args)
	outW.Close()
	errW.Close()
	inR.Close()
	return code, <-outc, <-errc
}

func TestUserCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	t.Setenv("PARLEY_DATA_DIR", "") // restored after the test
	os.Unsetenv("PARLEY_DATA_DIR")  // and absent during it

	if code, _, stderr := runWith(t, "", "user", "list", "-data-dir", dir); code != 1 || !strings.Contains(stderr, "no data directory") {
		t.Fatalf("list before any add: %d %q", code, stderr)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatal("list made the data directory")
	}
	if code, stdout, stderr := runWith(t, "a good long password\n", "user", "add", "host@example.com", "-data-dir", dir); code != 0 || !strings.Contains(stdout, "Added host host@example.com") {
		t.Fatalf("add: %d %q %q", code, stdout, stderr)
	}
	t.Setenv("PARLEY_DATA_DIR", dir)
	if code, stdout, _ := runWith(t, "", "user", "list"); code != 0 || !strings.Contains(stdout, "host@example.com") || !strings.Contains(stdout, "never") {
		t.Fatalf("list with PARLEY_DATA_DIR: %d %q", code, stdout)
	}
	if code, _, stderr := runWith(t, "short\n", "user", "passwd", "host@example.com"); code != 1 || !strings.Contains(stderr, "at least 10 characters") {
		t.Fatalf("short password: %d %q", code, stderr)
	}
	if code, _, stderr := runWith(t, "", "user", "add", "nope"); code != 2 || !strings.Contains(stderr, "Usage: parley user") {
		t.Fatalf("bad email: %d %q", code, stderr)
	}
	if code, _, stderr := runWith(t, "", "user"); code != 2 || !strings.Contains(stderr, "Usage: parley user") {
		t.Fatalf("no command: %d %q", code, stderr)
	}
	if code, _, stderr := runWith(t, "", "user", "--help"); code != 0 || !strings.Contains(stderr, "-data-dir") {
		t.Fatalf("help: %d %q", code, stderr)
	}
	if code, _, stderr := runWith(t, "", "user", "list", "-session-ttl", "1s"); code != 2 || !strings.Contains(stderr, "session-ttl") {
		t.Fatalf("bad flag: %d %q", code, stderr)
	}
	if code, stdout, _ := runWith(t, "", "user", "disable", "host@example.com"); code != 0 || !strings.Contains(stdout, "Disabled host@example.com") {
		t.Fatalf("disable: %d %q", code, stdout)
	}
}

// TestSecondServerRefused: a server whose data directory another one
// holds stops at once with a clear message.
func TestSecondServerRefused(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	code, _, stderr := runWith(t, "", "-listen", "127.0.0.1:0", "-turn-listen", "", "-data-dir", dir)
	if code != 1 || !strings.Contains(stderr, "in use by another Parley server") {
		t.Fatalf("second server: %d %q", code, stderr)
	}
}
