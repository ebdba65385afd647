// Package turn is Parley's embedded TURN relay (RFC 8656), a thin policy
// layer over github.com/pion/turn/v5.
//
// The library takes its sockets, logger and configuration from the caller:
// New serves TURN over UDP on the given net.PacketConns and TURN over TCP
// on the given net.Listeners (TURN over TLS when a listener yields TLS
// connections, e.g. from tls.NewListener), and never opens a listening
// socket itself.
// It does create one UDP relay socket per allocation, which is TURN's job,
// bound to Config.RelayBindIP within Config.RelayPortMin..RelayPortMax and
// advertised as Config.PublicIP. RFC 6062 TCP relay allocations are not
// offered (ErrTCPRelayUnsupported).
//
// # Credentials
//
// Authentication is the TURN REST API scheme (draft-uberti-behave-turn-rest,
// coturn's use-auth-secret): the application server, which shares
// Config.Secret with the relay, hands out short-lived credentials
//
//	username = "<unix expiry>:<id>"
//	password = base64(HMAC-SHA1(secret, username))
//
// made by Credentials. The relay needs no user database: it parses the
// username, refuses it when malformed (the id must be non-empty, printable
// and at most 128 bytes; a bare "<unix expiry>" is accepted as coturn does)
// or, on Allocate, expired, and otherwise derives the long-term credential key
// MD5(username ":" realm ":" password) from the secret. Pion checks
// MESSAGE-INTEGRITY with that key, so a wrong password is refused too.
// Like coturn, the expiry bounds when an allocation may be created, not how
// long it lives: Refresh, CreatePermission and ChannelBind on an existing
// allocation still succeed with an expired username, so a call outlives
// its credentials.
// Refusals are counted in Stats.AuthFailures and logged with the reason and
// the username's id, never the password or the secret.
//
// Failures are also charged to their source (IPv4 address or IPv6 /64) in
// a token bucket of Config.AuthFailureLimit (10) refilled over
// Config.AuthFailureWindow (a minute). Once it is empty, every
// authenticated request from that source is refused with 401 before its
// username is even parsed, counted in Stats.AuthRateLimited and logged
// once per block, until a token comes back (6 s by default). Client
// addresses of live allocations are exempt, so that a client looping on a
// stale credential behind a shared NAT does not cut the calls of the
// others. The table of sources is bounded (65536); when full, sources whose
// bucket refilled are forgotten first, then arbitrary ones.
//
// # Peers: deny list and the relay-to-relay exception
//
// A relay is an open UDP proxy for anyone with credentials, so by default
// it refuses peers (CreatePermission and ChannelBind fail) in
// loopback (127/8, ::1), private (10/8, 172.16/12, 192.168/16, fc00::/7),
// CGNAT (100.64/10), link-local (169.254/16 - which holds the cloud
// metadata service 169.254.169.254 - and fe80::/10), multicast, unspecified
// (0/8, ::), broadcast and reserved space, IPv4-mapped forms of all these,
// and the server's own addresses (the addresses of the sockets passed to
// New, and every interface address when one of those is bound to the
// unspecified address; PublicIP and RelayBindIP are treated as below).
// Config.AllowPeers overrides all of this, e.g. for a LAN deployment.
// Config.DenyPeers adds ranges and beats everything else: a peer in both
// lists is refused, and so is our own relay address if DenyPeers holds it.
// The metadata addresses 169.254.169.254 and fd00:ec2::254 are refused
// under their own reason, "metadata", to make such attempts stand out.
//
// Two clients of the same relay must nevertheless reach each other's relay
// addresses: when both sides of a call use TURN, each one's peer address is
// the other's relay address on PublicIP. TURN permissions are per IP, so
// permitting PublicIP as a peer would also open every other UDP port of the
// server on that IP (DNS, a metrics or QUIC port...). Hence two layers: the
// permission is granted for our relay IPs, and every relay socket is
// wrapped so that a packet towards one of our own IPs is dropped unless its
// port is a live relay allocation of this server (a set kept up to date as
// relay sockets open and close). The wrapper applies the deny list again
// to every packet, as defense in depth. Dropped packets count in
// Stats.PermissionRefusals; each refusal is logged once, not per packet.
//
// Behind a 1:1 NAT, PublicIP is not configured on the host and hairpinning
// through the NAT is often unsupported, so relay-to-relay packets are sent
// to the relay's local address (RelayBindIP, or loopback when relays bind
// the unspecified address) instead, and the receiving relay reports them as
// coming from PublicIP:port, the address its client gave permission to.
//
// # Quotas, bandwidth and lifetimes
//
// An Allocate is refused with 486 (Allocation Quota Reached) when its user
// (the id of the REST username) has Config.MaxAllocationsPerUser
// allocations open, or the server Config.MaxAllocations. Pion's
// QuotaHandler checks; the relay socket factory takes the count
// atomically and the socket's Close gives it back, so a count cannot leak
// whatever ends the allocation (Refresh 0, expiry, TCP close, Close), and
// two racing Allocates cannot both take the last slot (the loser gets 508).
//
// Config.BandwidthPerAllocation caps each direction of each allocation
// with a token bucket in the relay socket wrapper (on the fast path too); packets over it are
// dropped and counted under the reason "bandwidth", logged once per
// allocation. So that anyone who knows a relay address cannot spend a
// call's inbound budget by spraying it, the wrapper keeps the allocation's
// permitted peer IPs (from pion's permission events) and drops other
// packets before charging them - pion would drop them anyway.
//
// Lifetimes (RFC 8656 §7.2, §7.3): an Allocate or Refresh without LIFETIME
// gets Config.AllocationLifetime (10 minutes), and no request gets more
// than MaxAllocationLifetime (one hour), which is what matters for
// resources. Pion decides, and differs from the RFC in three corners: a
// request for an hour or more gets the default lifetime rather than the
// hour; a request below the default gets what it asked rather than the
// default; and an Allocate with LIFETIME 0 fails with 508 rather than
// getting the default. None affects a client that refreshes when told.
// Matching the RFC exactly would need a change in pion (its lifetime
// computation is internal) or rewriting and re-signing LIFETIME in
// requests before pion sees them.
//
// # TLS
//
// Pion runs the TLS handshake itself only for a bare *tls.Conn, and the
// server wraps every accepted connection (to close it on Close and to
// label its traffic), so the wrapper runs the handshake on the first read
// with pion's 10 s timeout. Pion's AuthHandler therefore sees no TLS
// state, which Parley does not use. A connection is "tls" when it has a
// ConnectionState method, as *tls.Conn and tlsmux's connections do.
//
// # The media fast path
//
// Pion keeps the control plane: Allocate, Refresh, CreatePermission,
// ChannelBind, authentication, quotas and lifetimes. Media does not go
// through it. Each UDP socket given to New is wrapped (listenConn) and
// read by the wrapper, called from pion's read loop: ChannelData and Send
// indications of known allocations are relayed straight to the relay
// socket, and only the rest reaches pion. In the other direction, a
// datagram from a peer is framed as ChannelData (when a channel is bound
// to the peer) or as a Data indication and sent to the client without
// pion. Only TCP and TLS clients' media still goes through pion.
//
// On Linux the fast path is batched: listening sockets are read with
// recvmmsg, up to 64 datagrams per system call, and relay sockets are
// opened as raw non-blocking sockets in an epoll instance of the relay
// poller, one goroutine that drains every ready relay socket with
// recvmmsg and sends all the frames for clients with one sendmmsg. There
// is no allocation and no goroutine hand-off per packet. Elsewhere (and in
// tests, Config.noBatching), the same code reads and writes one datagram
// at a time: the listening socket in pion's read loop, relay sockets in
// pion's per-allocation goroutine.
//
// Nothing is relaxed on the fast path. The relay mirrors each allocation's
// permissions and channels from pion's events (OnPermissionCreated and
// Deleted, OnChannelCreated and Deleted) into an immutable state replaced
// on every change, so pion's timers expire them on the fast path too.
// Every packet needs a permission for its peer in both directions (RFC
// 8656 §9; pion itself does not check it for a client's ChannelData), a
// ChannelData message a live channel, and a packet towards a peer must
// pass the relay policy again (the deny list, and our own IPs only at live
// relay ports) and the bandwidth cap; packets relayed are counted per
// batch. Whatever the fast path does not fully understand (a Send
// indication with attributes other than XOR-PEER-ADDRESS, DATA and
// FINGERPRINT, an unknown channel, a client without an allocation) goes
// to pion, which answers or drops it as before.
//
// # Socket buffers
//
// Each relay socket gets Config.SocketBuffer (default 2 MiB) of SO_RCVBUF
// and SO_SNDBUF through SetSocketBuffers. Media is bursty (a video key
// frame is dozens of packets at once, per participant) and the relay
// goroutine is not always scheduled in time; a kernel default buffer
// (about 208 KiB) then overflows and packets are dropped before pion sees
// them. Measured: pion with default buffers lost 13% of packets at about
// 40k packets/s; with 2 MiB it lost none. BenchmarkRelay on a 2-core
// machine, where client, relay and sink share the CPUs, shows the same at
// 80k packets/s: 16% lost with kernel defaults, none with 2 MiB.
//
// Linux caps the request at net.core.rmem_max/wmem_max unless the process
// has CAP_NET_ADMIN, so raise those sysctls or run privileged; the first
// allocation logs a warning when the cap applies. The caller should size
// the listening sockets it passes to New the same way (SetSocketBuffers
// works on any *net.UDPConn), since every client packet crosses them.
// BenchmarkRelay measures throughput, loss and CPU per packet;
// PARLEY_BENCH_PPS sets its rate and PARLEY_BENCH_SOCKBUF its buffer size
// (-1 for the kernel default).
//
// # Logging and counters
//
// Pion's logger is bridged onto the *slog.Logger given to New, with pion's
// scope as the "component" attribute (trace is dropped). Every refusal -
// credentials, rate limit, quota, peer, bandwidth - is logged at Info with
// a "reason" attribute, once per event (per packet drops: once per
// destination or allocation), at most 20 lines per 10 s in all; never a
// password or the secret.
//
// Stats returns atomic counters: allocations (current and total),
// authentication failures and rate-limited requests, quota refusals,
// permission refusals by reason, and relayed packets and bytes by client
// transport (udp, tcp, tls), counted at the relay socket.
package turn
