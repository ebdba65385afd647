package server

import "errors"

// ErrNoListener is returned when New gets no HTTP listener.
var ErrNoListener = errors.New("server: no HTTP listener")
