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
	ts := httptest.NewServer(SecurityHeaders(Handler(nil)))
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
