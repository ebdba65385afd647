// Package acme_test runs Parley's HTTPS-and-TURN port with a certificate
// from an ACME CA: Let's Encrypt's test server pebble, run on loopback (a
// tool in go.mod), with its validation switched off since no one can reach
// this machine from outside.
package acme_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func goBuild(t *testing.T, out, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = "../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

func TestACMECertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds pebble and parley")
	}
	dir := t.TempDir()
	goBuild(t, filepath.Join(dir, "pebble"), "github.com/letsencrypt/pebble/v2/cmd/pebble")
	goBuild(t, filepath.Join(dir, "parley"), "./cmd/parley")
	modDir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/letsencrypt/pebble/v2").Output()
	if err != nil {
		t.Fatal(err)
	}
	certs := filepath.Join(strings.TrimSpace(string(modDir)), "test", "certs")

	acmePort, mgmtPort := freePort(t), freePort(t)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":           fmt.Sprintf("127.0.0.1:%d", acmePort),
		"managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate":             filepath.Join(certs, "localhost", "cert.pem"),
		"privateKey":              filepath.Join(certs, "localhost", "key.pem"),
		"httpPort":                freePort(t), "tlsPort": freePort(t),
		"ocspResponderURL": "", "externalAccountBindingRequired": false,
	}}
	cfgFile := filepath.Join(dir, "pebble.json")
	b, _ := json.Marshal(cfg)
	os.WriteFile(cfgFile, b, 0o600)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pebble := exec.CommandContext(ctx, filepath.Join(dir, "pebble"), "-config", cfgFile, "-strict=false")
	pebble.Env = append(os.Environ(), "PEBBLE_VA_ALWAYS_VALID=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_VA_NOSLEEP=1")
	var pebbleLog strings.Builder
	pebble.Stdout, pebble.Stderr = &pebbleLog, &pebbleLog
	if err := pebble.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { pebble.Process.Kill(); pebble.Wait() }()

	tlsPort, httpPort := freePort(t), freePort(t)
	parley := exec.CommandContext(ctx, filepath.Join(dir, "parley"),
		"-listen", fmt.Sprintf("127.0.0.1:%d", httpPort), "-turn-listen", "",
		"-tls-listen", fmt.Sprintf("127.0.0.1:%d", tlsPort),
		"-acme-domain", "call.parley.test", "-acme-directory", fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort),
		"-acme-cache", filepath.Join(dir, "acme"), "-acme-email", "ops@parley.test", "-log-level", "debug",
		"-data-dir", filepath.Join(dir, "data"))
	// Trust pebble's own HTTPS (its directory), as an operator would trust
	// a private CA's; the certificates it issues chain to another root.
	parley.Env = append(os.Environ(), "SSL_CERT_FILE="+filepath.Join(certs, "pebble.minica.pem"))
	var parleyLog strings.Builder
	parley.Stdout, parley.Stderr = &parleyLog, &parleyLog
	if err := parley.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { parley.Process.Signal(os.Interrupt); parley.Wait() }()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\n--- parley ---\n%s\n--- pebble ---\n%s", append(args, parleyLog.String(), pebbleLog.String())...)
	}

	// The root pebble signs with, from its management interface.
	minica, err := os.ReadFile(filepath.Join(certs, "pebble.minica.pem"))
	if err != nil {
		t.Fatal(err)
	}
	mpool := x509.NewCertPool()
	mpool.AppendCertsFromPEM(minica)
	mgmt := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: mpool}}, Timeout: 5 * time.Second}
	var root []byte
	for deadline := time.Now().Add(30 * time.Second); ; {
		res, err := mgmt.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmtPort))
		if err == nil {
			root, _ = io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			fail("pebble did not start: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(root) {
		fail("pebble root %q", root)
	}

	// The first handshake makes autocert get the certificate; then the page
	// is served over it, verified against pebble's root, for that name.
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "call.parley.test"},
	}}
	var res *http.Response
	for deadline := time.Now().Add(60 * time.Second); ; {
		res, err = client.Get(fmt.Sprintf("https://127.0.0.1:%d/", tlsPort))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			fail("HTTPS with an ACME certificate: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), "Start a consultation") {
		fail("page over ACME TLS: %s", res.Status)
	}
	leaf := res.TLS.PeerCertificates[0]
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "call.parley.test" || !strings.Contains(leaf.Issuer.CommonName, "Pebble") {
		fail("certificate %v issued by %q", leaf.DNSNames, leaf.Issuer.CommonName)
	}
	// The certificate was cached for the next start.
	entries, _ := os.ReadDir(filepath.Join(dir, "acme"))
	if len(entries) == 0 {
		fail("nothing in the ACME cache")
	}
	t.Logf("certificate for %v from %q, valid until %s; cache: %d files", leaf.DNSNames, leaf.Issuer.CommonName, leaf.NotAfter.Format(time.RFC3339), len(entries))
}
