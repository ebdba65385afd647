package signaling

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// The send side of a connection. Parley writes its server-to-client
// WebSocket frames itself (RFC 6455 §5.2: FIN set, no mask, no extension);
// gorilla only reads. Only one party writes to a socket at a time (busy,
// under pmu), either:
//
//   - the goroutine that enqueues a message, when nothing is queued or being
//     written for that client: it writes the frame at once, without
//     blocking, and the message needs no hand-off to another goroutine
//     (most relayed messages; bench/signaling.md); or
//   - the client's writer goroutine, for everything else: messages that
//     queue up behind a write, the rest of a frame a full socket buffer
//     took only part of, pings, pongs and the close frame. It writes what
//     is queued as one batch, with the write timeout.
//
// The direct write never waits: a socket that cannot take the whole frame
// (a slow reader) leaves the rest to the writer goroutine, and what comes
// next queues behind it, up to sendQueue messages (close 4000 past that),
// as before. Messages go out in the order they were enqueued: a direct
// write happens inside enqueue, under the locks its caller holds.

// WebSocket opcodes (RFC 6455 §5.2).
const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

// maxBatch ends a batch of queued frames once it has this many bytes.
const maxBatch = 64 << 10

// appendFrame appends a whole unmasked frame carrying payload.
func appendFrame(b []byte, op byte, payload []byte) []byte {
	b = append(b, 0x80|op)
	switch n := len(payload); {
	case n <= 125:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, payload...)
}

// deferredWrites counts direct writes that left part of their frame to the
// writer goroutine (a full socket buffer); tests read it.
var deferredWrites atomic.Int64

// frameBuffers lends frames and batches their bytes while they are written.
var frameBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func putFrameBuffer(bp *[]byte) {
	if cap(*bp) <= 2*maxBatch {
		frameBuffers.Put(bp)
	}
}

// enqueue hands a message to the send side without blocking: written at
// once if the socket is free, else queued for the writer goroutine. A
// client whose queue is full is too slow to keep up and is disconnected.
func (c *client) enqueue(data []byte) {
	c.pmu.Lock()
	if c.detached {
		c.keepLocked(data)
		c.pmu.Unlock()
		return
	}
	select {
	case <-c.stop:
		// The writer is flushing or gone: nothing more goes out.
		c.pmu.Unlock()
		return
	default:
	}
	if c.direct != nil && !c.busy && c.rest == nil && c.head == len(c.out) {
		c.busy = true
		c.pmu.Unlock()
		c.writeDirect(data)
		return
	}
	if n := len(c.out) - c.head; n >= sendQueue {
		c.pmu.Unlock()
		c.log.Info("client too slow; closing", "queued", n)
		c.closeWith(CloseSlowReader, "Your connection is too slow.")
		return
	}
	c.out = append(c.out, data)
	c.pmu.Unlock()
	c.signal()
}

// keepLocked keeps a message for a resume; past maxPending the resume will
// be refused. pmu is held.
func (c *client) keepLocked(data []byte) {
	if len(c.pending) < maxPending {
		c.pending = append(c.pending, data)
	} else {
		c.overflow = true
	}
}

// writeDirect writes one text frame without waiting; busy is set. What the
// socket did not take, and anything queued meanwhile, is the writer's.
func (c *client) writeDirect(data []byte) {
	bp := frameBuffers.Get().(*[]byte)
	f := appendFrame((*bp)[:0], opText, data)
	n, err := c.direct.writeNow(f)
	c.pmu.Lock()
	if err == nil && n < len(f) {
		c.rest = append([]byte(nil), f[n:]...)
		deferredWrites.Add(1)
	}
	c.busy = false
	more := c.rest != nil || c.head < len(c.out) || c.pingDue || c.pongDue
	c.pmu.Unlock()
	*bp = f
	putFrameBuffer(bp)
	if err != nil {
		c.log.Debug("write failed", "err", err)
		c.ws.Close() // unblocks the reader, and the writer's next write fails
		return
	}
	if more || c.stopping() {
		c.signal()
	}
}

// signal wakes the writer goroutine.
func (c *client) signal() {
	select {
	case c.wake <- struct{}{}:
	default: // the writer has been told already
	}
}

// control sets a control frame due (under pmu) and wakes the writer.
func (c *client) control(set func()) {
	c.pmu.Lock()
	set()
	c.pmu.Unlock()
	c.signal()
}

func (c *client) stopping() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// flush writes what is due, in batches, unless somebody else is writing
// (a direct write, which signals the writer when it is done). It reports
// false if a write failed.
func (c *client) flush() bool {
	for {
		c.pmu.Lock()
		if c.busy {
			c.pmu.Unlock()
			return true
		}
		bp := frameBuffers.Get().(*[]byte)
		b := append((*bp)[:0], c.rest...)
		c.rest = nil
		if c.pongDue {
			b = appendFrame(b, opPong, c.pong)
			c.pongDue, c.pong = false, nil
		}
		if c.pingDue {
			b = appendFrame(b, opPing, nil)
			c.pingDue = false
		}
		for c.head < len(c.out) && len(b) < maxBatch {
			b = appendFrame(b, opText, c.out[c.head])
			c.out[c.head] = nil
			c.head++
		}
		if c.head == len(c.out) {
			if cap(c.out) > 16 {
				c.out = nil // let a burst's backing array go
			}
			c.out, c.head = c.out[:0], 0
		}
		if len(b) == 0 {
			c.pmu.Unlock()
			*bp = b
			putFrameBuffer(bp)
			return true
		}
		c.busy = true
		c.pmu.Unlock()
		c.conn.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
		_, err := c.conn.Write(b)
		*bp = b
		putFrameBuffer(bp)
		c.pmu.Lock()
		c.busy = false
		c.pmu.Unlock()
		if err != nil {
			c.log.Debug("write failed", "err", err)
			return false
		}
	}
}

// writer is the connection's writer goroutine: it writes what the direct
// writes left, sends a ping every PingInterval and, once stop is closed,
// what is queued and then the close frame.
func (c *client) writer() {
	defer close(c.done)
	ping := time.NewTicker(c.srv.cfg.PingInterval)
	defer ping.Stop()
	wt := c.srv.cfg.WriteTimeout
	for {
		select {
		case <-c.wake:
		case <-ping.C:
			c.pmu.Lock()
			c.pingDue = true
			c.pmu.Unlock()
		case <-c.stop:
			if c.closeSent.Load() {
				return
			}
			// Flush what is queued (an error explaining the close, say),
			// once a direct write under way is done (it never waits for
			// the socket), and none starts now.
			for {
				c.pmu.Lock()
				busy := c.busy
				c.pmu.Unlock()
				if !busy {
					break
				}
				select {
				case <-c.wake:
				case <-time.After(time.Millisecond):
				}
			}
			if !c.flush() {
				c.ws.Close()
				return
			}
			b := appendFrame(nil, opClose, websocket.FormatCloseMessage(c.closeCode, c.closeText))
			c.conn.SetWriteDeadline(time.Now().Add(wt))
			c.conn.Write(b)
			// Give the client a moment to answer the close, then drop.
			c.ws.SetReadDeadline(time.Now().Add(2 * time.Second))
			return
		}
		if !c.flush() {
			c.ws.Close() // unblocks the reader
			return
		}
	}
}
