//go:build unix

package turn

import (
	"fmt"
	"syscall"
)

func setSocketBuffers(conn any, size int) (rcv, snd int, err error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return 0, 0, fmt.Errorf("%w: %T", ErrUnsupportedConn, conn)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, 0, fmt.Errorf("turn: socket buffers: %w", err)
	}
	var opErr error
	err = raw.Control(func(fd uintptr) {
		rcv, opErr = setBuffer(int(fd), syscall.SO_RCVBUF, soRcvBufForce, size)
		if opErr != nil {
			return
		}
		snd, opErr = setBuffer(int(fd), syscall.SO_SNDBUF, soSndBufForce, size)
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		return rcv, snd, fmt.Errorf("turn: socket buffers: %w", err)
	}
	return rcv, snd, nil
}

// setBuffer sets one buffer size and returns what the kernel reports.
// forceOpt, if not 0, is the option that passes the system-wide cap.
func setBuffer(fd, opt, forceOpt, size int) (int, error) {
	if size > 0 {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, opt, size); err != nil {
			return 0, err
		}
	}
	got, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, opt)
	if err != nil {
		return 0, err
	}
	// Linux stores (and reports) twice the requested size.
	if forceOpt != 0 && size > 0 && got/2 < size {
		// Capped by net.core.[rw]mem_max. The FORCE variant ignores the
		// cap when we have CAP_NET_ADMIN; EPERM otherwise, which is fine.
		if syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, forceOpt, size) == nil {
			if got, err = syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, opt); err != nil {
				return 0, err
			}
		}
	}
	return got, nil
}
