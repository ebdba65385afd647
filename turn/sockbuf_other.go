//go:build !unix

package turn

import "fmt"

// On non-Unix systems the sizes are set through the net package and cannot
// be read back; the requested size is returned.
func setSocketBuffers(conn any, size int) (rcv, snd int, err error) {
	c, ok := conn.(interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	})
	if !ok {
		return 0, 0, fmt.Errorf("%w: %T", ErrUnsupportedConn, conn)
	}
	if size <= 0 {
		return 0, 0, nil
	}
	if err := c.SetReadBuffer(size); err != nil {
		return 0, 0, fmt.Errorf("turn: socket buffers: %w", err)
	}
	if err := c.SetWriteBuffer(size); err != nil {
		return size, 0, fmt.Errorf("turn: socket buffers: %w", err)
	}
	return size, size, nil
}
