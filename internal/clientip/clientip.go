// Package clientip finds the client address of an HTTP request for per-IP
// limits, believing X-Forwarded-For only from trusted reverse proxies.
package clientip

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// FromRequest is the address per-IP limits apply to: the peer address, or,
// when the peer is one of the trusted reverse proxies, the rightmost address
// in X-Forwarded-For that is not a trusted proxy itself. With no trusted
// proxies X-Forwarded-For is ignored (anyone can send it).
func FromRequest(r *http.Request, trusted []netip.Prefix) string {
	peer := r.RemoteAddr
	if host, _, err := net.SplitHostPort(peer); err == nil {
		peer = host
	}
	if len(trusted) == 0 {
		return peer
	}
	isTrusted := func(ip string) bool {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return false
		}
		for _, p := range trusted {
			if p.Contains(a.Unmap()) {
				return true
			}
		}
		return false
	}
	if !isTrusted(peer) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop := strings.TrimSpace(hops[i])
		if a, err := netip.ParseAddr(hop); err == nil && !isTrusted(hop) {
			return a.Unmap().String()
		}
	}
	return peer
}

// LimitKey groups addresses the way one subscriber holds them, for rate
// limits: an IPv4 address alone, an IPv6 address by its /64 (a host is
// usually given a whole /64 and can pick any address in it). Anything
// unparsable is its own key.
func LimitKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	return netip.PrefixFrom(a.WithZone(""), 64).Masked().String()
}
