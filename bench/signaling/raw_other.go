//go:build !linux

package main

import (
	"errors"
	"sync"
)

// The raw senders of the latency phase need epoll (raw_linux.go).

type rawConn struct{}

func takeOver(*conn) (*rawConn, error) { return nil, errors.New("raw senders need Linux") }

func (*rawConn) sendBench(buf, frame []byte, to string) ([]byte, []byte, error) {
	return buf, frame, errors.New("raw senders need Linux")
}

func epollReaders([]*rawConn, int, <-chan struct{}) (*sync.WaitGroup, error) {
	return nil, errors.New("raw senders need Linux")
}
