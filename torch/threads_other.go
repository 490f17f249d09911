//go:build !linux

package torch

// nprocHeadroom: RLIMIT_NPROC is read on Linux only.
func nprocHeadroom() (int, string) { return -1, "" }
