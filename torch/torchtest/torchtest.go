// Package torchtest helps tests of packages built on torch.
package torchtest

import (
	"net"
	"testing"

	"kakusan/torch"
)

// Run runs f on the torch thread and fails the test with any torch error.
func Run(t testing.TB, f func()) {
	t.Helper()
	if err := torch.Do(func() error { f(); return nil }); err != nil {
		t.Fatal(err)
	}
}

// FreePort is a TCP port on localhost that was free a moment ago, for a
// test's rendezvous.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
