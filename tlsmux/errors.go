package tlsmux

import "errors"

// ErrClosed is returned by Accept after Close.
var ErrClosed = errors.New("tlsmux: closed")
