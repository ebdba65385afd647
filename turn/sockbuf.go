package turn

// SetSocketBuffers sets SO_RCVBUF and SO_SNDBUF on conn, which must be a
// socket exposing syscall.Conn (*net.UDPConn, *net.TCPConn, ...), and
// returns the effective sizes read back with getsockopt. Linux reports
// twice the usable size (the kernel doubles the request for bookkeeping).
//
// The kernel silently caps the request at net.core.rmem_max/wmem_max
// (often 208 KiB). On Linux, when the result is below the request, the
// call retries with SO_RCVBUFFORCE/SO_SNDBUFFORCE, which ignore the cap but
// need CAP_NET_ADMIN (root); without it the capped size is kept and
// returned with a nil error. Compare the result to the request to detect
// the cap. A size <= 0 only reads the current sizes.
func SetSocketBuffers(conn any, size int) (rcv, snd int, err error) {
	return setSocketBuffers(conn, size)
}
