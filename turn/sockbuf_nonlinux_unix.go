//go:build unix && !linux

package turn

// Other Unix systems have no option past the system-wide buffer cap.
const (
	soRcvBufForce = 0
	soSndBufForce = 0
)
