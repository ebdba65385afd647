//go:build !unix

package store

import (
	"fmt"
	"os"
)

// lockDir on systems without flock only creates the lock file: Parley's
// servers run on Unix; elsewhere a second server on one directory is not
// detected.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: lock file: %w", err)
	}
	return f, nil
}

func unlockDir(f *os.File) { f.Close() }
