package nat

// The helper side: this test binary, run again by the test under
// `ip netns exec <ns>` with PARLEY_NAT_HELPER set, does one job inside that
// namespace and prints one result line ("NATRESULT {json}") on standard
// output. Logs go to standard error.
//
//	get     GET NAT_URL (retrying for NAT_RETRY), body to standard output
//	probe   what a client reaches: a STUN Binding to TURN UDP 3478, TCP
//	        connections to 3478 and 443
//	create  POST https://NAT_SERVER/api/rooms, trusting NAT_CA
//	peer    one call participant: joins NAT_ROOM over wss://NAT_SERVER/ws,
//	        uses the iceServers of welcome, sends RTP and counts what
//	        arrives, then reports the selected candidate pair

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/stun/v4"
	"github.com/pion/webrtc/v4"

	"github.com/parleyhq/parley/signaling"
)

const (
	helperEnv    = "PARLEY_NAT_HELPER"
	resultPrefix = "NATRESULT "
)

// TestMain runs the helper instead of the tests when PARLEY_NAT_HELPER is
// set.
func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	os.Exit(m.Run())
}

func runHelper(mode string) int {
	log.SetOutput(os.Stderr)
	log.SetFlags(log.Lmicroseconds)
	log.SetPrefix(fmt.Sprintf("[%s %s] ", mode, os.Getenv("NAT_ROLE")))
	var (
		res any
		err error
	)
	switch mode {
	case "get":
		return helperGet()
	case "probe":
		res = probe()
	case "create":
		res, err = createRoom()
	case "peer":
		res = runPeer()
	default:
		err = fmt.Errorf("unknown helper mode %q", mode)
	}
	if err != nil {
		log.Print(err)
		return 1
	}
	b, _ := json.Marshal(res)
	fmt.Printf("%s%s\n", resultPrefix, b)
	return 0
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

// httpClient trusts NAT_CA and never uses a proxy.
func httpClient() *http.Client {
	tc := &tls.Config{RootCAs: caPool()}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{Proxy: nil, TLSClientConfig: tc},
	}
}

func caPool() *x509.CertPool {
	pool := x509.NewCertPool()
	if f := os.Getenv("NAT_CA"); f != "" {
		pem, err := os.ReadFile(f)
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			log.Printf("cannot load CA %s: %v", f, err)
		}
	}
	return pool
}

func helperGet() int {
	url := os.Getenv("NAT_URL")
	until := time.Now().Add(envDuration("NAT_RETRY", 0))
	c := httpClient()
	for {
		resp, err := c.Get(url)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				os.Stdout.Write(body)
				return 0
			}
			err = fmt.Errorf("%s: %v %v", url, resp.Status, rerr)
		}
		if time.Now().After(until) {
			log.Print(err)
			return 1
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// probeResult is what a client in its namespace reaches on the server.
type probeResult struct {
	UDP3478  bool   // a STUN Binding to TURN UDP 3478 was answered
	Mapped   string // the address the server saw (XOR-MAPPED-ADDRESS)
	MappedIP string
	ErrUDP   string
	TCP3478  bool // a TCP connection to TURN TCP 3478 opened
	Err3478  string
	TCP443   bool // a TCP connection to 443 opened
	Err443   string
}

func probe() probeResult {
	server := os.Getenv("NAT_SERVER")
	const wait = 2 * time.Second
	var res probeResult
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		conn, err := net.Dial("udp4", net.JoinHostPort(server, "3478"))
		if err != nil {
			res.ErrUDP = err.Error()
			return
		}
		defer conn.Close()
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
		conn.SetDeadline(time.Now().Add(wait))
		go func() {
			// Twice, in case the first is lost.
			conn.Write(req.Raw)
			time.Sleep(wait / 3)
			conn.Write(req.Raw)
		}()
		buf := make([]byte, 1500)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				res.ErrUDP = err.Error()
				return
			}
			m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if m.Decode() != nil || m.TransactionID != req.TransactionID {
				continue
			}
			var xa stun.XORMappedAddress
			if err := xa.GetFrom(m); err == nil {
				res.Mapped, res.MappedIP = xa.String(), xa.IP.String()
			}
			res.UDP3478 = true
			return
		}
	}()
	dial := func(port string, ok *bool, msg *string) {
		defer wg.Done()
		c, err := net.DialTimeout("tcp4", net.JoinHostPort(server, port), wait)
		if err != nil {
			*msg = err.Error()
			return
		}
		c.Close()
		*ok = true
	}
	go dial("3478", &res.TCP3478, &res.Err3478)
	go dial("443", &res.TCP443, &res.Err443)
	wg.Wait()
	return res
}

type createResult struct {
	ID  string `json:"id"`
	URL string `json:"url"`
}

// natJoinToken is the join token of every room these tests make: the pion
// peers hold no link secret, so the token stands in for one derived from it
// (docs/security.md §2.5).
var natJoinToken = bytes.Repeat([]byte{7}, signaling.JoinTokenBytes)

func createRoom() (createResult, error) {
	var res createResult
	origin := "https://" + os.Getenv("NAT_SERVER")
	verifier := `{"joinVerifier":"` + base64.RawURLEncoding.EncodeToString(signaling.JoinVerifier(natJoinToken)) + `"}`
	req, _ := http.NewRequest("POST", origin+"/api/rooms", strings.NewReader(verifier))
	req.Header.Set("Origin", origin)
	resp, err := httpClient().Do(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return res, fmt.Errorf("POST /api/rooms: %s %s", resp.Status, body)
	}
	if err := json.Unmarshal(body, &res); err != nil || res.ID == "" {
		return res, fmt.Errorf("POST /api/rooms: %q: %v", body, err)
	}
	return res, nil
}

// candInfo describes one side of the selected candidate pair.
type candInfo struct {
	Type          string // host, srflx, prflx, relay
	Protocol      string // udp or tcp (the candidate's own transport)
	Address       string
	Port          int
	RelayProtocol string // local relay: how we reach the TURN server (udp, tcp, tls)
}

// peerResult is one participant's report.
type peerResult struct {
	Error            string
	ConnectedAfterMS int64 // from welcome to PeerConnectionStateConnected
	Local, Remote    candInfo
	Nominated        []string       // nominated pairs from GetStats, "local relayProtocol -> remote type"
	Pairs            []string       // every candidate pair from GetStats, for diagnosis
	Gathered         map[string]int // local relay candidates by relay protocol
	Sent             int
	Received         int // RTP packets from the remote track
	ReceivedOK       int // ... carrying the other peer's marker
}

// signal is any message of the signaling protocol the peer reads.
type signal struct {
	Type       string                   `json:"type"`
	ID         string                   `json:"id"`
	From       string                   `json:"from"`
	SDP        string                   `json:"sdp"`
	Candidate  *webrtc.ICECandidateInit `json:"candidate"`
	Peers      []struct{ ID string }    `json:"peers"`
	Peer       *struct{ ID string }     `json:"peer"`
	ICEServers []struct {
		URLs       []string `json:"urls"`
		Username   string   `json:"username"`
		Credential string   `json:"credential"`
	} `json:"iceServers"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Reason  string          `json:"reason"`
	Payload json.RawMessage `json:"payload"`
}

// halfTrickleWait is how long a peer lets ICE gather before it sends its
// offer or answer; the description then carries the candidates gathered so
// far, and later ones are trickled.
//
// Why: with plain trickle, a connectivity check from a relay candidate the
// other side has not been told about yet makes it a peer-reflexive
// candidate there, and pion keeps the high peer-reflexive priority for the
// pair even once the real relay candidate arrives. In the udp case that
// sometimes (about 1 run in 5 here) nominated a pair whose one leg is the
// TLS allocation, although UDP worked. When the other side knows every
// candidate before checks start, the UDP-UDP relay pair has the highest
// priority and is nominated. In the firewall case only the TLS allocation
// succeeds; the UDP and TCP 3478 attempts never finish, and the wait just
// ends.
const halfTrickleWait = time.Second

// setLocal applies a local description, waits for gathering (at most
// halfTrickleWait) and returns the SDP to send, with its candidates.
func setLocal(pc *webrtc.PeerConnection, d webrtc.SessionDescription) (string, error) {
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(d); err != nil {
		return "", err
	}
	select {
	case <-gathered:
	case <-time.After(halfTrickleWait):
	}
	return pc.LocalDescription().SDP, nil
}

func runPeer() (res peerResult) {
	if err := peer(&res); err != nil {
		res.Error = err.Error()
		log.Print(err)
	}
	return res
}

func peer(res *peerResult) error {
	deadline := time.Now().Add(envDuration("NAT_DEADLINE", 45*time.Second))
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	server := os.Getenv("NAT_SERVER")
	role, peerRole := os.Getenv("NAT_ROLE"), os.Getenv("NAT_PEER_ROLE")

	// Signaling over WSS on 443.
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: caPool()}, HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.DialContext(ctx, "wss://"+server+"/ws", http.Header{"Origin": {"https://" + server}})
	if err != nil {
		return fmt.Errorf("signaling WebSocket: %w", err)
	}
	defer ws.Close()
	go func() { <-ctx.Done(); ws.Close() }()
	var wmu sync.Mutex
	send := func(v any) error {
		wmu.Lock()
		defer wmu.Unlock()
		ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
		return ws.WriteJSON(v)
	}
	if err := send(map[string]any{"type": "join", "version": 1, "room": os.Getenv("NAT_ROOM"), "name": role,
		"token": base64.RawURLEncoding.EncodeToString(natJoinToken)}); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	var welcome signal
	if err := ws.ReadJSON(&welcome); err != nil {
		return fmt.Errorf("reading welcome: %w", err)
	}
	if welcome.Type != "welcome" {
		return fmt.Errorf("join answered %s %s: %s", welcome.Type, welcome.Code, welcome.Message)
	}
	start := time.Now() // ConnectedAfterMS counts from welcome
	var iceServers []webrtc.ICEServer
	for _, s := range welcome.ICEServers {
		iceServers = append(iceServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
		log.Printf("ICE server %v (user %s)", s.URLs, s.Username)
	}
	if len(iceServers) == 0 {
		return errors.New("welcome has no iceServers: the relay is off")
	}

	// The peer connection.
	var se webrtc.SettingEngine
	// pion gathers only UDP candidates by default, so turn:?transport=tcp
	// and turns: URLs would be skipped: TCP4 must be asked for.
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeTCP4})
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelWarn
	se.LoggerFactory = lf
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return err
	}
	policy := webrtc.ICETransportPolicyRelay
	if os.Getenv("NAT_POLICY") == "all" {
		policy = webrtc.ICETransportPolicyAll
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{ICEServers: iceServers, ICETransportPolicy: policy})
	if err != nil {
		return err
	}
	defer func() {
		// Close releases the allocations; do not wait on it for long.
		done := make(chan struct{})
		go func() { pc.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			log.Print("PeerConnection.Close did not return within 3s")
		}
	}()

	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "parley-nat-"+role)
	if err != nil {
		return err
	}
	sender, err := pc.AddTrack(track)
	if err != nil {
		return err
	}
	go func() {
		for {
			if _, _, err := sender.ReadRTCP(); err != nil {
				return
			}
		}
	}()

	var received, receivedOK atomic.Int64
	var lastRecv atomic.Int64
	marker := []byte("parley-nat from " + peerRole + " ")
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		log.Printf("remote track %s (%s)", tr.ID(), tr.Codec().MimeType)
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			received.Add(1)
			if bytes.HasPrefix(p.Payload, marker) {
				receivedOK.Add(1)
			}
			lastRecv.Store(time.Now().UnixNano())
		}
	})
	connected, failed := make(chan struct{}), make(chan struct{})
	var connOnce, failOnce sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		log.Printf("connection state %s", s)
		switch s {
		case webrtc.PeerConnectionStateConnected:
			connOnce.Do(func() { close(connected) })
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			failOnce.Do(func() { close(failed) })
		}
	})

	var rmu sync.Mutex
	remoteID := ""
	setRemote := func(id string) {
		rmu.Lock()
		defer rmu.Unlock()
		if remoteID == "" {
			remoteID = id
		}
	}
	getRemote := func() string {
		rmu.Lock()
		defer rmu.Unlock()
		return remoteID
	}
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		var cand any // null: end of candidates
		if c != nil {
			init := c.ToJSON()
			cand = init
			log.Printf("local candidate %s", init.Candidate)
		}
		if err := send(map[string]any{"type": "candidate", "to": getRemote(), "candidate": cand}); err != nil {
			log.Printf("sending candidate: %v", err)
		}
	})

	// The newcomer offers (docs/protocol.md, mesh negotiation).
	if len(welcome.Peers) > 0 {
		setRemote(welcome.Peers[0].ID)
		offer, err := pc.CreateOffer(nil)
		if err != nil {
			return err
		}
		sdp, err := setLocal(pc, offer)
		if err != nil {
			return err
		}
		if err := send(map[string]any{"type": "offer", "to": getRemote(), "sdp": sdp}); err != nil {
			return err
		}
		log.Printf("offered to %s", getRemote())
	}

	sigErr := make(chan error, 1)
	otherDone := make(chan struct{})
	var otherDoneOnce sync.Once
	go func() {
		var pending []webrtc.ICECandidateInit
		haveRemote := false
		flush := func() {
			haveRemote = true
			for _, c := range pending {
				if err := pc.AddICECandidate(c); err != nil {
					log.Printf("AddICECandidate: %v", err)
				}
			}
			pending = nil
		}
		for {
			var m signal
			if err := ws.ReadJSON(&m); err != nil {
				sigErr <- fmt.Errorf("signaling read: %w", err)
				return
			}
			switch m.Type {
			case "peer-joined":
				if m.Peer != nil {
					setRemote(m.Peer.ID)
					log.Printf("peer joined: %s", m.Peer.ID)
				}
			case "offer":
				setRemote(m.From)
				if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: m.SDP}); err != nil {
					sigErr <- fmt.Errorf("offer: %w", err)
					return
				}
				flush()
				answer, err := pc.CreateAnswer(nil)
				var sdp string
				if err == nil {
					sdp, err = setLocal(pc, answer)
				}
				if err == nil {
					err = send(map[string]any{"type": "answer", "to": m.From, "sdp": sdp})
				}
				if err != nil {
					sigErr <- fmt.Errorf("answer: %w", err)
					return
				}
				log.Printf("answered %s", m.From)
			case "answer":
				if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: m.SDP}); err != nil {
					sigErr <- fmt.Errorf("answer: %w", err)
					return
				}
				flush()
			case "candidate":
				if m.Candidate == nil {
					continue // end of candidates
				}
				log.Printf("remote candidate %s", m.Candidate.Candidate)
				if !haveRemote {
					pending = append(pending, *m.Candidate)
				} else if err := pc.AddICECandidate(*m.Candidate); err != nil {
					log.Printf("AddICECandidate: %v", err)
				}
			case "error":
				log.Printf("server error %s: %s (%s)", m.Code, m.Message, m.Reason)
				if m.Code != "rate-limited" {
					sigErr <- fmt.Errorf("server error %s: %s", m.Code, m.Message)
					return
				}
			case "e2ee":
				// The test's own end-of-call barrier (see below).
				if m.From == getRemote() && bytes.Contains(m.Payload, []byte(`"natDone"`)) {
					otherDoneOnce.Do(func() { close(otherDone) })
				}
			case "peer-left":
				log.Printf("peer left: %s", m.ID)
			}
		}
	}()

	select {
	case <-connected:
		res.ConnectedAfterMS = time.Since(start).Milliseconds()
		log.Printf("connected after %dms", res.ConnectedAfterMS)
	case <-failed:
		return errors.New("ICE/DTLS failed: no connection")
	case err := <-sigErr:
		return err
	case <-ctx.Done():
		return fmt.Errorf("not connected before the deadline (%v)", ctx.Err())
	}

	// Media: 50 packets a second (20 ms Opus frames) for NAT_SEND.
	sendUntil := time.Now().Add(envDuration("NAT_SEND", 6*time.Second))
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	seq, ts := uint16(1000), uint32(5000)
	for time.Now().Before(sendUntil) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("deadline while sending: %v", ctx.Err())
		}
		payload := make([]byte, 160)
		copy(payload, fmt.Sprintf("parley-nat from %s %06d ", role, res.Sent))
		if err := track.WriteRTP(&rtp.Packet{
			Header:  rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: ts, SSRC: 1},
			Payload: payload,
		}); err != nil {
			return fmt.Errorf("WriteRTP: %w", err)
		}
		seq++
		ts += 960
		res.Sent++
	}
	// Let the other side's last packets arrive: stop when about as many
	// came as were sent, or nothing came for 1.5 s, or after 5 s.
	waitUntil := time.Now().Add(5 * time.Second)
	for time.Now().Before(waitUntil) {
		last := time.Unix(0, lastRecv.Load())
		if received.Load() >= int64(res.Sent) || (received.Load() > 0 && time.Since(last) > 1500*time.Millisecond) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.Received, res.ReceivedOK = int(received.Load()), int(receivedOK.Load())

	// Which path did ICE pick?
	pair, err := sender.Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return fmt.Errorf("no selected candidate pair: %v", err)
	}
	res.Local = candInfo{Type: pair.Local.Typ.String(), Protocol: pair.Local.Protocol.String(), Address: pair.Local.Address, Port: int(pair.Local.Port)}
	res.Remote = candInfo{Type: pair.Remote.Typ.String(), Protocol: pair.Remote.Protocol.String(), Address: pair.Remote.Address, Port: int(pair.Remote.Port)}
	res.Gathered = map[string]int{}
	report := pc.GetStats()
	cands := map[string]webrtc.ICECandidateStats{}
	for _, s := range report {
		if c, ok := s.(webrtc.ICECandidateStats); ok {
			cands[c.ID] = c
			if c.Type == webrtc.StatsTypeLocalCandidate && c.CandidateType == webrtc.ICECandidateTypeRelay {
				res.Gathered[c.RelayProtocol]++
				if c.IP == res.Local.Address && int(c.Port) == res.Local.Port {
					res.Local.RelayProtocol = c.RelayProtocol
				}
			}
		}
	}
	for _, s := range report {
		p, ok := s.(webrtc.ICECandidatePairStats)
		if !ok {
			continue
		}
		l, r := cands[p.LocalCandidateID], cands[p.RemoteCandidateID]
		desc := fmt.Sprintf("%s/%s %s:%d -> %s %s:%d (%s)",
			l.CandidateType, l.RelayProtocol, l.IP, l.Port, r.CandidateType, r.IP, r.Port, p.State)
		if p.Nominated {
			res.Nominated = append(res.Nominated, desc)
		}
		at := func(ts webrtc.StatsTimestamp) string {
			if ts.Time().Before(start.Add(-time.Minute)) {
				return "-"
			}
			return fmt.Sprintf("%dms", ts.Time().Sub(start).Milliseconds())
		}
		res.Pairs = append(res.Pairs, fmt.Sprintf("%s nominated=%v requests=%d responses=%d first request %s, first response %s, first request received %s",
			desc, p.Nominated, p.RequestsSent, p.ResponsesReceived, at(p.FirstRequestTimestamp), at(p.FirstResponseTimestamp), at(p.FirstRequestReceivedTimestamp)))
	}
	if res.Local.Type == "relay" && res.Local.RelayProtocol == "" {
		return fmt.Errorf("selected local relay candidate %s:%d not found in GetStats", res.Local.Address, res.Local.Port)
	}
	log.Printf("selected %+v -> %+v; sent %d, received %d", res.Local, res.Remote, res.Sent, res.Received)

	// Barrier: tell the other we are done and wait for the same from them,
	// so that neither closes the call (DTLS close, allocations freed) before
	// the other has counted its packets and read its ICE stats. The message
	// rides on the protocol's opaque e2ee type.
	if err := send(map[string]any{"type": "e2ee", "to": getRemote(), "payload": map[string]bool{"natDone": true}}); err != nil {
		return fmt.Errorf("sending done: %w", err)
	}
	select {
	case <-otherDone:
	case <-time.After(10 * time.Second):
		log.Print("the other peer did not say it was done within 10s")
	case <-ctx.Done():
	}

	send(map[string]any{"type": "leave"})
	return nil
}
