package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/pion/rtp"

	"github.com/parleyhq/parley/e2ee"
)

func testInspector(bodyBytes int) *inspector {
	return &inspector{bodyBytes: bodyBytes, out: bufio.NewWriter(io.Discard), counts: map[string]int{}, peers: map[string]*peer{}, done: make(chan struct{})}
}

// seal builds a wire frame as e2ee/worker.js does: clear prefix || SFrame.
func seal(t *testing.T, s *e2ee.Sender, kind string, frame []byte) []byte {
	t.Helper()
	n := 0
	if kind == "video" {
		n = vp8Clear
		if frame[0]&1 == 0 {
			n = vp8KeyClear
		}
	}
	ct, err := s.Seal(nil, metadata(kind, frame[:n]), frame[n:])
	if err != nil {
		t.Fatal(err)
	}
	return append(append([]byte{}, frame[:n]...), ct...)
}

func TestInspectSealedFrames(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	kid := e2ee.MakeKID(0xabcd, 3, 2)
	s, err := e2ee.NewSender(suite, kid, key)
	if err != nil {
		t.Fatal(err)
	}
	keyFrame := append([]byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01}, bytes.Repeat([]byte{1}, 100)...)
	delta := append([]byte{0x31, 0x02, 0x00}, bytes.Repeat([]byte{2}, 50)...)
	audio := bytes.Repeat([]byte{3}, 40)
	ins := testInspector(-1)
	for i, c := range []struct {
		kind   string
		frame  []byte
		prefix int
		key    bool
	}{{"video", keyFrame, 10, true}, {"video", delta, 3, false}, {"audio", audio, 0, false}} {
		wire := seal(t, s, c.kind, c.frame)
		rec := frameRec{Kind: c.kind}
		ins.inspect(&rec, wire)
		if !rec.SFrame || rec.Prefix != c.prefix || rec.KeyFrame != c.key || rec.KID != kid || rec.CTR != uint64(i) ||
			rec.Index != 0xabcd || rec.Gen != 3 || rec.Step != 2 || rec.BodyCut || rec.BodyLen != len(c.frame)-c.prefix+suite.Nt() {
			t.Errorf("%d: %+v", i, rec)
		}
		// The recorded parts reassemble to a frame that opens.
		prefix, _ := hex.DecodeString(rec.PrefixHex)
		sf, _ := hex.DecodeString(rec.HdrHex + rec.Body)
		if _, err := tryOpen(kid, key, c.kind, prefix, sf); err != nil {
			t.Errorf("%d: open: %v", i, err)
		}
		// Wrong kind: the metadata differs, so it must not open.
		other := map[string]string{"audio": "video", "video": "audio"}[c.kind]
		if _, err := tryOpen(kid, key, other, prefix, sf); err == nil {
			t.Errorf("%d: opened as %s", i, other)
		}
	}
}

func TestInspectOddInput(t *testing.T) {
	ins := testInspector(8)
	inputs := [][]byte{nil, {}, {0}, {1}, {0xff}, {0x10, 0x02}, bytes.Repeat([]byte{0xff}, 30), bytes.Repeat([]byte{0x88}, 20), []byte("plain text, not sframe at all")}
	for _, in := range inputs {
		for _, kind := range []string{"audio", "video", ""} {
			rec := frameRec{Kind: kind}
			ins.inspect(&rec, in)
			if rec.SFrame && len(in) < 17 {
				t.Errorf("%x as %s: SFrame with no room for a tag", in, kind)
			}
		}
	}
}

func FuzzInspect(f *testing.F) {
	f.Add([]byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0, 0, 0, 0, 0x9c, 0x12, 0x34, 0x56, 0x78, 0x01}, true)
	f.Add([]byte{0xff, 0xff}, false)
	ins := testInspector(4)
	f.Fuzz(func(t *testing.T, data []byte, video bool) {
		rec := frameRec{Kind: "audio"}
		if video {
			rec.Kind = "video"
		}
		ins.inspect(&rec, data)
		if rec.Prefix+rec.HdrLen+rec.BodyLen != len(data) && rec.SFrame {
			t.Fatalf("lengths: %+v", rec)
		}
	})
}

// vp8 makes an RTP packet with a one-byte VP8 payload descriptor.
func vp8(seq uint16, ts uint32, start, marker bool, payload ...byte) *rtp.Packet {
	d := byte(0)
	if start {
		d = 0x10
	}
	return &rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Timestamp: ts, Marker: marker}, Payload: append([]byte{d}, payload...)}
}

func TestAssembler(t *testing.T) {
	a := newAssembler()
	var ext seqExtender
	var got []assembled
	push := func(p *rtp.Packet) { got = append(got, a.push(p, ext.extend(p.SequenceNumber))...) }
	// Frame 1 in order, frame 2 reordered with a duplicate, across the seq wrap.
	push(vp8(65534, 100, true, false, 1, 2))
	push(vp8(65535, 100, false, true, 3))
	push(vp8(1, 200, false, true, 6))
	push(vp8(0, 200, true, false, 4, 5))
	push(vp8(0, 200, true, false, 4, 5))  // late duplicate
	push(vp8(65535, 100, false, true, 3)) // late duplicate of an emitted frame
	if len(got) != 2 || !bytes.Equal(got[0].data, []byte{1, 2, 3}) || !bytes.Equal(got[1].data, []byte{4, 5, 6}) || !got[0].complete || !got[1].complete {
		t.Fatalf("got %+v", got)
	}
	if got[1].firstSeq != got[0].firstSeq+2 {
		t.Errorf("extended seqs %d, %d", got[0].firstSeq, got[1].firstSeq)
	}
	// A frame that loses its middle packet is given up as incomplete.
	got = nil
	push(vp8(2, 300, true, false, 7))
	push(vp8(4, 300, false, true, 9))
	for i := uint16(5); i < 400; i++ {
		push(vp8(i, 400+uint32(i), true, true, byte(i)))
	}
	var incomplete int
	for _, f := range got {
		if !f.complete {
			incomplete++
			if f.ts != 300 || f.packets != 2 {
				t.Errorf("incomplete frame %+v", f)
			}
		}
	}
	if incomplete != 1 || len(got) != 396 {
		t.Errorf("%d frames, %d incomplete", len(got), incomplete)
	}
	// Garbage packets do not panic.
	for _, p := range []*rtp.Packet{{}, {Payload: []byte{0x80}}, {Payload: []byte{0x90, 0x80}}, {Payload: []byte{0x90, 0x80, 0x80}}} {
		a.push(p, ext.extend(p.SequenceNumber))
	}
}

func TestRunOpen(t *testing.T) {
	key := bytes.Repeat([]byte{9}, 32)
	kid := e2ee.MakeKID(1, 1, 0)
	s, _ := e2ee.NewSender(suite, kid, key)
	wire := seal(t, s, "audio", []byte("hello audio frame"))
	next, _ := e2ee.Ratchet(suite, key)
	s2, _ := e2ee.NewSender(suite, kid+1, next)
	wire2 := seal(t, s2, "audio", []byte("after a ratchet"))
	req := map[string]any{
		"keys":    []map[string]any{{"kid": kid, "key": hex.EncodeToString(key)}, {"kid": "257", "key": hex.EncodeToString(bytes.Repeat([]byte{1}, 32))}},
		"frames":  []map[string]string{{"kind": "audio", "sframe": hex.EncodeToString(wire)}, {"kind": "audio", "sframe": hex.EncodeToString(wire2)}},
		"ratchet": 1,
	}
	in, _ := json.Marshal(req)
	var out bytes.Buffer
	if err := runOpen(bytes.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	var res struct{ Results []openResult }
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	ok := map[string]bool{}
	for _, r := range res.Results {
		ok[string(rune('0'+r.Frame))+string(rune('0'+r.Key))+r.Mode] = r.OK
	}
	want := map[string]bool{
		"00as-is": true, "00forced": true, "00ratchet-1": false,
		"01as-is": false, "01forced": false, "01ratchet-1": false,
		"10as-is": false, "10forced": false, "10ratchet-1": true,
		"11as-is": false, "11forced": false, "11ratchet-1": false,
	}
	for k, v := range want {
		if ok[k] != v {
			t.Errorf("%s: ok=%v, want %v (%s)", k, ok[k], v, out.String())
		}
	}
	for _, bad := range []string{"", "{", `{"frames":[{"sframe":"zz"}]}`, `{"keys":[{"kid":"x"}]}`, `{"ratchet":-1}`} {
		if err := runOpen(strings.NewReader(bad), io.Discard); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
