package signaling

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func newTestServer(t *testing.T, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	if cfg.ICEServers == nil {
		cfg.ICEServers = func(*http.Request, string) []ICEServer {
			return []ICEServer{{URLs: []string{"turn:127.0.0.1:3478?transport=udp"}, Username: "1:x", Credential: "pw"}}
		}
	}
	s := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts
}

// roomTokens holds the join token (b64url) of each room the tests made.
var roomTokens sync.Map

func newToken() string {
	b := make([]byte, JoinTokenBytes)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func verifierOf(token string) string {
	b, _ := base64.RawURLEncoding.DecodeString(token)
	return base64.RawURLEncoding.EncodeToString(JoinVerifier(b))
}

// post sends a same-origin POST, as the landing page does.
func post(ts *httptest.Server, path, body string) (*http.Response, error) {
	req, _ := http.NewRequest("POST", ts.URL+path, strings.NewReader(body))
	req.Header.Set("Origin", ts.URL)
	req.Header.Set("Content-Type", "application/json")
	return ts.Client().Do(req)
}

// createRoom makes a room with a join verifier, as the landing page does,
// and remembers its token for join.
func createRoom(t *testing.T, ts *httptest.Server) string {
	t.Helper()
	token := newToken()
	res, err := post(ts, "/api/rooms", `{"joinVerifier":"`+verifierOf(token)+`"}`)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("create room: %s", res.Status)
	}
	var rr RoomResponse
	if err := json.NewDecoder(res.Body).Decode(&rr); err != nil {
		t.Fatal(err)
	}
	if !validRoomID(rr.ID) || rr.URL != "/c/"+rr.ID {
		t.Fatalf("bad room response %+v", rr)
	}
	roomTokens.Store(rr.ID, token)
	return rr.ID
}

func tokenOf(room string) string {
	v, _ := roomTokens.Load(room)
	s, _ := v.(string)
	return s
}

type wsClient struct {
	t  *testing.T
	ws *websocket.Conn
}

// dial opens the WebSocket as the page does, with its own Origin.
func dial(t *testing.T, ts *httptest.Server) *wsClient {
	t.Helper()
	d := *websocket.DefaultDialer
	if ts.TLS != nil {
		d.TLSClientConfig = ts.Client().Transport.(*http.Transport).TLSClientConfig
	}
	ws, _, err := d.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+"/ws", http.Header{"Origin": {ts.URL}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return &wsClient{t: t, ws: ws}
}

func (c *wsClient) sendRaw(s string) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *wsClient) send(m Message) {
	c.t.Helper()
	b, _ := json.Marshal(m)
	c.sendRaw(string(b))
}

// read returns the next message, or fails after a timeout.
func (c *wsClient) read() Message {
	c.t.Helper()
	m, err := c.tryRead(5 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return m
}

func (c *wsClient) tryRead(d time.Duration) (Message, error) {
	c.ws.SetReadDeadline(time.Now().Add(d))
	_, data, err := c.ws.ReadMessage()
	if err != nil {
		return Message{}, err
	}
	var m Message
	if err := json.Unmarshal(data, &m); err != nil {
		c.t.Fatalf("server sent bad JSON %q", data)
	}
	return m, nil
}

// expect reads until a message of the given type arrives.
func (c *wsClient) expect(typ string) Message {
	c.t.Helper()
	for i := 0; i < 50; i++ {
		m := c.read()
		if m.Type == typ {
			return m
		}
	}
	c.t.Fatalf("no %s message", typ)
	return Message{}
}

// expectError reads the next message and checks it is an error with code.
func (c *wsClient) expectError(code string) Message {
	c.t.Helper()
	m := c.read()
	if m.Type != TypeError || m.Code != code {
		c.t.Fatalf("want error %s, got %+v", code, m)
	}
	if m.Message == "" {
		c.t.Fatalf("error %s has no human message", code)
	}
	return m
}

// expectClose reads until the connection closes and returns the close code.
func (c *wsClient) expectClose() int {
	c.t.Helper()
	for {
		c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := c.ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		c.t.Fatalf("connection ended without a close frame: %v", err)
	}
}

func (c *wsClient) join(room, name string) Message {
	c.t.Helper()
	c.send(joinMsg(room, name))
	m := c.read()
	if m.Type != TypeWelcome {
		c.t.Fatalf("want welcome, got %+v", m)
	}
	return m
}

// joinMsg is a join with the room's token.
func joinMsg(room, name string) Message {
	return Message{Type: TypeJoin, Version: ProtocolVersion, Room: room, Name: name, Token: tokenOf(room)}
}

func TestCallFlow(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	room := createRoom(t, ts)
	a := dial(t, ts)
	wa := a.join(room, "  Alice   Smith ")
	if wa.ID == "" || len(wa.Peers) != 0 || wa.Version != ProtocolVersion || wa.MaxPeers != MaxPeers {
		t.Fatalf("welcome %+v", wa)
	}
	if len(wa.ICEServers) != 1 || wa.ICEServers[0].Credential == "" {
		t.Fatalf("welcome has no ICE servers: %+v", wa.ICEServers)
	}
	b := dial(t, ts)
	wb := b.join(room, "Bob")
	if len(wb.Peers) != 1 || wb.Peers[0].ID != wa.ID || wb.Peers[0].Name != "Alice Smith" {
		t.Fatalf("Bob sees peers %+v", wb.Peers)
	}
	pj := a.expect(TypePeerJoined)
	if pj.Peer == nil || pj.Peer.ID != wb.ID || pj.Peer.Name != "Bob" {
		t.Fatalf("peer-joined %+v", pj)
	}

	b.send(Message{Type: TypeOffer, To: wa.ID, SDP: "v=0 offer"})
	off := a.expect(TypeOffer)
	if off.From != wb.ID || off.SDP != "v=0 offer" || off.To != "" {
		t.Fatalf("forwarded offer %+v", off)
	}
	a.send(Message{Type: TypeAnswer, To: wb.ID, SDP: "v=0 answer"})
	if ans := b.expect(TypeAnswer); ans.From != wa.ID || ans.SDP != "v=0 answer" {
		t.Fatalf("answer %+v", ans)
	}
	// restart-ice carries nothing but who asks: an sdp sent along is refused.
	b.sendRaw(`{"type":"restart-ice","to":"` + wa.ID + `"}`)
	if r := a.expect(TypeRestartICE); r.From != wb.ID || r.To != "" || r.SDP != "" || r.Payload != nil {
		t.Fatalf("restart-ice %+v", r)
	}
	b.sendRaw(`{"type":"restart-ice","to":"` + wa.ID + `","sdp":"v=0"}`)
	if r := a.expect(TypeRestartICE); r.SDP != "" {
		t.Fatalf("restart-ice forwarded another type's field: %+v", r)
	}
	mid := "0"
	b.sendRaw(`{"type":"candidate","to":"` + wa.ID + `","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}`)
	if c := a.expect(TypeCandidate); c.Candidate == nil || c.Candidate.SDPMid == nil || *c.Candidate.SDPMid != mid {
		t.Fatalf("candidate %+v", c)
	}
	b.sendRaw(`{"type":"candidate","to":"` + wa.ID + `","candidate":null}`)
	if c := a.expect(TypeCandidate); c.Candidate != nil {
		t.Fatalf("end-of-candidates %+v", c)
	}
	a.sendRaw(`{"type":"e2ee","payload":{"k":"opaque"}}`)
	if e := b.expect(TypeE2EE); e.From != wa.ID || string(e.Payload) != `{"k":"opaque"}` {
		t.Fatalf("e2ee broadcast %+v", e)
	}

	b.send(Message{Type: TypeLeave})
	if code := b.expectClose(); code != websocket.CloseNormalClosure {
		t.Fatalf("leave closed with %d", code)
	}
	if pl := a.expect(TypePeerLeft); pl.ID != wb.ID || pl.Reason != "left" {
		t.Fatalf("peer-left %+v", pl)
	}
}

func TestBadInput(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	room := createRoom(t, ts)

	t.Run("invalid JSON then unknown type, connection survives", func(t *testing.T) {
		c := dial(t, ts)
		c.sendRaw(`{"type": "join", `)
		c.expectError(CodeBadMessage)
		c.sendRaw(`[1,2,3]`)
		c.expectError(CodeBadMessage)
		c.sendRaw(`{"type":"dance"}`)
		c.expectError(CodeUnknownType)
		c.sendRaw(`{"type":"offer","to":"x","sdp":"v=0"}`)
		c.expectError(CodeNotJoined)
		c.join(room, "Still here")
		c.send(joinMsg(room, "Twice"))
		c.expectError(CodeAlreadyJoined)
		c.sendRaw(`{"type":"offer","to":"x","sdp":"v=0","from":"spoof"}`)
		c.expectError(CodeBadMessage)
		c.ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3})
		c.expectError(CodeBadMessage)
	})
	t.Run("offer to a peer that does not exist", func(t *testing.T) {
		c := dial(t, ts)
		c.join(room, "Offerer")
		c.send(Message{Type: TypeOffer, To: "nobody", SDP: "v=0"})
		c.expectError(CodeUnknownPeer)
		c.send(Message{Type: TypeRestartICE, To: "nobody"})
		c.expectError(CodeUnknownPeer)
		c.send(Message{Type: TypeRestartICE})
		c.expectError(CodeBadMessage)
		// A candidate over MaxCandidateSize is refused, not forwarded.
		c.sendRaw(`{"type":"candidate","to":"nobody","candidate":{"candidate":"` + strings.Repeat("a", MaxCandidateSize+1) + `"}}`)
		c.expectError(CodeBadMessage)
	})
	t.Run("join an unknown room", func(t *testing.T) {
		for _, id := range []string{"AAAAAAAAAAAAAAAAAAAAAA", "short", "../etc/passwd"} {
			c := dial(t, ts)
			c.send(Message{Type: TypeJoin, Version: 1, Room: id, Name: "Lost"})
			c.expectError(CodeRoomNotFound)
			if code := c.expectClose(); code != websocket.CloseNormalClosure {
				t.Fatalf("close code %d", code)
			}
		}
	})
	t.Run("wrong protocol version", func(t *testing.T) {
		c := dial(t, ts)
		c.send(Message{Type: TypeJoin, Version: 99, Room: room, Name: "Future"})
		c.expectError(CodeVersion)
	})
	t.Run("bad names", func(t *testing.T) {
		for _, name := range []string{"", "   ", strings.Repeat("x", MaxNameLength+1), "evil\u202eeman", "tab\x07bell"} {
			c := dial(t, ts)
			c.send(joinMsg(room, name))
			c.expectError(CodeBadName)
		}
	})
	t.Run("oversize message closes with 1009", func(t *testing.T) {
		c := dial(t, ts)
		c.join(room, "Big")
		c.sendRaw(`{"type":"offer","to":"x","sdp":"` + strings.Repeat("a", MaxMessageSize) + `"}`)
		if code := c.expectClose(); code != websocket.CloseMessageTooBig {
			t.Fatalf("close code %d, want 1009", code)
		}
	})
	t.Run("message flood gets rate-limited then closed with 1008", func(t *testing.T) {
		c := dial(t, ts)
		c.join(room, "Flood")
		go func() {
			for i := 0; i < 1000; i++ {
				if c.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"offer","to":"nobody","sdp":"v=0"}`)) != nil {
					return
				}
			}
		}()
		sawLimit := false
		for {
			c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, data, err := c.ws.ReadMessage()
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				if ce.Code != websocket.ClosePolicyViolation {
					t.Fatalf("close code %d, want 1008", ce.Code)
				}
				break
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if strings.Contains(string(data), CodeRateLimited) {
				sawLimit = true
			}
		}
		if !sawLimit {
			t.Fatal("no rate-limited error before the close")
		}
	})

	// After all of that, another room still works.
	other := createRoom(t, ts)
	a, b := dial(t, ts), dial(t, ts)
	wa := a.join(other, "A")
	b.join(other, "B")
	b.send(Message{Type: TypeOffer, To: wa.ID, SDP: "v=0"})
	a.expect(TypeOffer)
}

func TestRoomFull(t *testing.T) {
	_, ts := newTestServer(t, Config{})
	room := createRoom(t, ts)
	for i := 0; i < MaxPeers; i++ {
		dial(t, ts).join(room, "P")
	}
	c := dial(t, ts)
	c.send(joinMsg(room, "Fifth"))
	m := c.expectError(CodeRoomFull)
	if !strings.Contains(m.Message, "most people") {
		t.Fatalf("room-full message %q", m.Message)
	}
}

func TestRoomLimitsAndInfo(t *testing.T) {
	_, ts := newTestServer(t, Config{RoomsPerIP: 3})
	var id string
	for i := 0; i < 3; i++ {
		id = createRoom(t, ts)
	}
	res, err := post(ts, "/api/rooms", `{"joinVerifier":"`+verifierOf(newToken())+`"}`)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]string
	json.NewDecoder(res.Body).Decode(&body)
	res.Body.Close()
	if res.StatusCode != http.StatusTooManyRequests || body["error"] != CodeTooManyRooms || body["message"] == "" {
		t.Fatalf("4th room: %s %v", res.Status, body)
	}

	res, _ = http.Get(ts.URL + "/api/rooms/" + id)
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(bytes.TrimSpace(raw)) != `{"id":"`+id+`","exists":true}` {
		t.Fatalf("room info without the token: %s %s", res.Status, raw)
	}
	req, _ := http.NewRequest("GET", ts.URL+"/api/rooms/"+id, nil)
	req.Header.Set(HeaderJoinToken, tokenOf(id))
	res, _ = http.DefaultClient.Do(req)
	var info RoomInfo
	json.NewDecoder(res.Body).Decode(&info)
	res.Body.Close()
	if res.StatusCode != 200 || info.ID != id || info.MaxPeers != MaxPeers || info.Participants == nil || *info.Participants != 0 {
		t.Fatalf("room info with the token %s %+v", res.Status, info)
	}
	req.Header.Set(HeaderJoinToken, newToken())
	res, _ = http.DefaultClient.Do(req)
	raw, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if strings.Contains(string(raw), "participants") {
		t.Fatalf("room info with a wrong token tells the count: %s", raw)
	}
	res, _ = http.Get(ts.URL + "/api/rooms/AAAAAAAAAAAAAAAAAAAAAA")
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown room info: %s", res.Status)
	}
}

func TestOriginCheck(t *testing.T) {
	_, ts := newTestServer(t, Config{AllowedOrigins: []string{"https://intranet.example"}})
	url := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
	for origin, ok := range map[string]bool{
		ts.URL:                     true,
		"https://intranet.example": true,
		"https://evil.example":     false,
		"null":                     false,
	} {
		h := http.Header{"Origin": []string{origin}}
		ws, res, err := websocket.DefaultDialer.Dial(url, h)
		if ok != (err == nil) {
			t.Errorf("origin %s: err=%v", origin, err)
		}
		if ws != nil {
			ws.Close()
		}
		if !ok && res != nil && res.StatusCode != http.StatusForbidden {
			t.Errorf("origin %s: status %d", origin, res.StatusCode)
		}
	}
	req, _ := http.NewRequest("POST", ts.URL+"/api/rooms", nil)
	req.Header.Set("Origin", "https://evil.example")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin room creation: %s", res.Status)
	}
}

func TestKeepaliveDropsSilentClient(t *testing.T) {
	_, ts := newTestServer(t, Config{PingInterval: 100 * time.Millisecond, ResumeGrace: 300 * time.Millisecond})
	room := createRoom(t, ts)
	a := dial(t, ts)
	a.join(room, "Awake")
	// b joins and then never reads, so it never answers a ping.
	b := dial(t, ts)
	b.send(joinMsg(room, "Asleep"))
	a.expect(TypePeerJoined)
	// a keeps reading (and so answers pings) and learns that b is gone.
	if pl := a.expect(TypePeerLeft); pl.Reason != "disconnected" {
		t.Fatalf("peer-left %+v", pl)
	}
}

func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{"Ann": "Ann", "  Dr.  José   Núñez ": "Dr. José Núñez", "李小龍": "李小龍", "O'Brien-Smith": "O'Brien-Smith"} {
		got, err := CleanName(in)
		if err != nil || got != want {
			t.Errorf("CleanName(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "a\x00b", "zero\u200bwidth", "rtl\u202eoverride", string([]byte{0xff})} {
		if _, err := CleanName(in); !errors.Is(err, ErrBadName) {
			t.Errorf("CleanName(%q) accepted", in)
		}
	}
}

// TestTrustedProxies: behind a trusted reverse proxy each client has its own
// rooms-per-IP budget (from X-Forwarded-For); without trust, or from an
// untrusted peer, the header is ignored and cannot be used to dodge the limit.
func TestTrustedProxies(t *testing.T) {
	post := func(ts *httptest.Server, xff string) int {
		req, _ := http.NewRequest("POST", ts.URL+"/api/rooms", strings.NewReader(`{"joinVerifier":"`+verifierOf(newToken())+`"}`))
		req.Header.Set("Origin", ts.URL)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	_, behind := newTestServer(t, Config{RoomsPerIP: 1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	for _, xff := range []string{"203.0.113.1", "203.0.113.2", "198.51.100.7, 203.0.113.3"} {
		if code := post(behind, xff); code != http.StatusCreated {
			t.Fatalf("client %s behind the proxy: %d", xff, code)
		}
	}
	if code := post(behind, "203.0.113.1"); code != http.StatusTooManyRequests {
		t.Fatalf("the same client again: %d", code)
	}
	// A client that forges an extra hop to the left is still counted as itself.
	if code := post(behind, "192.0.2.99, 203.0.113.2"); code != http.StatusTooManyRequests {
		t.Fatalf("forged leftmost hop dodged the limit: %d", code)
	}

	_, direct := newTestServer(t, Config{RoomsPerIP: 1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	post(direct, "203.0.113.1")
	if code := post(direct, "203.0.113.2"); code != http.StatusTooManyRequests {
		t.Fatalf("X-Forwarded-For from an untrusted peer was believed: %d", code)
	}
}

// TestICERefresh: a participant gets fresh TURN credentials on request.
func TestICERefresh(t *testing.T) {
	n := 0
	_, ts := newTestServer(t, Config{ICEServers: func(_ *http.Request, id string) []ICEServer {
		n++
		return []ICEServer{{URLs: []string{"turn:127.0.0.1:3478"}, Username: fmt.Sprintf("%d:%s", n, id), Credential: "pw"}}
	}})
	room := createRoom(t, ts)
	c := dial(t, ts)
	c.sendRaw(`{"type":"ice-refresh"}`)
	c.expectError(CodeNotJoined)
	w := c.join(room, "Long call")
	c.sendRaw(`{"type":"ice-refresh"}`)
	m := c.expect(TypeICEServers)
	if len(m.ICEServers) != 1 || m.ICEServers[0].Username != "2:"+w.ID || w.ICEServers[0].Username != "1:"+w.ID {
		t.Fatalf("refresh %+v after welcome %+v", m.ICEServers, w.ICEServers)
	}
}

func readJSON(t *testing.T, res *http.Response, v any) {
	t.Helper()
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("decode %s: %v", res.Status, err)
	}
}
