package turn

import "sync/atomic"

// Client transports, as labelled in Stats.Transports.
const (
	TransportUDP = "udp" // TURN over UDP
	TransportTCP = "tcp" // TURN over TCP
	TransportTLS = "tls" // TURN over TLS (a conn with a ConnectionState method)
)

type transport uint8

const (
	transportUDP transport = iota
	transportTCP
	transportTLS
	numTransports
)

var transportNames = [numTransports]string{TransportUDP, TransportTCP, TransportTLS}

// Stats is a snapshot of the server's counters. Counters only grow, except
// Allocations. The maps are fresh copies holding every key, zeros included,
// so that a metrics exporter sees every series from the start.
type Stats struct {
	Allocations      int64  // allocations currently open
	AllocationsTotal uint64 // allocations created since New

	// AuthFailures counts requests refused for bad, malformed or expired
	// credentials; AuthRateLimited the requests refused without looking at
	// the credentials because their source failed too often (see
	// Config.AuthFailureLimit). The two do not overlap.
	AuthFailures    uint64
	AuthRateLimited uint64

	// QuotaRefusals counts Allocates refused by MaxAllocationsPerUser or
	// MaxAllocations.
	QuotaRefusals uint64

	// PermissionRefusals is the sum of PermissionRefusalsByReason:
	// CreatePermission/ChannelBind refusals plus packets dropped by the
	// relay policy or the bandwidth cap. PermissionRefusalsByReason has
	// the keys unspecified, loopback, private, cgnat, link-local,
	// metadata, multicast, broadcast, reserved, own-address, denied
	// (Config.DenyPeers), bandwidth (packets over
	// Config.BandwidthPerAllocation) and invalid.
	PermissionRefusals         uint64
	PermissionRefusalsByReason map[string]uint64

	// PacketsRelayed and BytesRelayed count UDP payload through relay
	// sockets, both directions; Transports splits them by how the
	// allocation's client reaches the server: "udp", "tcp" or "tls".
	// Packets dropped by the policy, the bandwidth cap or for lack of a
	// permission are not counted.
	PacketsRelayed uint64
	BytesRelayed   uint64
	Transports     map[string]TransportStats
}

// TransportStats counts relayed traffic for one client transport.
type TransportStats struct {
	Packets uint64 // payload packets relayed, both directions
	Bytes   uint64 // payload bytes relayed, both directions
}

// counters are the server's atomic counters behind Stats.
type counters struct {
	allocations      atomic.Int64
	allocationsTotal atomic.Uint64
	authFailures     atomic.Uint64
	authRateLimited  atomic.Uint64
	quotaRefusals    atomic.Uint64
	refusals         [numReasons]atomic.Uint64
	transports       [numTransports]transportCounters
}

// transportCounters is padded to a cache line: relay goroutines of
// different transports then do not contend on one line.
type transportCounters struct {
	packets atomic.Uint64
	bytes   atomic.Uint64
	_       [48]byte
}

func (t *transportCounters) add(n int) {
	t.packets.Add(1)
	t.bytes.Add(uint64(n))
}

func (c *counters) refuse(why reason) { c.refusals[why].Add(1) }

func (c *counters) snapshot() Stats {
	st := Stats{
		Allocations:                c.allocations.Load(),
		AllocationsTotal:           c.allocationsTotal.Load(),
		AuthFailures:               c.authFailures.Load(),
		AuthRateLimited:            c.authRateLimited.Load(),
		QuotaRefusals:              c.quotaRefusals.Load(),
		PermissionRefusalsByReason: make(map[string]uint64, numReasons-1),
		Transports:                 make(map[string]TransportStats, numTransports),
	}
	for r := reasonNone + 1; r < numReasons; r++ {
		n := c.refusals[r].Load()
		st.PermissionRefusalsByReason[r.String()] = n
		st.PermissionRefusals += n
	}
	for t := range numTransports {
		ts := TransportStats{Packets: c.transports[t].packets.Load(), Bytes: c.transports[t].bytes.Load()}
		st.Transports[transportNames[t]] = ts
		st.PacketsRelayed += ts.Packets
		st.BytesRelayed += ts.Bytes
	}
	return st
}
