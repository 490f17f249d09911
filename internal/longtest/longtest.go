// Package longtest marks kakusan's long integration tests (models trained
// until they learn, judges trained for an epoch): they are named
// TestLong..., `make test` (go test -short) skips them, and `make
// test-long` (go test -run '^TestLong') runs them; CI runs both.
package longtest

import "testing"

// Skip skips the calling test under go test -short.
func Skip(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("a long test: make test-long runs it")
	}
}
