// Package web serves Parley's browser app: plain ES modules, HTML and CSS
// embedded in the binary, behind a strict Content-Security-Policy. The page
// makes no third-party requests: no CDN, fonts or analytics.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var static embed.FS

// CSP is the Content-Security-Policy of every response. Scripts, styles,
// workers and connections are limited to this origin ('self' covers the
// same-origin WebSocket); no inline script or style; media may come from
// the page's own MediaStreams.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"media-src 'self' blob: mediastream:; connect-src 'self'; worker-src 'self'; " +
	"manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Files returns the embedded static files (index.html, call.html, js/, css/).
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embed directive guarantees "static" exists
	}
	return sub
}

// SecurityHeaders wraps h with the headers every Parley response carries.
func SecurityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", CSP)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		hd.Set("Permissions-Policy", "camera=(self), microphone=(self), display-capture=(self), geolocation=(), payment=(), usb=()")
		h.ServeHTTP(w, r)
	})
}

// Handler serves the landing page at /, the call page at /c/<room>, the
// sign-in page at /signin, the host page at /host, and the static assets
// under /js/, /css/ and the given extra file systems (for example /e2ee/
// for the SFrame worker code).
//
// requireHost guards the host pages: it serves them only to a signed-in
// host and answers everyone else itself (account.Service.RequireHost: a
// 401 page with a link to /signin). With a nil requireHost (a server
// without host accounts) the host pages are 404.
func Handler(extra map[string]fs.FS, requireHost func(http.Handler) http.Handler) http.Handler {
	files := Files()
	mux := http.NewServeMux()
	page := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeFileFS(w, r, files, name)
		}
	}
	mux.HandleFunc("GET /{$}", page("index.html"))
	mux.HandleFunc("GET /c/{room}", page("call.html"))
	mux.HandleFunc("GET /signin", page("signin.html"))
	if requireHost != nil {
		mux.Handle("GET /host", requireHost(page("host.html")))
	}
	assets := http.FileServerFS(files)
	for _, dir := range []string{"/js/", "/css/", "/img/"} {
		mux.Handle("GET "+dir, noCache(assets))
	}
	for prefix, fsys := range extra {
		prefix = "/" + strings.Trim(prefix, "/") + "/"
		mux.Handle("GET "+prefix, noCache(http.StripPrefix(strings.TrimSuffix(prefix, "/"), http.FileServerFS(fsys))))
	}
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=86400")
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func noCache(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		h.ServeHTTP(w, r)
	})
}
