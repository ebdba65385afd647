package e2ee

// Go <-> browser interoperability of SFrame frames. The browser half is
// tests/browser/e2ee-vectors.test.mjs, which drives these tests:
//
//	PARLEY_INTEROP_OUT=<file> go test ./e2ee/ -run '^TestInteropWrite$' -count=1
//	    writes frames sealed here; the page opens them with SFrameReceiver.
//	PARLEY_INTEROP_IN=<file> go test ./e2ee/ -run '^TestInteropRead$' -count=1 -v
//	    opens frames sealed in the page with SFrameSender / SFrameKey.sealAt
//	    and logs "interop: opened N frames, rejected N tampered".
//
// Without the variables TestInteropWrite still builds its frames and checks
// that they open here (and that tampered copies do not), and
// TestInteropRead skips.
//
// Both directions use one file format: {"source", "frames": [...]}, one
// interopFrame per frame. KID and CTR are decimal strings, so counters
// beyond 2^53 stay exact in JavaScript.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"
)

type interopFrame struct {
	Name       string `json:"name"`
	Suite      uint16 `json:"suite"`
	Index      uint16 `json:"index"`
	Generation uint16 `json:"generation"`
	Step       uint8  `json:"step"`
	KID        uint64 `json:"kid,string"` // MakeKID(index, generation, step)
	CTR        uint64 `json:"ctr,string"`
	// ParentKey, if set, is the base key one ratchet step earlier:
	// BaseKey = Ratchet(suite, ParentKey).
	ParentKey string `json:"parent_key,omitempty"`
	BaseKey   string `json:"base_key"`
	Metadata  string `json:"metadata"`
	Plaintext string `json:"plaintext"`
	Sealed    string `json:"sealed"` // header || ciphertext || tag
}

type interopFile struct {
	Source string         `json:"source"`
	Frames []interopFrame `json:"frames"`
}

// interopBytes returns n deterministic pseudo-random bytes named by label
// (SHA-256 in counter mode), so the frames written are the same every run.
func interopBytes(label string, n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	for i := uint32(0); len(out) < n; i++ {
		h := sha256.New()
		h.Write([]byte(label))
		h.Write(binary.BigEndian.AppendUint32(nil, i))
		out = h.Sum(out)
	}
	return out[:n]
}

// interopMetadata is a non-empty metadata in Parley's style: a label, the
// media kind and stream, and a few bytes standing for a clear codec prefix.
func interopMetadata(kind, stream byte, prefixLen int) []byte {
	md := append([]byte("parley/1 media"), kind, stream)
	return append(md, interopBytes(fmt.Sprintf("prefix %d %d", kind, stream), prefixLen)...)
}

// interopFlip returns a copy of sealed with one bit flipped after the
// header (in the ciphertext or the tag), chosen by i. The browser test flips
// the same way.
func interopFlip(sealed []byte, hlen, i int) []byte {
	bad := bytes.Clone(sealed)
	pos := hlen + (i*131+7)%(len(sealed)-hlen)
	bad[pos] ^= 1 << (i % 8)
	return bad
}

// interopGoFrames seals the frames TestInteropWrite hands to the browser:
// for suites 0x0004 and 0x0005, three Parley KIDs (step 0 and, under its
// ratcheted key, step 1 of one generation, and a KID small enough for the
// config byte), each with six frames from a fresh Sender (counters 0-5;
// payloads of 1, 100 and 1200 bytes, each with empty and non-empty
// metadata) and three at the counters a long-lived sender reaches: 2^40,
// 2^40+1 and MaxCounter.
func interopGoFrames(t *testing.T) []interopFrame {
	t.Helper()
	var frames []interopFrame
	for _, suite := range []Suite{AES_128_GCM_SHA256_128, AES_256_GCM_SHA512_128} {
		root := interopBytes(fmt.Sprintf("go root key %d", suite), 32)
		step1, err := Ratchet(suite, root)
		if err != nil {
			t.Fatal(err)
		}
		specs := []struct {
			index, gen  uint16
			step        uint8
			key, parent []byte
		}{
			{0x1234, 7, 0, root, nil},
			{0x1234, 7, 1, step1, root},
			{0, 0, 5, interopBytes(fmt.Sprintf("go small kid key %d", suite), 32), nil},
		}
		for _, sp := range specs {
			kid := MakeKID(sp.index, sp.gen, sp.step)
			s, err := NewSender(suite, kid, sp.key)
			if err != nil {
				t.Fatal(err)
			}
			add := func(ctr uint64, md, pt, sealed []byte) {
				f := interopFrame{
					Name:  fmt.Sprintf("go suite %d kid %#x ctr %d pt %d md %d", suite, kid, ctr, len(pt), len(md)),
					Suite: uint16(suite), Index: sp.index, Generation: sp.gen, Step: sp.step,
					KID: kid, CTR: ctr, BaseKey: hex.EncodeToString(sp.key),
					Metadata: hex.EncodeToString(md), Plaintext: hex.EncodeToString(pt), Sealed: hex.EncodeToString(sealed),
				}
				if sp.parent != nil {
					f.ParentKey = hex.EncodeToString(sp.parent)
				}
				frames = append(frames, f)
			}
			for _, size := range []int{1, 100, 1200} {
				for _, withMD := range []bool{false, true} {
					var md []byte
					if withMD {
						md = interopMetadata(byte(size%3), sp.step, size%7)
					}
					ctr := s.Counter()
					pt := interopBytes(fmt.Sprintf("go pt %d %d %d", suite, kid, ctr), size)
					sealed, err := s.Seal(nil, md, pt)
					if err != nil {
						t.Fatal(err)
					}
					add(ctr, md, pt, sealed)
				}
			}
			if got := s.Counter(); got != 6 {
				t.Fatalf("Sender.Counter after 6 seals = %d, want 6", got)
			}
			// A Sender cannot be started at a given counter (by design), and
			// 2^40 seals are out of reach; sealAt is Seal after the counter
			// reservation, which is what a sender that got that far runs.
			for j, ctr := range []uint64{1 << 40, 1<<40 + 1, MaxCounter} {
				size := []int{1200, 1, 100}[j]
				var md []byte
				if j != 1 {
					md = interopMetadata(1, byte(j), 3)
				}
				pt := interopBytes(fmt.Sprintf("go pt %d %d %d", suite, kid, ctr), size)
				add(ctr, md, pt, s.sealAt(nil, ctr, md, pt))
			}
		}
	}
	return frames
}

func interopHex(t *testing.T, f interopFrame, field, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("%s: %s is not hex: %v", f.Name, field, err)
	}
	return b
}

// interopOpenAll opens every frame with a Go Receiver (one per suite, keys
// added as KIDs appear; frames of one KID come in counter order). Before
// each frame it offers a copy with one bit flipped and one under altered
// metadata, which must fail with ErrAuth without moving the replay window;
// after it, a replay must fail with ErrReplay. It checks the declared KID
// and counter against MakeKID and the header, and ParentKey against
// Ratchet. It returns the number of frames opened and of forgeries
// rejected.
func interopOpenAll(t *testing.T, frames []interopFrame) (opened, rejected int) {
	t.Helper()
	receivers := map[Suite]*Receiver{}
	for i, f := range frames {
		suite := Suite(f.Suite)
		if kid := MakeKID(f.Index, f.Generation, f.Step); kid != f.KID {
			t.Errorf("%s: kid %#x, want MakeKID(%d, %d, %d) = %#x", f.Name, f.KID, f.Index, f.Generation, f.Step, kid)
			continue
		}
		key := interopHex(t, f, "base_key", f.BaseKey)
		if f.ParentKey != "" {
			next, err := Ratchet(suite, interopHex(t, f, "parent_key", f.ParentKey))
			if err != nil || !bytes.Equal(next, key) {
				t.Errorf("%s: Ratchet(parent_key) = %x, %v; want base_key %x", f.Name, next, err, key)
				continue
			}
		}
		md := interopHex(t, f, "metadata", f.Metadata)
		pt := interopHex(t, f, "plaintext", f.Plaintext)
		sealed := interopHex(t, f, "sealed", f.Sealed)

		kid, ctr, hlen, err := ParseHeader(sealed)
		if err != nil || kid != f.KID || ctr != f.CTR {
			t.Errorf("%s: header: kid %#x ctr %d err %v; want kid %#x ctr %d", f.Name, kid, ctr, err, f.KID, f.CTR)
			continue
		}
		if want := hlen + len(pt) + suite.Nt(); len(sealed) != want {
			t.Errorf("%s: sealed frame is %d bytes, want header %d + plaintext %d + tag %d", f.Name, len(sealed), hlen, len(pt), suite.Nt())
		}

		r := receivers[suite]
		if r == nil {
			if r, err = NewReceiver(suite); err != nil {
				t.Fatalf("%s: %v", f.Name, err)
			}
			receivers[suite] = r
		}
		if err := r.AddKey(f.KID, key); err != nil {
			t.Fatalf("%s: AddKey: %v", f.Name, err)
		}

		auth := r.Stats().Dropped.Auth
		if out, err := r.Open(nil, md, interopFlip(sealed, hlen, i)); !errors.Is(err, ErrAuth) || out != nil {
			t.Errorf("%s: frame with a flipped bit: Open = %x, %v; want ErrAuth", f.Name, out, err)
		} else {
			rejected++
		}
		otherMD := append(bytes.Clone(md), 0)
		if len(md) > 0 {
			otherMD = bytes.Clone(md)
			otherMD[i%len(md)] ^= 0x80
		}
		if out, err := r.Open(nil, otherMD, sealed); !errors.Is(err, ErrAuth) || out != nil {
			t.Errorf("%s: altered metadata: Open = %x, %v; want ErrAuth", f.Name, out, err)
		}
		if got := r.Stats().Dropped.Auth; got != auth+2 {
			t.Errorf("%s: Stats.Dropped.Auth went %d -> %d, want +2", f.Name, auth, got)
		}

		got, err := r.Open(nil, md, sealed)
		if err != nil || !bytes.Equal(got, pt) {
			t.Errorf("%s: Open = %x, %v; want %x", f.Name, got, err, pt)
			continue
		}
		opened++
		if _, err := r.Open(nil, md, sealed); !errors.Is(err, ErrReplay) {
			t.Errorf("%s: replay: Open error %v, want ErrReplay", f.Name, err)
		}
	}
	return opened, rejected
}

// TestInteropWrite seals the Go -> browser frames, checks that they open
// here, and writes them to $PARLEY_INTEROP_OUT if it is set.
func TestInteropWrite(t *testing.T) {
	frames := interopGoFrames(t)
	opened, rejected := interopOpenAll(t, frames)
	if opened != len(frames) || rejected != len(frames) {
		t.Fatalf("opened %d and rejected %d tampered of %d frames", opened, rejected, len(frames))
	}
	path := os.Getenv("PARLEY_INTEROP_OUT")
	if path == "" {
		t.Logf("%d frames open in Go; set PARLEY_INTEROP_OUT=<file> to write them for the browser", len(frames))
		return
	}
	b, err := json.MarshalIndent(interopFile{
		Source: "SFrame frames sealed by Go (e2ee/interop_test.go TestInteropWrite)",
		Frames: frames,
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("interop: wrote %d frames to %s", len(frames), path)
}

// TestInteropRead opens the frames in $PARLEY_INTEROP_IN (sealed in the
// browser by tests/browser/e2ee-vectors.test.mjs) with a Go Receiver.
func TestInteropRead(t *testing.T) {
	path := os.Getenv("PARLEY_INTEROP_IN")
	if path == "" {
		t.Skip("set PARLEY_INTEROP_IN=<file> (written by tests/browser/e2ee-vectors.test.mjs) to open frames sealed in the browser")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var file interopFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(file.Frames) == 0 {
		t.Fatalf("%s has no frames", path)
	}
	opened, rejected := interopOpenAll(t, file.Frames)
	t.Logf("interop: opened %d frames, rejected %d tampered", opened, rejected)
	if opened != len(file.Frames) || rejected != len(file.Frames) {
		t.Fatalf("opened %d and rejected %d tampered of %d frames", opened, rejected, len(file.Frames))
	}
}
