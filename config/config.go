// Package config loads Parley's configuration: defaults, then an optional
// JSON file (unknown keys rejected), then PARLEY_* environment variables,
// then command-line flags, then Validate. Every setting has one name used in
// all three places: the flag -turn-listen, the file key "turn-listen" and the
// environment variable PARLEY_TURN_LISTEN.
package config

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Config is the whole configuration of one Parley process.
type Config struct {
	Listen         string         // HTTP address, e.g. ":8080"
	PublicURL      string         // how users reach the page, e.g. "https://call.example.com"; empty = from the request
	AllowedOrigins []string       // extra WebSocket origins besides the page's own
	TrustedProxies []netip.Prefix // reverse proxies whose X-Forwarded-For is believed
	TURNListen     string         // TURN address, UDP and TCP; empty disables the embedded relay
	TURNPublicIP   netip.Addr     // relay address advertised to clients (behind 1:1 NAT: the public one)
	TURNRelayMin   uint16         // relay port range; both 0 = any port
	TURNRelayMax   uint16         //
	TURNSecret     string         // shared secret for TURN REST credentials; generated when empty
	TURNAllowPeers []netip.Prefix // peers the relay may reach despite the deny list
	TURNDenyPeers  []netip.Prefix // extra peers the relay must never reach (beats allow)
	TURNURLs       []string       // external TURN servers (e.g. coturn) sharing turn-secret
	TURNCredTTL    time.Duration  // lifetime of the TURN credentials handed to a participant
	TURNUserQuota  int            // TURN allocations one user may hold at once; 0 = no limit (coturn's user-quota)
	TURNTotalQuota int            // TURN allocations the relay holds at once; 0 = no limit (coturn's total-quota)
	MetricsListen  string         // Prometheus /metrics listener; empty = off
	TLSListen      string         // HTTPS and TURN over TLS on one port, e.g. ":443"; empty = off
	TURNTLSListen  string         // a separate TURN-over-TLS port, e.g. ":5349"; empty = off
	TLSCert        string         // certificate chain file (PEM)
	TLSKey         string         // private key file (PEM)
	ACMEDomains    []string       // get certificates for these names from an ACME CA
	ACMEDirectory  string         // the ACME directory URL
	ACMECache      string         // where ACME certificates and the account key are kept
	ACMEEmail      string         // contact address given to the ACME CA
	LogLevel       slog.Level     // debug, info, warn, error
	MaxRooms       int            // rooms held at once, server-wide
	RoomsPerIP     int            // rooms one IP address may create per hour
	RoomTTL        time.Duration  // an unused room is forgotten after this long
	RoomUnusedTTL  time.Duration  // a room nobody ever joined is forgotten after this long
	MaxFileBytes   int64          // largest file participants may send each other in a call
	AllowNoOrigin  bool           // admit WebSockets without an Origin header (non-browser clients)
	DataDir        string         // where the database (accounts, consultations, rooms) lives
	OpenRooms      bool           // anyone may create rooms without signing in (personal use)
	InviteTTL      time.Duration  // a guest link works until this long after its scheduled time (or creation)
	SessionTTL     time.Duration  // a host's sign-in lasts this long without use

	// SecretGenerated is true when TURNSecret was made at start-up.
	SecretGenerated bool
}

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		Listen:         ":8080",
		TURNListen:     ":3478",
		TURNCredTTL:    time.Hour,
		LogLevel:       slog.LevelInfo,
		MaxRooms:       10000,
		ACMEDirectory:  "https://acme-v02.api.letsencrypt.org/directory",
		ACMECache:      "parley-acme",
		RoomsPerIP:     60,
		RoomTTL:        7 * 24 * time.Hour,
		TURNUserQuota:  10,
		TURNTotalQuota: 10000,
		RoomUnusedTTL:  time.Hour,
		MaxFileBytes:   100 << 20,
		DataDir:        "parley-data",
		InviteTTL:      24 * time.Hour,
		SessionTTL:     12 * time.Hour,
	}
}

// setting is one named option: a flag, a file key and an environment variable.
type setting struct {
	name  string
	usage string
	list  bool // repeatable flag; comma-separated in the environment; array in the file
	flag  bool // boolean: -name alone means true; the file takes true/false
	set   func(c *Config, v string) error
	reset func(c *Config) // for lists: clear before a layer sets them again
}

func settings() []setting {
	return []setting{
		{name: "listen", usage: "HTTP address to serve the app on (`host:port`)", set: func(c *Config, v string) error {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return err
			}
			c.Listen = v
			return nil
		}},
		{name: "public-url", usage: "public base URL users open, e.g. https://call.example.com (default: taken from each request)", set: func(c *Config, v string) error {
			if v == "" {
				c.PublicURL = ""
				return nil
			}
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
				return fmt.Errorf("want a base URL like https://call.example.com")
			}
			c.PublicURL = strings.TrimSuffix(v, "/")
			return nil
		}},
		{name: "allowed-origin", list: true, usage: "extra `origin` allowed to open the WebSocket (repeatable); the page's own origin is always allowed", set: func(c *Config, v string) error {
			u, err := url.Parse(v)
			if err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" {
				return fmt.Errorf("want an origin like https://intranet.example.com")
			}
			c.AllowedOrigins = append(c.AllowedOrigins, strings.ToLower(v))
			return nil
		}, reset: func(c *Config) { c.AllowedOrigins = nil }},
		{name: "trusted-proxy", list: true, usage: "`CIDR` of a reverse proxy in front of Parley whose X-Forwarded-For header is believed, so per-IP limits apply to the real clients (repeatable)", set: func(c *Config, v string) error {
			p, err := parsePrefix(v)
			if err != nil {
				return err
			}
			c.TrustedProxies = append(c.TrustedProxies, p)
			return nil
		}, reset: func(c *Config) { c.TrustedProxies = nil }},
		{name: "turn-listen", usage: "address of the embedded TURN relay, UDP and TCP (`host:port`); empty disables it", set: func(c *Config, v string) error {
			if v != "" {
				if _, _, err := net.SplitHostPort(v); err != nil {
					return err
				}
			}
			c.TURNListen = v
			return nil
		}},
		{name: "turn-public-ip", usage: "IP address the relay advertises to clients; behind 1:1 NAT, the public one (default: this host's first global address)", set: func(c *Config, v string) error {
			if v == "" {
				c.TURNPublicIP = netip.Addr{}
				return nil
			}
			a, err := netip.ParseAddr(v)
			if err != nil {
				return err
			}
			c.TURNPublicIP = a.Unmap()
			return nil
		}},
		{name: "turn-relay-ports", usage: "UDP port range for relayed media, e.g. 50000-50999 (default: any free port)", set: func(c *Config, v string) error {
			if v == "" {
				c.TURNRelayMin, c.TURNRelayMax = 0, 0
				return nil
			}
			lo, hi, ok := strings.Cut(v, "-")
			min, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
			max, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
			if !ok || err1 != nil || err2 != nil || min == 0 || min > max {
				return fmt.Errorf("want a range like 50000-50999")
			}
			c.TURNRelayMin, c.TURNRelayMax = uint16(min), uint16(max)
			return nil
		}},
		{name: "turn-secret", usage: "shared secret for TURN credentials (coturn static-auth-secret); generated at start when empty, never logged", set: func(c *Config, v string) error {
			c.TURNSecret = v
			return nil
		}},
		{name: "turn-allow-peer", list: true, usage: "`CIDR` the relay may reach despite the default deny list of loopback, private and link-local ranges (repeatable)", set: func(c *Config, v string) error {
			p, err := parsePrefix(v)
			if err != nil {
				return err
			}
			c.TURNAllowPeers = append(c.TURNAllowPeers, p)
			return nil
		}, reset: func(c *Config) { c.TURNAllowPeers = nil }},
		{name: "turn-deny-peer", list: true, usage: "`CIDR` the relay must never reach, on top of the default deny list; beats turn-allow-peer (repeatable)", set: func(c *Config, v string) error {
			p, err := parsePrefix(v)
			if err != nil {
				return err
			}
			c.TURNDenyPeers = append(c.TURNDenyPeers, p)
			return nil
		}, reset: func(c *Config) { c.TURNDenyPeers = nil }},
		{name: "turn-url", list: true, usage: "an external TURN server `URL` to hand to participants, e.g. turn:turn.example.com:3478?transport=udp (repeatable); it must share turn-secret (coturn: use-auth-secret, static-auth-secret)", set: func(c *Config, v string) error {
			if !(strings.HasPrefix(v, "turn:") || strings.HasPrefix(v, "turns:") || strings.HasPrefix(v, "stun:")) || strings.ContainsAny(v, " \"") {
				return fmt.Errorf("want a URL like turn:turn.example.com:3478?transport=udp")
			}
			c.TURNURLs = append(c.TURNURLs, v)
			return nil
		}, reset: func(c *Config) { c.TURNURLs = nil }},
		{name: "turn-credential-ttl", usage: "how long the TURN credentials given to a participant stay valid", set: durationSetter(func(c *Config) *time.Duration { return &c.TURNCredTTL })},
		{name: "turn-user-quota", usage: "TURN allocations one user (the id of the TURN username) may hold at once; more are refused with 486. 0 = no limit (coturn's user-quota)", set: intSetter(func(c *Config) *int { return &c.TURNUserQuota })},
		{name: "turn-total-quota", usage: "TURN allocations the relay holds at once, all users together; more are refused with 486. 0 = no limit (coturn's total-quota)", set: intSetter(func(c *Config) *int { return &c.TURNTotalQuota })},
		{name: "metrics-listen", usage: "address for Prometheus /metrics (`host:port`); empty = off. Keep it private", set: func(c *Config, v string) error {
			if v != "" {
				if _, _, err := net.SplitHostPort(v); err != nil {
					return err
				}
			}
			c.MetricsListen = v
			return nil
		}},
		{name: "tls-listen", usage: "HTTPS address that also serves TURN over TLS on the same port, e.g. :443 (`host:port`); empty = off", set: addrSetter(func(c *Config) *string { return &c.TLSListen })},
		{name: "turn-tls-listen", usage: "separate TURN-over-TLS address, e.g. :5349 (`host:port`); empty = off", set: addrSetter(func(c *Config) *string { return &c.TURNTLSListen })},
		{name: "tls-cert", usage: "TLS certificate chain `file` (PEM) for tls-listen and turn-tls-listen", set: func(c *Config, v string) error { c.TLSCert = v; return nil }},
		{name: "tls-key", usage: "TLS private key `file` (PEM)", set: func(c *Config, v string) error { c.TLSKey = v; return nil }},
		{name: "acme-domain", list: true, usage: "get the TLS certificate for this `name` automatically from an ACME CA such as Let's Encrypt (repeatable; needs tls-listen on port 443 reachable from the internet)", set: func(c *Config, v string) error {
			if strings.ContainsAny(v, "/: ") || v == "" {
				return fmt.Errorf("want a host name like call.example.com")
			}
			c.ACMEDomains = append(c.ACMEDomains, strings.ToLower(v))
			return nil
		}, reset: func(c *Config) { c.ACMEDomains = nil }},
		{name: "acme-directory", usage: "ACME directory `URL`", set: func(c *Config, v string) error {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return fmt.Errorf("want a URL like https://acme-v02.api.letsencrypt.org/directory")
			}
			c.ACMEDirectory = v
			return nil
		}},
		{name: "acme-cache", usage: "`directory` for ACME certificates and account key", set: func(c *Config, v string) error { c.ACMECache = v; return nil }},
		{name: "acme-email", usage: "contact `address` for the ACME CA (optional)", set: func(c *Config, v string) error { c.ACMEEmail = v; return nil }},
		{name: "log-level", usage: "debug, info, warn or error", set: func(c *Config, v string) error {
			return c.LogLevel.UnmarshalText([]byte(v))
		}},
		{name: "max-rooms", usage: "rooms held at once, server-wide", set: intSetter(func(c *Config) *int { return &c.MaxRooms })},
		{name: "rooms-per-ip", usage: "rooms one IP address may create per hour", set: intSetter(func(c *Config) *int { return &c.RoomsPerIP })},
		{name: "room-ttl", usage: "an unused room link stops working after this long", set: durationSetter(func(c *Config) *time.Duration { return &c.RoomTTL })},
		{name: "max-file-size", usage: "largest file people may send each other in a call (end to end encrypted, never stored on the server), e.g. 100MB or 2GB", set: func(c *Config, v string) error {
			n, err := parseSize(v)
			if err != nil {
				return err
			}
			c.MaxFileBytes = n
			return nil
		}},
		{name: "room-unused-ttl", usage: "a room link nobody has joined yet stops working after this long", set: durationSetter(func(c *Config) *time.Duration { return &c.RoomUnusedTTL })},
		{name: "allow-missing-origin", flag: true, usage: "accept WebSocket connections and room creations without an Origin header, for non-browser clients (browsers always send one)", set: boolSetter(func(c *Config) *bool { return &c.AllowNoOrigin })},
		{name: "data-dir", usage: "`directory` of the database: host accounts, sessions, consultations and rooms (created 0700 when missing)", set: func(c *Config, v string) error {
			c.DataDir = v
			return nil
		}},
		{name: "open-rooms", flag: true, usage: "let anyone start a call without signing in, as for personal use (default: only signed-in hosts)", set: boolSetter(func(c *Config) *bool { return &c.OpenRooms })},
		{name: "invite-ttl", usage: "how long a guest link works after the consultation's scheduled time, or after it was made when unscheduled", set: durationSetter(func(c *Config) *time.Duration { return &c.InviteTTL })},
		{name: "session-ttl", usage: "how long a host stays signed in without using Parley (at most 168h; a sign-in never lasts longer than 7 days)", set: durationSetter(func(c *Config) *time.Duration { return &c.SessionTTL })},
	}
}

// parsePrefix takes a CIDR or a single address.
func parsePrefix(v string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		a, err2 := netip.ParseAddr(v)
		if err2 != nil {
			return p, err
		}
		p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
	}
	return p.Masked(), nil
}

func addrSetter(field func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error {
		if v != "" {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return err
			}
		}
		*field(c) = v
		return nil
	}
}

func durationSetter(field func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		*field(c) = d
		return nil
	}
}

// parseSize reads a size: a number of bytes, or with KB, MB or GB (powers
// of 1024; KiB, MiB, GiB are the same).
func parseSize(v string) (int64, error) {
	s := strings.ToUpper(strings.TrimSpace(v))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("want a size like 100MB, got %q", v)
	}
	return n * mult, nil
}

// boolSetter takes true/false, 1/0, yes/no and on/off, in any case.
func boolSetter(field func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "1", "t", "true", "yes", "on":
			*field(c) = true
		case "0", "f", "false", "no", "off", "":
			*field(c) = false
		default:
			return fmt.Errorf("want true or false, got %q", v)
		}
		return nil
	}
}

func intSetter(field func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return err
		}
		*field(c) = n
		return nil
	}
}

// EnvName is the environment variable for a setting: PARLEY_ and the name
// in capitals with dashes as underscores.
func EnvName(name string) string {
	return "PARLEY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func fieldErr(name string, err error) error {
	return fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
}

// Load builds the configuration from defaults, the file named by -config or
// PARLEY_CONFIG, the environment and the flags in args, then validates it.
// lookupEnv is os.LookupEnv outside tests. Help output goes to out.
func Load(args []string, lookupEnv func(string) (string, bool), out io.Writer) (Config, error) {
	c, _, err := load(args, lookupEnv, out, "")
	return c, err
}

// LoadCommand is Load for a subcommand such as `parley user add <email>`:
// flags may stand before, between or after its arguments (all of them
// after "--" are arguments), and it returns the arguments in order. usage
// heads the --help output.
func LoadCommand(args []string, lookupEnv func(string) (string, bool), out io.Writer, usage string) (Config, []string, error) {
	return load(args, lookupEnv, out, usage)
}

func load(args []string, lookupEnv func(string) (string, bool), out io.Writer, command string) (Config, []string, error) {
	c := Default()
	all := settings()

	d := Default()
	defaults := map[string]string{
		"listen": d.Listen, "turn-listen": d.TURNListen, "turn-credential-ttl": d.TURNCredTTL.String(),
		"turn-user-quota": strconv.Itoa(d.TURNUserQuota), "turn-total-quota": strconv.Itoa(d.TURNTotalQuota),
		"log-level": strings.ToLower(d.LogLevel.String()), "max-rooms": strconv.Itoa(d.MaxRooms),
		"rooms-per-ip": strconv.Itoa(d.RoomsPerIP), "room-ttl": d.RoomTTL.String(), "room-unused-ttl": d.RoomUnusedTTL.String(), "max-file-size": "100MB",
		"acme-directory": d.ACMEDirectory, "acme-cache": d.ACMECache,
		"data-dir": d.DataDir, "invite-ttl": d.InviteTTL.String(), "session-ttl": d.SessionTTL.String(),
	}
	fs := flag.NewFlagSet("parley", flag.ContinueOnError)
	fs.SetOutput(out)
	configPath := fs.String("config", "", "JSON config `file`; keys are the flag names (see deploy/parley.json)")
	flagValues := map[string]*[]string{}
	for _, s := range all {
		vals := new([]string)
		flagValues[s.name] = vals
		usage := s.usage
		if d := defaults[s.name]; d != "" {
			usage += " (default " + d + ")"
		}
		usage += fmt.Sprintf(" [%s]", EnvName(s.name))
		if s.flag {
			fs.BoolFunc(s.name, usage, func(v string) error { *vals = append(*vals, v); return nil })
		} else {
			fs.Func(s.name, usage, func(v string) error { *vals = append(*vals, v); return nil })
		}
	}
	fs.Usage = func() {
		if command != "" {
			fmt.Fprintf(out, "%s\n\nFlags (the user commands need only -data-dir or -config):\n", command)
			fs.PrintDefaults()
			return
		}
		fmt.Fprintf(out, "Usage: parley [flags]\n       parley turn [flags]   (the TURN relay alone; needs -turn-secret)\n       parley user add|list|disable|enable|passwd [<email>] [flags]   (host accounts; parley user --help)\n\nParley serves end-to-end encrypted calls with its own TURN relay.\n"+
			"Each flag can also be set in the environment (shown in brackets) or in the config file.\n"+
			"Order of precedence: flags, then environment, then config file, then defaults.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return c, nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if command == "" {
			return c, nil, fmt.Errorf("config: unexpected argument %q (flags start with -)", rest[0])
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}

	path := *configPath
	if path == "" {
		path, _ = lookupEnv("PARLEY_CONFIG")
	}
	if path != "" {
		if err := c.loadFile(path, all); err != nil {
			return c, nil, err
		}
	}
	for _, s := range all {
		v, ok := lookupEnv(EnvName(s.name))
		if !ok {
			continue
		}
		vals := []string{v}
		if s.list {
			vals = splitList(v)
			s.reset(&c)
		}
		for _, v := range vals {
			if err := s.set(&c, strings.TrimSpace(v)); err != nil {
				return c, nil, fieldErr(EnvName(s.name), err)
			}
		}
	}
	for _, s := range all {
		vals := *flagValues[s.name]
		if len(vals) == 0 {
			continue
		}
		if s.list {
			s.reset(&c)
		}
		for _, v := range vals {
			if err := s.set(&c, v); err != nil {
				return c, nil, fieldErr("-"+s.name, err)
			}
		}
	}
	return c, positional, c.Validate()
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (c *Config) loadFile(path string, all []setting) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	byName := map[string]setting{}
	for _, s := range all {
		byName[s.name] = s
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s, ok := byName[k]
		if !ok {
			return fmt.Errorf("%w %q in %s", ErrUnknownKey, k, path)
		}
		vals, err := fileValues(raw[k], s.list)
		if err != nil {
			return fieldErr(path+": "+k, err)
		}
		if s.list {
			s.reset(c)
		}
		for _, v := range vals {
			if err := s.set(c, v); err != nil {
				return fieldErr(path+": "+k, err)
			}
		}
	}
	return nil
}

// fileValues turns a JSON value into the strings a setter takes: a string,
// number or boolean, or for lists an array of strings.
func fileValues(m json.RawMessage, list bool) ([]string, error) {
	if list {
		var arr []string
		if err := json.Unmarshal(m, &arr); err != nil {
			return nil, fmt.Errorf("want an array of strings")
		}
		return arr, nil
	}
	var v any
	if err := json.Unmarshal(m, &v); err != nil {
		return nil, err
	}
	switch v := v.(type) {
	case string:
		return []string{v}, nil
	case float64:
		return []string{strconv.FormatFloat(v, 'f', -1, 64)}, nil
	case bool:
		return []string{strconv.FormatBool(v)}, nil
	}
	return nil, fmt.Errorf("want a string or a number")
}

// Validate checks the settings together. Its errors name the field.
func (c *Config) Validate() error {
	switch {
	case c.Listen == "":
		return fieldErr("listen", fmt.Errorf("must not be empty"))
	case c.TURNCredTTL < time.Minute || c.TURNCredTTL > 24*time.Hour:
		return fieldErr("turn-credential-ttl", fmt.Errorf("must be between 1m and 24h, got %s", c.TURNCredTTL))
	case c.TURNSecret != "" && len(c.TURNSecret) < 16:
		return fieldErr("turn-secret", fmt.Errorf("must be at least 16 characters"))
	case c.TURNPublicIP.IsValid() && (c.TURNPublicIP.IsUnspecified() || c.TURNPublicIP.IsMulticast()):
		return fieldErr("turn-public-ip", fmt.Errorf("%s cannot be advertised", c.TURNPublicIP))
	case c.TURNUserQuota < 0:
		return fieldErr("turn-user-quota", fmt.Errorf("must be 0 (no limit) or more, got %d", c.TURNUserQuota))
	case c.TURNTotalQuota < 0:
		return fieldErr("turn-total-quota", fmt.Errorf("must be 0 (no limit) or more, got %d", c.TURNTotalQuota))
	case c.MaxRooms < 1:
		return fieldErr("max-rooms", fmt.Errorf("must be at least 1"))
	case c.RoomsPerIP < 1:
		return fieldErr("rooms-per-ip", fmt.Errorf("must be at least 1"))
	case c.RoomTTL < time.Minute:
		return fieldErr("room-ttl", fmt.Errorf("must be at least 1m"))
	case c.MaxFileBytes < 1<<10 || c.MaxFileBytes > 8<<30:
		return fieldErr("max-file-size", fmt.Errorf("must be between 1KB and 8GB"))
	case c.RoomUnusedTTL < time.Minute || c.RoomUnusedTTL > c.RoomTTL:
		return fieldErr("room-unused-ttl", fmt.Errorf("must be between 1m and room-ttl (%s)", c.RoomTTL))
	case c.DataDir == "":
		return fieldErr("data-dir", fmt.Errorf("must not be empty"))
	case c.InviteTTL < time.Minute || c.InviteTTL > 366*24*time.Hour:
		return fieldErr("invite-ttl", fmt.Errorf("must be between 1m and 8784h (366 days), got %s", c.InviteTTL))
	case c.SessionTTL < 5*time.Minute || c.SessionTTL > 7*24*time.Hour:
		return fieldErr("session-ttl", fmt.Errorf("must be between 5m and 168h, got %s", c.SessionTTL))
	case len(c.TURNURLs) > 0 && c.TURNSecret == "":
		return fieldErr("turn-url", fmt.Errorf("an external TURN server needs turn-secret, the secret it shares with Parley"))
	case c.TURNListen != "" && c.TURNListen == c.Listen:
		return fieldErr("turn-listen", fmt.Errorf("must differ from listen"))
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return fieldErr("tls-cert", fmt.Errorf("tls-cert and tls-key go together"))
	case c.TLSCert != "" && len(c.ACMEDomains) > 0:
		return fieldErr("acme-domain", fmt.Errorf("use either tls-cert/tls-key or acme-domain, not both"))
	case (c.TLSListen != "" || c.TURNTLSListen != "") && c.TLSCert == "" && len(c.ACMEDomains) == 0:
		return fieldErr("tls-listen", fmt.Errorf("needs a certificate: set tls-cert and tls-key, or acme-domain"))
	case c.TLSListen != "" && (c.TLSListen == c.Listen || c.TLSListen == c.TURNListen):
		return fieldErr("tls-listen", fmt.Errorf("must differ from listen and turn-listen"))
	case c.TURNTLSListen != "" && (c.TURNTLSListen == c.Listen || c.TURNTLSListen == c.TURNListen || c.TURNTLSListen == c.TLSListen):
		return fieldErr("turn-tls-listen", fmt.Errorf("must differ from listen, turn-listen and tls-listen"))
	}
	return nil
}
