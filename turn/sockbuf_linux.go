package turn

import "syscall"

// The options that set a socket buffer past net.core.[rw]mem_max (with
// CAP_NET_ADMIN).
const (
	soRcvBufForce = syscall.SO_RCVBUFFORCE
	soSndBufForce = syscall.SO_SNDBUFFORCE
)
