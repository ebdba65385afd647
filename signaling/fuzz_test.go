package signaling

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
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
		case TypeJoin, TypeOffer, TypeAnswer, TypeCandidate, TypeE2EE, TypeRestartICE, TypeLeave, TypeICERefresh,
			TypeAdmit, TypeDeny, TypeRemove, TypeRoster, TypeEnd:
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

// The relayed e2ee message, built by hand, is the JSON value json.Marshal
// gives for the same Message, with nothing but type, from and payload.
func TestRelayedE2EE(t *testing.T) {
	for _, in := range []string{
		`{"type":"e2ee","to":"p1","payload":{"a":1}}`,
		`{"type":"e2ee","payload": { "a" : [1, 2, "<&>"] } }`,
		`{"payload":"x\u2028\"y","type":"e2ee"}`,
		"{\"type\":\"e2ee\",\"payload\":\n7\n}",
		`{"type":"e2ee","payload":null}`,
	} {
		m, err := DecodeMessage([]byte(in))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		got := relayedE2EE("AbC-_9", m.Payload)
		want, _ := json.Marshal(Message{Type: TypeE2EE, From: "AbC-_9", Payload: m.Payload})
		var g, w map[string]any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("%s: relayed %s is not JSON: %v", in, got, err)
		}
		json.Unmarshal(want, &w)
		if !reflect.DeepEqual(g, w) || len(g) != 3 {
			t.Errorf("%s: relayed %s, json.Marshal %s", in, got, want)
		}
		// Byte for byte json.Marshal's, but for its escaping of <, > and &.
		if w := strings.NewReplacer(`\u003c`, "<", `\u003e`, ">", `\u0026`, "&").Replace(string(want)); string(got) != w {
			t.Errorf("%s: relayed %s, want %s", in, got, w)
		}
	}
}

// A pooled decoder gives the same results as a new one, whatever it
// decoded before (a failure, trailing data, spaces, a large message).
func TestDecoderReuse(t *testing.T) {
	inputs := []string{
		`{"type":"e2ee","payload":{"a":1}}   `,
		`{"type":"e2ee","payload":{"a":1}} {}`,
		`{"type":"e2ee","payload":{"a":`,
		`{"type":"e2ee","bogus":1,"payload":{}}`,
		`{"type":"offer","to":"p1","sdp":"` + strings.Repeat("v", 5000) + `"}`,
		` {"type":"candidate","to":"p1","candidate":null}`,
		`{"type":"leave"}`,
		`[]`,
	}
	want := make([]string, len(inputs))
	for i, in := range inputs {
		want[i] = fresh(in)
	}
	for round := range 3 {
		for i, in := range inputs {
			m, err := DecodeMessage([]byte(in))
			got := fmt.Sprint(m, err)
			if got != want[i] {
				t.Errorf("round %d, %.40q: got %.200s, want %.200s", round, in, got, want[i])
			}
		}
	}
}

// fresh decodes s as DecodeMessage did before decoders were pooled.
func fresh(s string) string {
	var m Message
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return fmt.Sprint(nil, protoErr(CodeBadMessage, "Message is not a valid JSON object of this protocol: "+clip(err.Error(), 200), ErrBadMessage))
	}
	if dec.More() {
		return fmt.Sprint(nil, protoErr(CodeBadMessage, "Only one JSON object per message.", ErrBadMessage))
	}
	if err := checkMessage(&m); err != nil {
		return fmt.Sprint(nil, err)
	}
	return fmt.Sprint(&m, nil)
}
