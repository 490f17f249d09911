// Package torchtest helps tests of packages built on torch.
package torchtest

import (
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
