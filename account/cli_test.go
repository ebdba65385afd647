package account

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/store"
)

type cliRun struct {
	code           int
	stdout, stderr string
}

// runCLI runs `parley user args...` on the store in dir with stdin piped.
func runCLI(t *testing.T, dir, stdin string, args ...string) cliRun {
	t.Helper()
	var out, errOut strings.Builder
	c := &CLI{
		OpenStore: func(create bool) (*store.Store, error) { return store.OpenShared(dir, nil) },
		Stdin:     strings.NewReader(stdin),
		Stdout:    &out, Stderr: &errOut,
		Password: fastParams,
		Now:      func() time.Time { return time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC) },
	}
	code := c.Run(bg, args)
	return cliRun{code, out.String(), errOut.String()}
}

func TestCLI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ok := func(r cliRun, want string) {
		t.Helper()
		if r.code != ExitOK || !strings.Contains(r.stdout, want) {
			t.Fatalf("exit %d, stdout %q, stderr %q; want %q", r.code, r.stdout, r.stderr, want)
		}
	}
	fails := func(r cliRun, code int, want string) {
		t.Helper()
		if r.code != code || !strings.Contains(r.stderr, want) {
			t.Fatalf("exit %d, stderr %q; want %d and %q", r.code, r.stderr, code, want)
		}
	}
	ok(runCLI(t, dir, "", "list"), "No hosts yet")
	ok(runCLI(t, dir, "a password of some length\n", "add", "Ann@Example.com"), "Added host ann@example.com.")
	ok(runCLI(t, dir, "another good password\r\n", "add", "bo@example.com"), "Added host bo@example.com.")
	fails(runCLI(t, dir, "a password of some length\n", "add", "ann@example.com"), ExitFailure, "ann@example.com already has an account")
	fails(runCLI(t, dir, "short\n", "add", "cy@example.com"), ExitFailure, "at least 10 characters")
	fails(runCLI(t, dir, "", "add", "cy@example.com"), ExitFailure, "no password on standard input")
	fails(runCLI(t, dir, "\n", "add", "cy@example.com"), ExitFailure, "no password on standard input")
	fails(runCLI(t, dir, strings.Repeat("x", 2000), "add", "cy@example.com"), ExitFailure, "at most 1024 bytes")
	fails(runCLI(t, dir, strings.Repeat("x", 1025)+"\n", "add", "cy@example.com"), ExitFailure, "at most 1024 bytes")
	fails(runCLI(t, dir, "pass\tword with tab\n", "add", "cy@example.com"), ExitFailure, "without control characters")
	fails(runCLI(t, dir, "a password of some length\n", "add", "not-an-email"), ExitUsage, `"not-an-email" is not an email address`)
	fails(runCLI(t, dir, "", "add"), ExitUsage, "add takes one email address")
	fails(runCLI(t, dir, "", "add", "a@example.com", "b@example.com"), ExitUsage, "add takes one email address")
	fails(runCLI(t, dir, "", "list", "x"), ExitUsage, "list takes no arguments")
	fails(runCLI(t, dir, "", "frobnicate"), ExitUsage, `unknown command "frobnicate"`)
	fails(runCLI(t, dir, ""), ExitUsage, "Usage: parley user add")
	if r := runCLI(t, dir, "", "--help"); r.code != ExitOK || !strings.Contains(r.stderr, "Usage: parley user add") {
		t.Fatalf("help: %+v", r)
	}

	// Only the first line is the password; a trailing CR LF is dropped.
	st, err := store.OpenShared(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bo, _ := st.UserByEmail(bg, "bo@example.com")
	if ok, _, _ := VerifyPassword("another good password", bo.PasswordHash, fastParams); !ok {
		t.Fatal("CR LF kept in the password")
	}

	list := runCLI(t, dir, "", "list")
	lines := strings.Split(strings.TrimSpace(list.stdout), "\n")
	if list.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "EMAIL") || !strings.Contains(lines[0], "LAST SIGN-IN") ||
		!strings.Contains(lines[1], "ann@example.com") || !strings.Contains(lines[1], "enabled") || !strings.Contains(lines[1], "2025-03-01 09:00 UTC") || !strings.HasSuffix(lines[1], "never") {
		t.Fatalf("list:\n%s", list.stdout)
	}

	// Disable signs out everywhere; enable lets the host back in.
	ann, _ := st.UserByEmail(bg, "ann@example.com")
	now := time.Now()
	for i := 0; i < 2; i++ {
		st.CreateSession(bg, store.Session{ID: sha(fmt.Sprint("s", i)), UserID: ann.ID, CSRF: "c", CreatedAt: now, ExpiresAt: now.Add(time.Hour), LastSeen: now})
	}
	ok(runCLI(t, dir, "", "disable", "ann@example.com"), "Disabled ann@example.com and signed out its 2 sessions.")
	if _, err := st.Session(bg, sha("s0")); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("session kept after disable")
	}
	ok(runCLI(t, dir, "", "disable", "ann@example.com"), "already disabled")
	if l := runCLI(t, dir, "", "list"); !strings.Contains(l.stdout, "disabled") {
		t.Fatalf("list after disable:\n%s", l.stdout)
	}
	ok(runCLI(t, dir, "", "enable", "ann@example.com"), "Enabled ann@example.com.")
	fails(runCLI(t, dir, "", "disable", "nobody@example.com"), ExitFailure, "no account for nobody@example.com")

	// passwd changes the hash and signs out.
	st.CreateSession(bg, store.Session{ID: sha("s9"), UserID: ann.ID, CSRF: "c", CreatedAt: now, ExpiresAt: now.Add(time.Hour), LastSeen: now})
	ok(runCLI(t, dir, "the new password here\n", "passwd", "ann@example.com"), "Changed the password of ann@example.com and signed out its 1 session.")
	ann, _ = st.UserByEmail(bg, "ann@example.com")
	if ok, _, _ := VerifyPassword("the new password here", ann.PasswordHash, fastParams); !ok {
		t.Fatal("passwd did not change the password")
	}
	fails(runCLI(t, dir, "too short\n", "passwd", "ann@example.com"), ExitFailure, "at least 10 characters")
	fails(runCLI(t, dir, "the new password here\n", "passwd", "nobody@example.com"), ExitFailure, "no account for nobody@example.com")
}

func TestCLITerminal(t *testing.T) {
	dir := t.TempDir()
	var out, errOut strings.Builder
	answers := []string{"first password!!", "second password!"}
	var prompts []string
	c := &CLI{
		OpenStore: func(bool) (*store.Store, error) { return store.OpenShared(dir, nil) },
		Stdout:    &out,
		Stderr:    &errOut,
		Password:  fastParams,
		ReadPassword: func(p string) (string, error) {
			prompts = append(prompts, p)
			a := answers[0]
			answers = answers[1:]
			return a, nil
		},
	}
	if code := c.Run(bg, []string{"add", "t@example.com"}); code != ExitFailure || !strings.Contains(errOut.String(), "differ") {
		t.Fatalf("mismatch: %d %q", code, errOut.String())
	}
	if len(prompts) != 2 {
		t.Fatalf("prompts %q", prompts)
	}
	answers = []string{"same password ok", "same password ok"}
	if code := c.Run(bg, []string{"add", "t@example.com"}); code != ExitOK {
		t.Fatalf("terminal add: %d %q", code, errOut.String())
	}
	answers = []string{"short"}
	errOut.Reset()
	if code := c.Run(bg, []string{"passwd", "t@example.com"}); code != ExitFailure || !strings.Contains(errOut.String(), "at least 10") {
		t.Fatalf("short on terminal: %d %q", code, errOut.String())
	}
	c.ReadPassword = func(string) (string, error) { return "", io.ErrUnexpectedEOF }
	if code := c.Run(bg, []string{"passwd", "t@example.com"}); code != ExitFailure {
		t.Fatalf("read error: %d", code)
	}
}

func TestCLIMissingDataDir(t *testing.T) {
	var errOut strings.Builder
	c := &CLI{
		OpenStore: func(bool) (*store.Store, error) { return nil, errors.New("no data directory at /nowhere") },
		Stdout:    io.Discard, Stderr: &errOut,
	}
	if code := c.Run(bg, []string{"list"}); code != ExitFailure || !strings.Contains(errOut.String(), "no data directory") {
		t.Fatalf("%d %q", code, errOut.String())
	}
}
