//go:build unix && !linux

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
		rcv, opErr = setBuffer(int(fd), syscall.SO_RCVBUF, size)
		if opErr != nil {
			return
		}
		snd, opErr = setBuffer(int(fd), syscall.SO_SNDBUF, size)
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		return rcv, snd, fmt.Errorf("turn: socket buffers: %w", err)
	}
	return rcv, snd, nil
}

func setBuffer(fd, opt, size int) (int, error) {
	if size > 0 {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, opt, size); err != nil {
			return 0, err
		}
	}
	return syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, opt)
}
