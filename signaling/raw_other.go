//go:build !unix

package signaling

import (
	"errors"
	"net"
)

// directWriter is not built here: the writer goroutine writes everything.
type directWriter struct{}

func newDirectWriter(net.Conn) *directWriter { return nil }

func (*directWriter) writeNow([]byte) (int, error) {
	return 0, errors.New("direct writes are not built on this system")
}
