//go:build unix

package datasets

import "syscall"

// openNonblock opens without blocking: a FIFO swapped in for an image
// between its check and its opening cannot hang the loader.
const openNonblock = syscall.O_NONBLOCK
