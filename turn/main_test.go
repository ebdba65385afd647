package turn

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// testNoBatching makes baseConfig ask for the portable fast path.
var testNoBatching bool

// TestMain runs the tests twice where batched I/O exists (Linux): once
// batched, as deployed, and once with the portable path that other
// platforms use (one datagram per read and write), so that both are held
// to the same behaviour. Benchmarks and fuzzing run once, batched.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if code != 0 || !batchSupported || flagSet("test.bench") || flagSet("test.fuzz") {
		os.Exit(code)
	}
	fmt.Println("turn: the same tests with plain reads and writes (Config.noBatching)")
	testNoBatching = true
	os.Exit(m.Run())
}

func flagSet(name string) bool {
	f := flag.Lookup(name)
	return f != nil && f.Value.String() != ""
}
