// Command turnalloc opens many TURN allocations on a server and holds them
// until its standard input closes, so that bench/turn can read the
// server's memory with them open. Each allocation is its own client (UDP
// socket, 5-tuple) with TURN REST API credentials made from -secret, a
// permission for -peer and a channel bound to it, as a call's would have.
//
//	turnalloc -server 127.0.0.1:3478 -secret S -peer 127.0.0.1:9 -n 1000
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/pion/logging"
	pionturn "github.com/pion/turn/v5"

	"github.com/parleyhq/parley/turn"
)

func main() {
	server := flag.String("server", "127.0.0.1:3478", "TURN server (UDP)")
	secret := flag.String("secret", "", "static-auth-secret of the server")
	peer := flag.String("peer", "127.0.0.1:9", "peer to permit and bind a channel to")
	n := flag.Int("n", 1000, "allocations")
	perUser := flag.Int("per-user", 5, "allocations per TURN user (below the server's user quota)")
	prefix := flag.String("user", "mem", "user id prefix")
	flag.Parse()
	if err := run(*server, *secret, *peer, *prefix, *n, *perUser); err != nil {
		fmt.Fprintln(os.Stderr, "turnalloc:", err)
		os.Exit(1)
	}
}

func run(server, secret, peerAddr, prefix string, n, perUser int) error {
	peer, err := net.ResolveUDPAddr("udp4", peerAddr)
	if err != nil {
		return err
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			_ = c.Close()
		}
	}()
	for i := range n {
		user, pass := turn.Credentials([]byte(secret), fmt.Sprintf("%s-%d", prefix, i/perUser), time.Hour, time.Now())
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		closers = append(closers, conn)
		c, err := pionturn.NewClient(&pionturn.ClientConfig{
			STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
			Username: user, Password: pass, Realm: "parley", LoggerFactory: lf,
		})
		if err != nil {
			return err
		}
		closers = append(closers, closerFunc(func() error { c.Close(); return nil }))
		if err := c.Listen(); err != nil {
			return err
		}
		relay, err := c.Allocate()
		if err != nil {
			return fmt.Errorf("allocation %d: %w", i+1, err)
		}
		closers = append(closers, relay)
		// A packet to the peer makes pion's client create the permission
		// and bind a channel.
		if _, err := relay.WriteTo([]byte("x"), peer); err != nil {
			return fmt.Errorf("allocation %d: %w", i+1, err)
		}
	}
	time.Sleep(time.Second) // the channel binds run in the background
	fmt.Printf("ready %d\n", n)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }
