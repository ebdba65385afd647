package e2ee_test

import (
	"fmt"

	"github.com/parleyhq/parley/e2ee"
)

func ExampleSender() {
	key := []byte("a 32-byte base key, random bytes")
	kid := e2ee.MakeKID(1, 0, 0) // sender index 1, generation 0, ratchet step 0
	snd, _ := e2ee.NewSender(e2ee.AES_128_GCM_SHA256_128, kid, key)
	rcv, _ := e2ee.NewReceiver(e2ee.AES_128_GCM_SHA256_128)
	_ = rcv.AddKey(kid, key)

	md := []byte("parley/1 media\x01\x00") // authenticated, not sent
	frame, _ := snd.Seal(nil, md, []byte("hello"))
	pt, err := rcv.Open(nil, md, frame)
	fmt.Printf("%d-byte frame, %q, %v\n", len(frame), pt, err)
	_, err = rcv.Open(nil, md, frame)
	fmt.Println(err)
	// Output:
	// 26-byte frame, "hello", <nil>
	// sframe: replayed or too old counter
}
