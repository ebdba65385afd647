package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/parleyhq/parley/config"
)

// tlsConfig builds the TLS configuration for tls-listen and turn-tls-listen:
// a certificate from files (re-read when they change, so a renewal needs no
// restart), or from an ACME CA through autocert (TLS-ALPN-01 on the shared
// port).
func tlsConfig(cfg config.Config, log *slog.Logger) (*tls.Config, error) {
	if len(cfg.ACMEDomains) > 0 {
		m := &autocert.Manager{
			Prompt:     autocert.AcceptTOS,
			HostPolicy: autocert.HostWhitelist(cfg.ACMEDomains...),
			Cache:      autocert.DirCache(cfg.ACMECache),
			Email:      cfg.ACMEEmail,
			Client:     &acme.Client{DirectoryURL: cfg.ACMEDirectory},
		}
		c := m.TLSConfig()
		c.MinVersion = tls.VersionTLS12
		log.Info("TLS certificates from ACME", "domains", cfg.ACMEDomains, "directory", cfg.ACMEDirectory, "cache", cfg.ACMECache)
		return c, nil
	}
	fc := &fileCert{cert: cfg.TLSCert, key: cfg.TLSKey, log: log}
	if _, err := fc.load(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: fc.get,
		NextProtos:     []string{"http/1.1"},
	}, nil
}

// fileCert serves a certificate from PEM files and reloads it when the
// files change (checked at most every 10 seconds).
type fileCert struct {
	cert, key string
	log       *slog.Logger

	mu      sync.Mutex
	current *tls.Certificate
	modTime time.Time
	checked time.Time
}

func (f *fileCert) load() (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return nil, fmt.Errorf("server: TLS certificate %s / key %s: %w", f.cert, f.key, err)
	}
	f.current = &c
	if st, err := os.Stat(f.cert); err == nil {
		f.modTime = st.ModTime()
	}
	return &c, nil
}

func (f *fileCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.checked) > 10*time.Second {
		f.checked = time.Now()
		if st, err := os.Stat(f.cert); err == nil && !st.ModTime().Equal(f.modTime) {
			if _, err := f.load(); err != nil {
				f.log.Warn("TLS certificate changed but does not load; keeping the old one", "err", err)
			} else {
				f.log.Info("TLS certificate reloaded", "file", f.cert)
			}
		}
	}
	return f.current, nil
}
