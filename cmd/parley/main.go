// Command parley serves end-to-end encrypted calls: the web app, signaling
// and an embedded TURN relay, in one binary. Run it with no arguments and
// open the URL it prints; `parley --help` lists every setting.
//
// `parley turn [flags]` runs only the TURN relay (for a DMZ host), with
// the same flags; it needs -turn-secret, shared with the app that hands out
// credentials (Parley, or anything using coturn's use-auth-secret scheme).
//
// `parley user add|list|disable|enable|passwd [<email>]` manages host
// accounts in the data directory (-data-dir), also while the server runs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/parleyhq/parley/account"
	"github.com/parleyhq/parley/config"
	"github.com/parleyhq/parley/server"
	"github.com/parleyhq/parley/store"
	"github.com/parleyhq/parley/turn"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "user" {
		return runUser(args[1:])
	}
	relayOnly := len(args) > 0 && args[0] == "turn"
	if relayOnly {
		args = args[1:]
	}
	cfg, err := config.Load(args, os.LookupEnv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))

	if relayOnly && cfg.TURNSecret == "" {
		fmt.Fprintln(os.Stderr, "parley turn: set -turn-secret (or PARLEY_TURN_SECRET): the standalone relay shares it with the app that hands out credentials")
		return 2
	}
	ln, err := listen(cfg, relayOnly)
	if err != nil {
		log.Error("cannot open sockets", "err", err)
		return 1
	}
	var srv *server.Server
	if relayOnly {
		srv, err = server.NewRelay(cfg, log, ln)
	} else {
		st, serr := store.Open(cfg.DataDir, log.With("component", "store"))
		if serr != nil {
			log.Error("cannot open the data directory", "dir", cfg.DataDir, "err", serr)
			return 1
		}
		defer st.Close()
		if !cfg.OpenRooms {
			if users, err := st.ListUsers(context.Background()); err == nil && len(users) == 0 {
				log.Warn("no host account yet: only signed-in hosts can start consultations. Add one with `parley user add <email>` (same -data-dir), or run with -open-rooms for personal use")
			}
		}
		srv, err = server.New(cfg, log, ln, server.WithStore(st))
	}
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	srv.Start()
	if srv.TURNSecretGenerated() {
		log.Info("TURN secret generated for this run; set -turn-secret to share it with another relay or to keep credentials valid across restarts")
	}
	if a := srv.RelayAddress(); a.IsValid() {
		log.Info("TURN relay listening", "udp+tcp", cfg.TURNListen, "tls", cfg.TURNTLSListen, "shared-tls", cfg.TLSListen, "advertised", a.String())
	}
	if relayOnly {
		log.Info("Parley TURN relay is running (standalone)")
	} else {
		log.Info("Parley is running", "url", srv.URL(), "https", cfg.TLSListen)
		fmt.Fprintf(os.Stderr, "\n  Open %s in your browser to start a call.\n\n", srv.URL())
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	select {
	case s := <-sigs:
		log.Info("shutting down", "signal", s.String())
	case err := <-srv.Err():
		log.Error("serving failed", "err", err)
		srv.Close()
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		<-sigs
		log.Warn("second signal: exiting now")
		os.Exit(1)
	}()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown incomplete", "err", err)
	}
	return 0
}

// runUser is `parley user ...`: host accounts on the command line.
func runUser(args []string) int {
	cfg, rest, err := config.LoadCommand(args, os.LookupEnv, os.Stderr, account.UserUsage)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley user:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: max(cfg.LogLevel, slog.LevelWarn)}))
	cli := &account.CLI{
		OpenStore: func(create bool) (*store.Store, error) {
			if _, err := os.Stat(cfg.DataDir); !create && errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("no data directory at %s (set -data-dir or PARLEY_DATA_DIR; parley user add makes it)", cfg.DataDir)
			}
			return store.OpenShared(cfg.DataDir, log)
		},
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
	}
	if fd := int(os.Stdin.Fd()); term.IsTerminal(fd) {
		cli.ReadPassword = func(prompt string) (string, error) {
			fmt.Fprint(os.Stderr, prompt)
			b, err := term.ReadPassword(fd)
			fmt.Fprintln(os.Stderr)
			return string(b), err
		}
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	return cli.Run(ctx, rest)
}

// listen opens every socket Parley serves on; the libraries take them.
func listen(cfg config.Config, relayOnly bool) (server.Listeners, error) {
	var ln server.Listeners
	var err error
	tcp := func(addr, what string) (net.Listener, error) {
		if addr == "" {
			return nil, nil
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", what, addr, err)
		}
		return l, nil
	}
	if !relayOnly {
		if ln.HTTP, err = tcp(cfg.Listen, "listen"); err != nil {
			return ln, err
		}
		if ln.TLS, err = tcp(cfg.TLSListen, "tls-listen"); err != nil {
			return ln, err
		}
	}
	if cfg.TURNListen != "" {
		udp, err := net.ListenPacket("udp", cfg.TURNListen)
		if err != nil {
			return ln, fmt.Errorf("TURN UDP %s: %w", cfg.TURNListen, err)
		}
		if _, _, err := turn.SetSocketBuffers(udp, turn.DefaultSocketBuffer); err != nil {
			slog.Warn("TURN socket buffers not enlarged", "err", err)
		}
		ln.TURNUDP = udp
		if ln.TURNTCP, err = tcp(cfg.TURNListen, "TURN TCP"); err != nil {
			return ln, err
		}
	}
	if ln.TURNTLS, err = tcp(cfg.TURNTLSListen, "turn-tls-listen"); err != nil {
		return ln, err
	}
	if ln.Metrics, err = tcp(cfg.MetricsListen, "metrics-listen"); err != nil {
		return ln, err
	}
	return ln, nil
}
