package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestPagesAndHeaders(t *testing.T) {
	ts := httptest.NewServer(SecurityHeaders(Handler(nil, nil)))
	defer ts.Close()
	for path, want := range map[string]string{
		"/":                         "Start a consultation",
		"/c/AAAAAAAAAAAAAAAAAAAAAA": "Join the call",
		"/js/call.js":               "URL contract",
		"/css/style.css":            "--accent",
	} {
		res, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %s, body lacks %q", path, res.Status, want)
		}
		csp := res.Header.Get("Content-Security-Policy")
		for _, d := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, d) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, d)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%s: CSP allows unsafe code: %s", path, csp)
		}
		if res.Header.Get("Referrer-Policy") != "no-referrer" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: missing referrer/nosniff headers", path)
		}
	}
	for _, path := range []string{"/js/", "/nope", "/c/"} {
		res, _ := http.Get(ts.URL + path)
		res.Body.Close()
		if res.StatusCode != 404 {
			t.Errorf("%s: %s, want 404", path, res.Status)
		}
	}
}

// TestNoThirdPartyRequests checks that nothing in the page names another
// host: no CDN, fonts or analytics, and no inline script for the CSP to block.
func TestNoThirdPartyRequests(t *testing.T) {
	url := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	inline := regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>\s*[^<\s]|\son[a-z]+=|style=`)
	fs.WalkDir(Files(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := fs.ReadFile(Files(), path)
		for _, m := range url.FindAllString(string(b), -1) {
			t.Errorf("%s names another host: %s", path, m)
		}
		if strings.HasSuffix(path, ".html") && inline.Match(b) {
			t.Errorf("%s has inline script or style: %s", path, inline.Find(b))
		}
		return nil
	})
}

// TestHostPages checks /signin for everyone and /host only through the
// guard the server passes in (account.Service.RequireHost).
func TestHostPages(t *testing.T) {
	get := func(ts *httptest.Server, path string) (int, string) {
		t.Helper()
		res, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	refuse := func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "please sign in", http.StatusUnauthorized)
		})
	}
	allow := func(h http.Handler) http.Handler { return h }

	closed := httptest.NewServer(Handler(nil, refuse))
	defer closed.Close()
	if code, body := get(closed, "/signin"); code != 200 || !strings.Contains(body, `id="signin-form"`) {
		t.Errorf("/signin: %d %.80q", code, body)
	}
	if code, body := get(closed, "/host"); code != 401 || strings.Contains(body, "new-form") {
		t.Errorf("/host without a session: %d %.80q", code, body)
	}
	for _, path := range []string{"/js/host.js", "/js/hoststore.js", "/js/signin.js", "/js/api.js", "/css/host.css"} {
		if code, _ := get(closed, path); code != 200 {
			t.Errorf("%s: %d", path, code)
		}
	}

	open := httptest.NewServer(Handler(nil, allow))
	defer open.Close()
	if code, body := get(open, "/host"); code != 200 || !strings.Contains(body, `id="new-form"`) {
		t.Errorf("/host with a session: %d %.80q", code, body)
	}

	none := httptest.NewServer(Handler(nil, nil))
	defer none.Close()
	if code, _ := get(none, "/host"); code != 404 {
		t.Errorf("/host without accounts: %d, want 404", code)
	}
}
