// Command parley serves end-to-end encrypted calls: the web app, signaling
// and an embedded TURN relay, in one binary. Run it with no arguments and
// open the URL it prints; `parley --help` lists every setting.
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

	"github.com/parleyhq/parley/config"
	"github.com/parleyhq/parley/server"
	"github.com/parleyhq/parley/turn"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cfg, err := config.Load(args, os.LookupEnv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))

	ln, err := listen(cfg)
	if err != nil {
		log.Error("cannot open sockets", "err", err)
		return 1
	}
	srv, err := server.New(cfg, log, ln)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	srv.Start()
	if srv.TURNSecretGenerated() {
		log.Info("TURN secret generated for this run; set -turn-secret to share it with another relay or to keep credentials valid across restarts")
	}
	if a := srv.RelayAddress(); a.IsValid() {
		log.Info("TURN relay listening", "addr", cfg.TURNListen, "advertised", a.String())
	}
	log.Info("Parley is running", "url", srv.URL())
	fmt.Fprintf(os.Stderr, "\n  Open %s in your browser to start a call.\n\n", srv.URL())

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

// listen opens every socket Parley serves on; the libraries take them.
func listen(cfg config.Config) (server.Listeners, error) {
	var ln server.Listeners
	var err error
	if ln.HTTP, err = net.Listen("tcp", cfg.Listen); err != nil {
		return ln, fmt.Errorf("listen %s: %w", cfg.Listen, err)
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
		if ln.TURNTCP, err = net.Listen("tcp", cfg.TURNListen); err != nil {
			return ln, fmt.Errorf("TURN TCP %s: %w", cfg.TURNListen, err)
		}
	}
	if cfg.MetricsListen != "" {
		if ln.Metrics, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return ln, fmt.Errorf("metrics %s: %w", cfg.MetricsListen, err)
		}
	}
	return ln, nil
}
