// Package turn is Parley's embedded TURN relay (RFC 8656), a thin policy
// layer over github.com/pion/turn/v5.
//
// The library takes its sockets, logger and configuration from the caller:
// New serves TURN over UDP on the given net.PacketConns and TURN over TCP
// on the given net.Listeners, and never opens a listening socket itself.
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
// scope as the "component" attribute (trace is dropped). Stats returns
// atomic counters: allocations (current and total), authentication
// failures, permission refusals and packets and bytes through relay sockets.
package turn
