// Command inspector is Parley's wire inspector, a test tool. It joins a
// Parley room over the real signaling WebSocket as one more participant, like
// a browser but without keys: it takes part in no key agreement, receives
// everyone's media with recvonly transceivers (pion/webrtc), reassembles the
// RTP into frames and records, for each frame, what an eavesdropper on the
// media path sees: the clear prefix, the SFrame header (KID, CTR) and the
// ciphertext after it.
//
// Record mode (default):
//
//	inspector -url http://127.0.0.1:8080 -room <id> -name Inspector -duration 10s -out frames.jsonl
//
// writes one JSON object per line: {"type":"event",...} for welcome, peers,
// tracks and connection states, and {"type":"frame",...} per frame (see
// frameRec). It sends PLIs to every video sender so key frames keep coming,
// and leaves the room by itself after -duration.
//
// With -token it sends the room's join token (docs/security.md §2.5), and
// with -bridge it takes part in the end-to-end key agreement through its
// standard input and output, which inspector.mjs connects to e2ee/keys.js
// running in Node: pages connect only to peers whose keys they confirmed
// (§3.4), so a keyless listener would get no media at all. Bridge lines,
// one JSON object each:
//
//	out: {"type":"welcome","id":..,"peers":[..]}  {"type":"e2ee","from":..,"payload":..}  {"type":"peer-left","id":..}
//	in:  {"type":"e2ee","to":..,"payload":..}      {"type":"call","id":..}  (offer to a confirmed peer)
//
// The keys it is given are not used: it records ciphertext as before.
//
// Open mode:
//
//	inspector -open < request.json
//
// tries to decrypt frames with given keys, using this module's e2ee package
// (the Go SFrame implementation) and Parley's media metadata, and prints the
// results as JSON. See openRequest.
package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"

	"github.com/parleyhq/parley/e2ee"
)

// Parley's media SFrame suite and metadata label (e2ee/worker.js).
const (
	suite       = e2ee.AES_128_GCM_SHA256_128
	mediaLabel  = "parley/1 media"
	vp8KeyClear = 10 // VP8 key frame: frame tag, start code, size
	vp8Clear    = 3  // VP8 interframe: frame tag
)

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("inspector: ")
	var (
		base      = flag.String("url", "", "Parley's http(s) base URL, e.g. http://127.0.0.1:8080")
		room      = flag.String("room", "", "room id")
		name      = flag.String("name", "Inspector", "display name in the room")
		duration  = flag.Duration("duration", 10*time.Second, "how long to stay in the room")
		out       = flag.String("out", "", "JSON lines output file (default stdout)")
		bodyBytes = flag.Int("body-bytes", 64, "how many bytes of each frame's body (after prefix and SFrame header) to record in hex; -1 records every byte")
		pli       = flag.Duration("pli", time.Second, "interval of the PLIs sent to every video sender")
		openMode  = flag.Bool("open", false, "decrypt mode: read an open request (JSON) on stdin, print results")
		token     = flag.String("token", "", "the room's join token (b64url)")
		bridge    = flag.Bool("bridge", false, "take part in the key agreement over stdin/stdout (see the package doc)")
	)
	flag.Parse()
	if *openMode {
		if err := runOpen(os.Stdin, os.Stdout); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *base == "" || *room == "" {
		fmt.Fprintln(os.Stderr, "usage: inspector -url http://host:port -room ID [-name N] [-duration 10s] [-out file.jsonl]")
		os.Exit(2)
	}
	w := os.Stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		w = f
	}
	ins := &inspector{
		base: *base, room: *room, name: *name, token: *token, bridge: *bridge, bodyBytes: *bodyBytes, pliEvery: *pli,
		out: bufio.NewWriterSize(w, 1<<16), peers: map[string]*peer{}, counts: map[string]int{},
		done: make(chan struct{}),
	}
	code := ins.run(*duration)
	os.Exit(code)
}

// ---------------------------------------------------------------------------
// Signaling

// message is the subset of signaling.Message the inspector sends and reads.
type message struct {
	Type       string          `json:"type"`
	Version    int             `json:"version,omitempty"`
	Room       string          `json:"room,omitempty"`
	Name       string          `json:"name,omitempty"`
	Token      string          `json:"token,omitempty"`
	ID         string          `json:"id,omitempty"`
	Peers      []peerInfo      `json:"peers,omitempty"`
	ICEServers []iceServer     `json:"iceServers,omitempty"`
	Peer       *peerInfo       `json:"peer,omitempty"`
	To         string          `json:"to,omitempty"`
	From       string          `json:"from,omitempty"`
	SDP        string          `json:"sdp,omitempty"`
	Candidate  json.RawMessage `json:"candidate,omitempty"`
	Payload    json.RawMessage `json:"payload,omitempty"`
	Reason     string          `json:"reason,omitempty"`
	Code       string          `json:"code,omitempty"`
	Message    string          `json:"message,omitempty"`
}

type peerInfo struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type iceServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

type inspector struct {
	base, room, name string
	token            string
	bridge           bool
	bridgeMu         sync.Mutex // serialises bridge lines on stdout
	bodyBytes        int
	pliEvery         time.Duration

	ws   *websocket.Conn
	wsMu sync.Mutex
	api  *webrtc.API
	ice  []webrtc.ICEServer
	myID string

	mu     sync.Mutex // guards peers, counts, closed
	peers  map[string]*peer
	counts map[string]int
	closed bool

	outMu sync.Mutex
	out   *bufio.Writer

	done     chan struct{}
	doneOnce sync.Once
}

type peer struct {
	id, name string
	pc       *webrtc.PeerConnection
	mu       sync.Mutex // serialises negotiation on pc
	pending  []webrtc.ICECandidateInit
}

func (ins *inspector) run(d time.Duration) int {
	if err := ins.setupAPI(); err != nil {
		log.Print(err)
		return 1
	}
	if err := ins.connect(); err != nil {
		log.Print(err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	readErr := make(chan error, 1)
	go func() { readErr <- ins.readLoop() }()
	timer := time.NewTimer(d)
	code := 0
	select {
	case <-timer.C:
	case s := <-sig:
		log.Printf("got %v, leaving", s)
	case err := <-readErr:
		log.Printf("signaling ended: %v", err)
		code = 1
	}
	ins.shutdown()
	return code
}

func (ins *inspector) setupAPI() error {
	m := &webrtc.MediaEngine{}
	fb := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}}
	for _, c := range []struct {
		p webrtc.RTPCodecParameters
		k webrtc.RTPCodecType
	}{
		{webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111}, webrtc.RTPCodecTypeAudio},
		{webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: fb}, PayloadType: 96}, webrtc.RTPCodecTypeVideo},
		{webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeRTX, ClockRate: 90000, SDPFmtpLine: "apt=96"}, PayloadType: 97}, webrtc.RTPCodecTypeVideo},
	} {
		if err := m.RegisterCodec(c.p, c.k); err != nil {
			return err
		}
	}
	reg := &interceptor.Registry{}
	if err := webrtc.ConfigureNack(m, reg); err != nil {
		return err
	}
	if err := webrtc.ConfigureRTCPReports(reg); err != nil {
		return err
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeTCP4})
	ins.api = webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	return nil
}

func (ins *inspector) connect() error {
	u, err := url.Parse(ins.base)
	if err != nil {
		return fmt.Errorf("bad -url: %w", err)
	}
	scheme := "ws"
	if u.Scheme == "https" {
		scheme = "wss"
	}
	wsURL := scheme + "://" + u.Host + "/ws"
	h := http.Header{}
	h.Set("Origin", u.Scheme+"://"+u.Host)
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.Dial(wsURL, h)
	if err != nil {
		return fmt.Errorf("websocket %s: %w", wsURL, err)
	}
	ins.ws = ws
	ws.SetReadLimit(1 << 20)
	if err := ins.send(message{Type: "join", Version: 1, Room: ins.room, Name: ins.name, Token: ins.token}); err != nil {
		return err
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var wm message
	if err := ws.ReadJSON(&wm); err != nil {
		return fmt.Errorf("waiting for welcome: %w", err)
	}
	ws.SetReadDeadline(time.Time{})
	if wm.Type != "welcome" {
		return fmt.Errorf("join refused: %s %s: %s", wm.Type, wm.Code, wm.Message)
	}
	ins.myID = wm.ID
	for _, s := range wm.ICEServers {
		ins.ice = append(ins.ice, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	ins.event(map[string]any{"event": "welcome", "id": wm.ID, "peers": wm.Peers, "iceServers": len(wm.ICEServers)})
	if ins.bridge {
		// Calls wait for the key agreement: "call" lines on stdin.
		for _, p := range wm.Peers {
			ins.rememberName(p.ID, p.Name)
		}
		ins.toBridge(map[string]any{"type": "welcome", "id": wm.ID, "peers": wm.Peers})
		go ins.fromBridge()
		return nil
	}
	for _, p := range wm.Peers {
		ins.offerTo(p.ID, p.Name)
	}
	return nil
}

// toBridge writes one bridge line on stdout.
func (ins *inspector) toBridge(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	ins.bridgeMu.Lock()
	defer ins.bridgeMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

// fromBridge reads bridge lines from stdin until it closes.
func (ins *inspector) fromBridge() {
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		var m struct {
			Type    string          `json:"type"`
			To      string          `json:"to"`
			ID      string          `json:"id"`
			Payload json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			log.Printf("bad bridge line: %v", err)
			continue
		}
		switch m.Type {
		case "e2ee":
			_ = ins.send(message{Type: "e2ee", To: m.To, Payload: m.Payload})
		case "call":
			go ins.offerTo(m.ID, nameOf(m.ID))
		}
	}
}

func (ins *inspector) send(m message) error {
	ins.wsMu.Lock()
	defer ins.wsMu.Unlock()
	if ins.ws == nil {
		return errors.New("not connected")
	}
	ins.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return ins.ws.WriteJSON(m)
}

func (ins *inspector) readLoop() error {
	for {
		_, data, err := ins.ws.ReadMessage()
		if err != nil {
			return err
		}
		var m message
		if err := json.Unmarshal(data, &m); err != nil {
			log.Printf("ignoring undecodable signaling message: %v", err)
			continue
		}
		ins.handle(m)
	}
}

// handle deals with one signaling message; it never panics.
func (ins *inspector) handle(m message) {
	defer ins.recoverIn("signaling " + m.Type)
	switch m.Type {
	case "peer-joined":
		if m.Peer != nil {
			ins.event(map[string]any{"event": "peer-joined", "peer": m.Peer.ID, "name": m.Peer.Name})
			ins.rememberName(m.Peer.ID, m.Peer.Name)
		}
	case "peer-left":
		ins.event(map[string]any{"event": "peer-left", "peer": m.ID, "reason": m.Reason})
		if ins.bridge {
			ins.toBridge(map[string]any{"type": "peer-left", "id": m.ID})
		}
		ins.mu.Lock()
		p := ins.peers[m.ID]
		delete(ins.peers, m.ID)
		ins.mu.Unlock()
		if p != nil {
			go p.pc.Close()
		}
	case "offer":
		ins.onOffer(m)
	case "answer":
		ins.onAnswer(m)
	case "candidate":
		ins.onCandidate(m)
	case "e2ee":
		if ins.bridge {
			ins.toBridge(map[string]any{"type": "e2ee", "from": m.From, "payload": m.Payload})
			ins.event(map[string]any{"event": "e2ee-bridged", "from": m.From})
		} else {
			ins.event(map[string]any{"event": "e2ee-ignored", "from": m.From})
		}
	case "error":
		ins.event(map[string]any{"event": "error", "code": m.Code, "message": m.Message})
	}
}

var names sync.Map // peer id → display name, from welcome and peer-joined

func (ins *inspector) rememberName(id, name string) { names.Store(id, name) }

func nameOf(id string) string {
	if v, ok := names.Load(id); ok {
		return v.(string)
	}
	return ""
}

func (ins *inspector) newPeer(id, name string) (*peer, error) {
	ins.mu.Lock()
	defer ins.mu.Unlock()
	if ins.closed {
		return nil, errors.New("shutting down")
	}
	if p := ins.peers[id]; p != nil {
		return p, nil
	}
	pc, err := ins.api.NewPeerConnection(webrtc.Configuration{ICEServers: ins.ice, BundlePolicy: webrtc.BundlePolicyMaxBundle})
	if err != nil {
		return nil, err
	}
	p := &peer{id: id, name: name, pc: pc}
	ins.peers[id] = p
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			return
		}
		raw, err := json.Marshal(c.ToJSON())
		if err == nil {
			_ = ins.send(message{Type: "candidate", To: id, Candidate: raw})
		}
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		ins.event(map[string]any{"event": "state", "peer": id, "state": s.String()})
	})
	pc.OnTrack(func(t *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
		go ins.readTrack(p, t, r)
	})
	return p, nil
}

// offerTo calls a participant already in the room (we are the newcomer).
func (ins *inspector) offerTo(id, name string) {
	defer ins.recoverIn("offer to " + id)
	ins.rememberName(id, name)
	p, err := ins.newPeer(id, name)
	if err != nil {
		log.Printf("peer %s: %v", id, err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if _, err := p.pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			log.Printf("peer %s: transceiver: %v", id, err)
			return
		}
	}
	offer, err := p.pc.CreateOffer(nil)
	if err == nil {
		err = p.pc.SetLocalDescription(offer)
	}
	if err != nil {
		log.Printf("peer %s: offer: %v", id, err)
		return
	}
	_ = ins.send(message{Type: "offer", To: id, SDP: p.pc.LocalDescription().SDP})
}

func (ins *inspector) onOffer(m message) {
	p, err := ins.newPeer(m.From, nameOf(m.From))
	if err != nil {
		log.Printf("offer from %s: %v", m.From, err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.pc
	if pc.SignalingState() == webrtc.SignalingStateHaveLocalOffer {
		// Glare: we are always the polite side.
		if err := pc.SetLocalDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeRollback}); err != nil {
			log.Printf("offer from %s: rollback: %v", m.From, err)
		}
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: m.SDP}); err != nil {
		log.Printf("offer from %s: %v", m.From, err)
		return
	}
	// pion made a recvonly transceiver for each m-line; we send nothing.
	ins.flushCandidates(p)
	answer, err := pc.CreateAnswer(nil)
	if err == nil {
		err = pc.SetLocalDescription(answer)
	}
	if err != nil {
		log.Printf("answer to %s: %v", m.From, err)
		return
	}
	_ = ins.send(message{Type: "answer", To: m.From, SDP: pc.LocalDescription().SDP})
}

func (ins *inspector) onAnswer(m message) {
	ins.mu.Lock()
	p := ins.peers[m.From]
	ins.mu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pc.SignalingState() != webrtc.SignalingStateHaveLocalOffer {
		return
	}
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: m.SDP}); err != nil {
		log.Printf("answer from %s: %v", m.From, err)
		return
	}
	ins.flushCandidates(p)
}

func (ins *inspector) onCandidate(m message) {
	if len(m.Candidate) == 0 || string(m.Candidate) == "null" {
		return // end of candidates
	}
	var c webrtc.ICECandidateInit
	if err := json.Unmarshal(m.Candidate, &c); err != nil || c.Candidate == "" {
		return
	}
	ins.mu.Lock()
	p := ins.peers[m.From]
	ins.mu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pc.RemoteDescription() == nil {
		if len(p.pending) < 200 {
			p.pending = append(p.pending, c)
		}
		return
	}
	if err := p.pc.AddICECandidate(c); err != nil {
		log.Printf("candidate from %s: %v", m.From, err)
	}
}

// flushCandidates adds candidates that came before the remote description. p.mu is held.
func (ins *inspector) flushCandidates(p *peer) {
	for _, c := range p.pending {
		if err := p.pc.AddICECandidate(c); err != nil {
			log.Printf("candidate from %s: %v", p.id, err)
		}
	}
	p.pending = nil
}

func (ins *inspector) shutdown() {
	ins.doneOnce.Do(func() { close(ins.done) })
	_ = ins.send(message{Type: "leave"})
	ins.mu.Lock()
	ins.closed = true
	ps := make([]*peer, 0, len(ins.peers))
	for _, p := range ins.peers {
		ps = append(ps, p)
	}
	ins.mu.Unlock()
	for _, p := range ps {
		_ = p.pc.Close()
	}
	ins.wsMu.Lock()
	if ins.ws != nil {
		ins.ws.SetWriteDeadline(time.Now().Add(time.Second))
		_ = ins.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		_ = ins.ws.Close()
	}
	ins.wsMu.Unlock()
	ins.mu.Lock()
	keys := make([]string, 0, len(ins.counts))
	for k := range ins.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	summary := map[string]int{}
	for _, k := range keys {
		summary[k] = ins.counts[k]
	}
	ins.mu.Unlock()
	ins.event(map[string]any{"event": "end", "counts": summary})
	ins.outMu.Lock()
	_ = ins.out.Flush()
	ins.outMu.Unlock()
	for _, k := range keys {
		log.Printf("%s: %d", k, summary[k])
	}
}

func (ins *inspector) recoverIn(what string) {
	if r := recover(); r != nil {
		log.Printf("recovered from a panic in %s: %v\n%s", what, r, debug.Stack())
	}
}

// ---------------------------------------------------------------------------
// Output

func (ins *inspector) event(fields map[string]any) {
	fields["type"] = "event"
	fields["t"] = time.Now().UnixMilli()
	ins.writeLine(fields)
}

func (ins *inspector) writeLine(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		log.Printf("json: %v", err)
		return
	}
	ins.outMu.Lock()
	defer ins.outMu.Unlock()
	ins.out.Write(b)
	ins.out.WriteByte('\n')
	// Flushed per line: tests read the file while the inspector runs.
	_ = ins.out.Flush()
}

// frameRec is one reassembled media frame as seen on the wire.
type frameRec struct {
	Type      string `json:"type"` // "frame"
	T         int64  `json:"t"`    // Unix ms when the frame was complete
	Peer      string `json:"peer"` // sender's peer id
	Name      string `json:"name"` // sender's display name
	Kind      string `json:"kind"` // "audio" or "video"
	SSRC      uint32 `json:"ssrc"`
	TS        uint32 `json:"ts"`       // RTP timestamp
	Seq       uint64 `json:"seq"`      // extended RTP sequence number of the frame's first packet
	Packets   int    `json:"packets"`  // RTP packets in the frame
	Complete  bool   `json:"complete"` // every packet from start to marker arrived
	Size      int    `json:"size"`     // frame bytes (RTP payload, VP8 descriptors removed)
	Prefix    int    `json:"prefix"`   // inferred clear prefix length (worker.js rule)
	KeyFrame  bool   `json:"keyFrame"` // VP8 P bit is 0
	PrefixHex string `json:"prefixHex"`
	SFrame    bool   `json:"sframe"` // an SFrame header parses after the prefix, with a Parley KID and room for the tag
	Err       string `json:"err,omitempty"`
	HdrLen    int    `json:"hdrLen"`
	HdrHex    string `json:"hdrHex"`
	KID       uint64 `json:"kid"`
	KIDStr    string `json:"kidStr"`
	CTR       uint64 `json:"ctr"`
	Index     uint16 `json:"index"`
	Gen       uint16 `json:"gen"`
	Step      uint8  `json:"step"`
	BodyLen   int    `json:"bodyLen"` // bytes after prefix and header (ciphertext and tag)
	Body      string `json:"body"`    // hex of the body, cut to -body-bytes
	BodyCut   bool   `json:"bodyCut"` // Body is not the whole body
}

// inspect fills a frameRec from a frame's bytes. It never panics.
func (ins *inspector) inspect(rec *frameRec, data []byte) {
	rec.Type = "frame"
	rec.T = time.Now().UnixMilli()
	rec.Size = len(data)
	n := 0
	if rec.Kind == "video" && len(data) > 0 {
		rec.KeyFrame = data[0]&1 == 0
		n = vp8Clear
		if rec.KeyFrame {
			n = vp8KeyClear
		}
		n = min(n, len(data))
	}
	rec.Prefix = n
	rec.PrefixHex = hex.EncodeToString(data[:n])
	rest := data[n:]
	kid, ctr, hl, err := e2ee.ParseHeader(rest)
	switch {
	case err != nil:
		rec.Err = err.Error()
	case !e2ee.ParleyKID(kid):
		rec.Err = "KID has bits above 39"
	case len(rest)-hl < suite.Nt():
		rec.Err = "shorter than the AEAD tag"
	default:
		rec.SFrame = true
	}
	if err == nil {
		rec.HdrLen = hl
		rec.HdrHex = hex.EncodeToString(rest[:hl])
		rec.KID, rec.CTR = kid, ctr
		rec.KIDStr = strconv.FormatUint(kid, 10)
		rec.Index, rec.Gen, rec.Step = e2ee.SplitKID(kid)
		rest = rest[hl:]
	}
	rec.BodyLen = len(rest)
	cut := rest
	if ins.bodyBytes >= 0 && len(cut) > ins.bodyBytes {
		cut = cut[:ins.bodyBytes]
		rec.BodyCut = true
	}
	rec.Body = hex.EncodeToString(cut)
}

func (ins *inspector) emitFrame(rec *frameRec, data []byte) {
	defer ins.recoverIn("frame")
	ins.inspect(rec, data)
	ins.mu.Lock()
	key := rec.Peer + "/" + rec.Kind
	ins.counts[key]++
	if !rec.SFrame {
		ins.counts[key+"/not-sframe"]++
	}
	ins.mu.Unlock()
	ins.writeLine(rec)
}

// ---------------------------------------------------------------------------
// Media

func (ins *inspector) readTrack(p *peer, t *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
	defer ins.recoverIn("track")
	kind := t.Kind().String()
	ins.event(map[string]any{"event": "track", "peer": p.id, "kind": kind, "ssrc": uint32(t.SSRC()), "codec": t.Codec().MimeType})
	// Drain RTCP so interceptors keep working.
	go func() {
		defer ins.recoverIn("rtcp")
		buf := make([]byte, 1500)
		for {
			if _, _, err := r.Read(buf); err != nil {
				return
			}
		}
	}()
	if kind == "video" {
		go ins.sendPLIs(p, uint32(t.SSRC()))
	}
	asm := newAssembler()
	var ext seqExtender
	for {
		pkt, _, err := t.ReadRTP()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				log.Printf("track %s/%s: %v", p.id, kind, err)
			}
			return
		}
		select {
		case <-ins.done:
			return
		default:
		}
		seq := ext.extend(pkt.SequenceNumber)
		base := frameRec{Peer: p.id, Name: nameOf(p.id), Kind: kind, SSRC: pkt.SSRC, TS: pkt.Timestamp}
		if kind != "video" {
			// Opus: one packet is one frame.
			if len(pkt.Payload) == 0 {
				continue // padding-only
			}
			rec := base
			rec.Seq, rec.Packets, rec.Complete = seq, 1, true
			ins.emitFrame(&rec, pkt.Payload)
			continue
		}
		for _, f := range asm.push(pkt, seq) {
			rec := base
			rec.TS, rec.Seq, rec.Packets, rec.Complete = f.ts, f.firstSeq, f.packets, f.complete
			ins.emitFrame(&rec, f.data)
		}
	}
}

func (ins *inspector) sendPLIs(p *peer, ssrc uint32) {
	defer ins.recoverIn("pli")
	if ins.pliEvery <= 0 {
		return
	}
	tk := time.NewTicker(ins.pliEvery)
	defer tk.Stop()
	for {
		if err := p.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err != nil {
			if p.pc.ConnectionState() == webrtc.PeerConnectionStateClosed {
				return
			}
		}
		select {
		case <-ins.done:
			return
		case <-tk.C:
		}
	}
}

// seqExtender unwraps 16-bit RTP sequence numbers.
type seqExtender struct {
	started bool
	last    uint64
}

func (e *seqExtender) extend(s uint16) uint64 {
	if !e.started {
		e.started = true
		e.last = 1<<20 + uint64(s) // room below for reordering
		return e.last
	}
	cur := e.last &^ 0xffff
	cand := cur | uint64(s)
	// Pick the candidate closest to the last value.
	best := cand
	for _, c := range []uint64{cand - 0x10000, cand + 0x10000} {
		if absDiff(c, e.last) < absDiff(best, e.last) {
			best = c
		}
	}
	if best > e.last {
		e.last = best
	}
	return best
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

// assembler rebuilds VP8 frames from RTP packets: a frame is the packets of
// one RTP timestamp, from the one starting partition 0 (S=1, PID=0) to the
// one with the marker bit, with no sequence gap. Retransmissions and
// duplicates are tolerated; frames never completed are given up after a
// while and reported incomplete.
type assembler struct {
	frames map[uint32]*partial
	done   map[uint32]uint64 // timestamps already emitted → their last seq
}

type partial struct {
	ts         uint32
	pkts       map[uint64][]byte
	start, end uint64
	hasStart   bool
	hasEnd     bool
	minSeq     uint64
	created    time.Time
}

type assembled struct {
	ts       uint32
	firstSeq uint64
	packets  int
	complete bool
	data     []byte
}

func newAssembler() *assembler {
	return &assembler{frames: map[uint32]*partial{}, done: map[uint32]uint64{}}
}

func (a *assembler) push(pkt *rtp.Packet, seq uint64) []assembled {
	var out []assembled
	if _, ok := a.done[pkt.Timestamp]; ok {
		return nil // late duplicate of a frame already emitted
	}
	var vp codecs.VP8Packet
	payload, err := vp.Unmarshal(pkt.Payload)
	if err != nil || len(pkt.Payload) == 0 {
		return a.expire(seq)
	}
	f := a.frames[pkt.Timestamp]
	if f == nil {
		if len(a.frames) > 256 {
			// Pathological input: give everything up.
			out = append(out, a.expire(^uint64(0))...)
		}
		f = &partial{ts: pkt.Timestamp, pkts: map[uint64][]byte{}, minSeq: seq, created: time.Now()}
		a.frames[pkt.Timestamp] = f
	}
	if _, dup := f.pkts[seq]; !dup && len(f.pkts) < 4096 {
		f.pkts[seq] = append([]byte(nil), payload...)
	}
	f.minSeq = min(f.minSeq, seq)
	if vp.S == 1 && vp.PID == 0 {
		f.start, f.hasStart = seq, true
	}
	if pkt.Marker {
		f.end, f.hasEnd = seq, true
	}
	if f.hasStart && f.hasEnd && f.end >= f.start && f.end-f.start < 4096 {
		whole := true
		for s := f.start; s <= f.end; s++ {
			if _, ok := f.pkts[s]; !ok {
				whole = false
				break
			}
		}
		if whole {
			var data []byte
			for s := f.start; s <= f.end; s++ {
				data = append(data, f.pkts[s]...)
			}
			out = append(out, assembled{ts: f.ts, firstSeq: f.start, packets: int(f.end - f.start + 1), complete: true, data: data})
			a.finish(f)
		}
	}
	return append(out, a.expire(seq)...)
}

func (a *assembler) finish(f *partial) {
	delete(a.frames, f.ts)
	a.done[f.ts] = f.end
	if len(a.done) > 512 {
		// Forget the oldest half.
		type kv struct {
			ts  uint32
			seq uint64
		}
		all := make([]kv, 0, len(a.done))
		for ts, s := range a.done {
			all = append(all, kv{ts, s})
		}
		sort.Slice(all, func(i, j int) bool { return all[i].seq < all[j].seq })
		for _, x := range all[:len(all)/2] {
			delete(a.done, x.ts)
		}
	}
}

// expire gives up frames that are far behind seq or older than a second.
func (a *assembler) expire(seq uint64) []assembled {
	var out []assembled
	for _, f := range a.frames {
		if seq > f.minSeq && seq-f.minSeq > 300 || time.Since(f.created) > time.Second {
			seqs := make([]uint64, 0, len(f.pkts))
			for s := range f.pkts {
				seqs = append(seqs, s)
			}
			sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
			var data []byte
			for _, s := range seqs {
				data = append(data, f.pkts[s]...)
			}
			first := f.minSeq
			if f.hasStart {
				first = f.start
			}
			out = append(out, assembled{ts: f.ts, firstSeq: first, packets: len(seqs), complete: false, data: data})
			a.finish(f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].firstSeq < out[j].firstSeq })
	return out
}

// ---------------------------------------------------------------------------
// Open mode

// openRequest is read from stdin in -open mode. KIDs may be JSON numbers or
// decimal strings.
//
//	{"keys":   [{"kid": 123, "key": "<hex base key>", "label": "C's key for A"}],
//	 "frames": [{"kind": "video", "prefix": "<hex>", "sframe": "<hex: header, ciphertext, tag>", "label": "..."}],
//	 "ratchet": 3}
//
// For every frame and key it tries, each with a fresh Receiver:
//   - "as-is": the key installed under its own KID (what a receiver holding
//     that key would do);
//   - "forced": the key installed under the frame's KID, so the AEAD itself
//     is tried even when the KIDs differ;
//   - "ratchet-N": the key ratcheted N steps forward (RFC 9605 §5.1),
//     installed under the frame's KID, for N = 1..ratchet.
//
// The output is {"results": [{"frame", "key", "mode", "ok", "err", "plainLen"}]}.
type openRequest struct {
	Keys []struct {
		KID   kidValue `json:"kid"`
		Key   string   `json:"key"`
		Label string   `json:"label"`
	} `json:"keys"`
	Frames []struct {
		Kind   string `json:"kind"`
		Prefix string `json:"prefix"`
		SFrame string `json:"sframe"`
		Label  string `json:"label"`
	} `json:"frames"`
	Ratchet int `json:"ratchet"`
}

type openResult struct {
	Frame    int    `json:"frame"`
	Key      int    `json:"key"`
	Mode     string `json:"mode"`
	OK       bool   `json:"ok"`
	Err      string `json:"err,omitempty"`
	PlainLen int    `json:"plainLen,omitempty"`
	FrameKID uint64 `json:"frameKid"`
	KeyKID   uint64 `json:"keyKid"`
}

type kidValue uint64

func (k *kidValue) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("kid %s: %w", b, err)
	}
	*k = kidValue(v)
	return nil
}

// metadata is Parley's SFrame metadata: "parley/1 media" || kind || prefix.
func metadata(kind string, prefix []byte) []byte {
	m := append([]byte(mediaLabel), 0)
	if kind == "video" {
		m[len(m)-1] = 1
	}
	return append(m, prefix...)
}

func tryOpen(kid uint64, key []byte, kind string, prefix, frame []byte) (int, error) {
	rx, err := e2ee.NewReceiver(suite)
	if err != nil {
		return 0, err
	}
	if err := rx.AddKey(kid, key); err != nil {
		return 0, err
	}
	pt, err := rx.Open(nil, metadata(kind, prefix), frame)
	return len(pt), err
}

func runOpen(in io.Reader, out io.Writer) error {
	var req openRequest
	dec := json.NewDecoder(io.LimitReader(in, 256<<20))
	if err := dec.Decode(&req); err != nil {
		return fmt.Errorf("open request: %w", err)
	}
	if req.Ratchet < 0 || req.Ratchet > 255 {
		return errors.New("ratchet must be 0..255")
	}
	results := []openResult{}
	for fi, f := range req.Frames {
		prefix, err1 := hex.DecodeString(f.Prefix)
		frame, err2 := hex.DecodeString(f.SFrame)
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("frame %d: %w", fi, err)
		}
		fkid, _, _, herr := e2ee.ParseHeader(frame)
		for ki, k := range req.Keys {
			key, err := hex.DecodeString(k.Key)
			if err != nil {
				return fmt.Errorf("key %d: %w", ki, err)
			}
			add := func(mode string, n int, err error) {
				r := openResult{Frame: fi, Key: ki, Mode: mode, OK: err == nil, PlainLen: n, FrameKID: fkid, KeyKID: uint64(k.KID)}
				if err != nil {
					r.Err = err.Error()
				}
				results = append(results, r)
			}
			n, err := tryOpen(uint64(k.KID), key, f.Kind, prefix, frame)
			add("as-is", n, err)
			if herr != nil {
				continue
			}
			n, err = tryOpen(fkid, key, f.Kind, prefix, frame)
			add("forced", n, err)
			rk := key
			for s := 1; s <= req.Ratchet; s++ {
				if rk, err = e2ee.Ratchet(suite, rk); err != nil {
					add(fmt.Sprintf("ratchet-%d", s), 0, err)
					break
				}
				n, err = tryOpen(fkid, rk, f.Kind, prefix, frame)
				add(fmt.Sprintf("ratchet-%d", s), n, err)
			}
		}
	}
	enc := json.NewEncoder(out)
	return enc.Encode(map[string]any{"results": results})
}
