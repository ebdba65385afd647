package signaling

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecodeMessage feeds arbitrary bytes to the client-message decoder: it
// must never panic, and must either return a valid message or a
// *ProtocolError wrapping ErrBadMessage or ErrUnknownType.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"join","version":1,"room":"AAAAAAAAAAAAAAAAAAAAAA","name":"Ann"}`,
		`{"type":"offer","to":"p1","sdp":"v=0\r\n"}`,
		`{"type":"candidate","to":"p1","candidate":{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdpMid":"0","sdpMLineIndex":0}}`,
		`{"type":"candidate","to":"p1","candidate":null}`,
		`{"type":"e2ee","payload":{"a":1}}`,
		`{"type":"leave"}`,
		`{}`, `[]`, `null`, `{"type":7}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMessage(data)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) || !(errors.Is(err, ErrBadMessage) || errors.Is(err, ErrUnknownType)) {
				t.Fatalf("error of the wrong kind: %v", err)
			}
			if m != nil {
				t.Fatal("message and error both returned")
			}
			return
		}
		switch m.Type {
		case TypeJoin, TypeOffer, TypeAnswer, TypeCandidate, TypeE2EE, TypeLeave, TypeICERefresh:
		default:
			t.Fatalf("accepted type %q", m.Type)
		}
		if m.From != "" {
			t.Fatal("accepted a client-set from")
		}
		if _, err := json.Marshal(m); err != nil {
			t.Fatalf("accepted message does not re-encode: %v", err)
		}
	})
}
