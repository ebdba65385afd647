package server

import "errors"

// ErrNoListener is returned when New gets no HTTP listener.
var ErrNoListener = errors.New("server: no listener")

// ErrNoSecret is returned by NewRelay without a TURN secret: a standalone
// relay must share its secret with whatever hands out credentials.
var ErrNoSecret = errors.New("server: the standalone relay needs -turn-secret (shared with the app that hands out credentials)")
