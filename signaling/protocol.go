package signaling

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Wire format: every WebSocket text message is one JSON object with a "type"
// field. The client's first message is "join" and carries the protocol
// version; the server answers "welcome" (or "error" and a close). See
// docs/protocol.md for every message, field, limit and error.
const (
	// ProtocolVersion is the version this server speaks.
	ProtocolVersion = 1

	// MaxMessageSize is the largest message a client may send, in bytes.
	// An SDP offer with many candidates is about 10 KiB.
	MaxMessageSize = 64 << 10
	// MaxNameLength is the longest display name, in characters.
	MaxNameLength = 64
	// MaxPeers is how many people one room holds (full mesh).
	MaxPeers = 4
	// MaxSDPSize bounds the "sdp" field of offer and answer.
	MaxSDPSize = 60 << 10
	// MaxCandidateSize bounds a candidate's "candidate" string.
	MaxCandidateSize = 1024
	// MaxPayloadSize bounds the opaque "payload" of an e2ee message.
	MaxPayloadSize = 16 << 10
)

// Message types.
const (
	TypeJoin       = "join"        // client → server: first message
	TypeWelcome    = "welcome"     // server → client: joined
	TypePeerJoined = "peer-joined" // server → client: someone joined
	TypePeerLeft   = "peer-left"   // server → client: someone left
	TypeOffer      = "offer"       // client ↔ client via server, addressed with to/from
	TypeAnswer     = "answer"      // client ↔ client via server
	TypeCandidate  = "candidate"   // client ↔ client via server
	TypeE2EE       = "e2ee"        // client ↔ client via server: opaque end-to-end key messages
	TypeRestartICE = "restart-ice" // client ↔ client via server: please make an ICE restart offer (the polite side asks)
	TypeLeave      = "leave"       // client → server: hanging up
	TypeICERefresh = "ice-refresh" // client → server: ask for fresh TURN credentials
	TypeICEServers = "ice-servers" // server → client: the answer, with iceServers
	TypeError      = "error"       // server → client

	// Consultations (a room a host controls; docs/protocol.md, Waiting room).
	TypeWaiting   = "waiting"    // server → guest: you wait for the host (instead of welcome)
	TypeHost      = "host"       // server → waiting guest: the host arrived or left (hostPresent)
	TypeKnock     = "knock"      // server → host: a guest waits (peer, and its hello once sent)
	TypeKnockLeft = "knock-left" // server → host: a waiting guest went away (id)
	TypeRoster    = "roster"     // host → server: a new signed roster; server → members: the roster
	TypeAdmit     = "admit"      // host → server: let a waiting guest in (to, roster)
	TypeDeny      = "deny"       // host → server: turn a waiting guest away (to)
	TypeRemove    = "remove"     // host → server: take a member out (to, roster)
	TypeEnd       = "end"        // host → server: end the consultation for everyone
)

// Roles in a consultation's welcome.
const (
	RoleHost  = "host"
	RoleGuest = "guest"
)

// Peer describes a participant to the others.
type Peer struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Knock is a guest in a consultation's waiting room, as the host sees it:
// its peer id, display name and, once it has sent one, its hello (the
// end-to-end layer's, opaque to the server).
type Knock struct {
	ID      string          `json:"id"`
	Name    string          `json:"name"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// ICEServer is one entry of RTCConfiguration.iceServers.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// Candidate is an RTCIceCandidateInit.
type Candidate struct {
	Candidate        string  `json:"candidate"`
	SDPMid           *string `json:"sdpMid,omitempty"`
	SDPMLineIndex    *uint16 `json:"sdpMLineIndex,omitempty"`
	UsernameFragment *string `json:"usernameFragment,omitempty"`
}

// Message is the union of every message's fields; Type says which apply.
type Message struct {
	Type string `json:"type"`

	// join
	Version int    `json:"version,omitempty"`
	Room    string `json:"room,omitempty"`
	Name    string `json:"name,omitempty"`
	// Token is the join token, b64url(T_join): proof that the joiner holds
	// the link secret (docs/security.md §2.5). The server keeps only a hash.
	Token string `json:"token,omitempty"`
	// Resume (join) asks for the place of the member this resume token was
	// given to; (welcome, waiting) the token to resume with next time.
	Resume string `json:"resume,omitempty"`
	// Resumed (welcome, waiting): this connection took back an earlier place.
	Resumed bool `json:"resumed,omitempty"`

	// welcome
	ID         string      `json:"id,omitempty"`
	Peers      []Peer      `json:"peers,omitempty"`
	ICEServers []ICEServer `json:"iceServers,omitempty"`
	MaxPeers   int         `json:"maxPeers,omitempty"`

	// consultations: welcome (role, title, roster, waiting), waiting
	// (title, hostPresent), host (hostPresent), knock (peer, payload),
	// roster (roster; host → server also locked), admit and remove (to,
	// roster)
	Role        string          `json:"role,omitempty"`
	Title       string          `json:"title,omitempty"`
	HostName    string          `json:"hostName,omitempty"`
	Roster      json.RawMessage `json:"roster,omitempty"`
	Waiting     []Knock         `json:"waiting,omitempty"`
	HostPresent *bool           `json:"hostPresent,omitempty"`
	Locked      *bool           `json:"locked,omitempty"`
	// welcome: the largest file the pages let people send each other
	// (end-to-end encrypted on their own connections; the server never
	// carries files).
	MaxFileBytes int64 `json:"maxFileBytes,omitempty"`

	// peer-joined
	Peer *Peer `json:"peer,omitempty"`

	// addressed messages: client sets To, the server replaces it with From
	To   string `json:"to,omitempty"`
	From string `json:"from,omitempty"`

	// offer, answer
	SDP string `json:"sdp,omitempty"`
	// candidate; null means end of candidates
	Candidate *Candidate `json:"candidate,omitempty"`
	// e2ee: opaque to the server
	Payload json.RawMessage `json:"payload,omitempty"`

	// peer-left
	Reason string `json:"reason,omitempty"`

	// error
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// DecodeMessage parses and checks one client message. It never panics; every
// failure is a *ProtocolError with code bad-message or unknown-type.
func DecodeMessage(data []byte) (*Message, error) {
	m := new(Message)
	if err := decodeInto(m, data); err != nil {
		return nil, err
	}
	return m, nil
}

// A decoder is a json.Decoder that rejects unknown fields, over a reader
// that decodeInto points at each message in turn. json.NewDecoder costs
// about 1 KB (the decoder, its 512-byte buffer, its scanner) for every
// message, most of what relaying one allocated; a decoder that has read
// one whole message and nothing after it is back where it started, with
// its buffers, and goes back to the pool. One that failed does not.
type decoder struct {
	r   bytes.Reader
	dec *json.Decoder
}

var decoders = sync.Pool{New: func() any {
	d := new(decoder)
	d.dec = json.NewDecoder(&d.r)
	d.dec.DisallowUnknownFields()
	return d
}}

// decodeInto is DecodeMessage into *m, which must be the zero Message
// (json.RawMessage fields are appended to, not replaced).
func decodeInto(m *Message, data []byte) error {
	if len(data) > MaxMessageSize {
		return protoErr(CodeBadMessage, fmt.Sprintf("Message over %d bytes.", MaxMessageSize), ErrBadMessage)
	}
	if !utf8.Valid(data) {
		return protoErr(CodeBadMessage, "Message is not valid UTF-8.", ErrBadMessage)
	}
	d := decoders.Get().(*decoder)
	d.r.Reset(data)
	if err := d.dec.Decode(m); err != nil {
		return protoErr(CodeBadMessage, "Message is not a valid JSON object of this protocol: "+clip(err.Error(), 200), ErrBadMessage)
	}
	if d.dec.More() {
		return protoErr(CodeBadMessage, "Only one JSON object per message.", ErrBadMessage)
	}
	// More read to the end of data: nothing is left in the decoder.
	d.r.Reset(nil)
	decoders.Put(d)
	return checkMessage(m)
}

// checkMessage applies each type's rules to a decoded message.
func checkMessage(m *Message) error {
	bad := func(format string, args ...any) error {
		return protoErr(CodeBadMessage, fmt.Sprintf(format, args...), ErrBadMessage)
	}
	switch m.Type {
	case TypeJoin:
		if m.Room == "" {
			return bad("join needs a room.")
		}
		if len(m.Room) > 64 {
			return bad("Room id too long.")
		}
		if len(m.Token) > 64 || len(m.Resume) > 64 {
			return bad("Join or resume token too long.")
		}
	case TypeOffer, TypeAnswer:
		if m.To == "" {
			return bad("%s needs a \"to\" peer id.", m.Type)
		}
		if m.SDP == "" || len(m.SDP) > MaxSDPSize {
			return bad("%s needs an sdp of at most %d bytes.", m.Type, MaxSDPSize)
		}
	case TypeCandidate:
		if m.To == "" {
			return bad("candidate needs a \"to\" peer id.")
		}
		if m.Candidate != nil && len(m.Candidate.Candidate) > MaxCandidateSize {
			return bad("candidate over %d bytes.", MaxCandidateSize)
		}
	case TypeRestartICE:
		if m.To == "" {
			return bad("restart-ice needs a \"to\" peer id.")
		}
	case TypeE2EE:
		if len(m.Payload) == 0 || len(m.Payload) > MaxPayloadSize {
			return bad("e2ee needs a payload of at most %d bytes.", MaxPayloadSize)
		}
	case TypeAdmit, TypeRemove:
		if m.To == "" {
			return bad("%s needs a \"to\" peer id.", m.Type)
		}
		if len(m.Roster) == 0 || len(m.Roster) > MaxPayloadSize {
			return bad("%s needs a roster of at most %d bytes.", m.Type, MaxPayloadSize)
		}
	case TypeDeny:
		if m.To == "" {
			return bad("deny needs a \"to\" peer id.")
		}
	case TypeRoster:
		if len(m.Roster) == 0 || len(m.Roster) > MaxPayloadSize {
			return bad("roster needs a roster of at most %d bytes.", MaxPayloadSize)
		}
	case TypeLeave, TypeICERefresh, TypeEnd:
	case "":
		return bad("Message has no \"type\".")
	default:
		return protoErr(CodeUnknownType, fmt.Sprintf("Unknown message type %q.", clip(m.Type, 40)), ErrUnknownType)
	}
	if m.From != "" {
		return bad("\"from\" is set by the server, not the client.")
	}
	return nil
}

// CleanName checks and normalises a display name: surrounding space
// trimmed, inner runs of space folded to one, 1..MaxNameLength characters,
// no control or format characters (which include bidirectional overrides).
func CleanName(s string) (string, error) {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "", protoErr(CodeBadName, "Please enter your name.", ErrBadName)
	}
	if utf8.RuneCountInString(s) > MaxNameLength {
		return "", protoErr(CodeBadName, fmt.Sprintf("Your name can be at most %d characters.", MaxNameLength), ErrBadName)
	}
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || !unicode.IsPrint(r) && r != ' ' {
			return "", protoErr(CodeBadName, "Your name contains characters that cannot be shown. Please use letters, digits and punctuation.", ErrBadName)
		}
	}
	return s, nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
