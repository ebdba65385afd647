//go:build !linux

package turn

import (
	"errors"
	"net"
	"net/netip"
	"time"
)

// Elsewhere than on Linux the fast path reads and writes one datagram at a
// time: the listening sockets with ReadFromUDPAddrPort in pion's read
// loop, the relay sockets in pion's per-allocation goroutines (see
// listenConn and relayConn). These types are never instantiated.
const batchSupported = false

const batchSize = 1

var errBatchUnsupported = errors.New("turn: batched I/O is only implemented on Linux")

type batchIO struct{}

func newBatchIO(*net.UDPConn, time.Duration) (*batchIO, error) { return nil, errBatchUnsupported }

func (*batchIO) read([][]byte, []int, []netip.AddrPort) (int, error) {
	return 0, errBatchUnsupported
}

type rawSocket struct{ bind netip.Addr }

func (*rawSocket) sendto([]byte, netip.AddrPort, *batchIO) error { return errBatchUnsupported }
func (*rawSocket) writeTo([]byte, netip.AddrPort) error          { return errBatchUnsupported }
func (*rawSocket) localPort() (uint16, error)                    { return 0, errBatchUnsupported }
func (*rawSocket) setBuffers(int) (int, int, error)              { return 0, 0, errBatchUnsupported }
func (*rawSocket) close() error                                  { return nil }

type relayPoller struct{}

func newPoller(*Server) (*relayPoller, error) { return nil, errBatchUnsupported }

func (*relayPoller) open(netip.Addr, uint16) (*relayConn, error) { return nil, errBatchUnsupported }
func (*relayPoller) add(*relayConn) error                        { return errBatchUnsupported }
func (*relayPoller) start()                                      {}
func (*relayPoller) close()                                      {}
