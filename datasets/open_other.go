//go:build !unix

package datasets

// openNonblock is a no-op where there are no FIFOs to guard against.
const openNonblock = 0
