//go:build linux

package torch

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// nprocHeadroom is RLIMIT_NPROC's part of threadHeadroom: the soft limit
// less the threads of the processes of this real user (which the kernel
// counts against it), -1 without a limit. Where the whole system's threads
// (/proc/loadavg) leave more than any request could use, that is the
// answer, without reading every process's status.
func nprocHeadroom() (int, string) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY || rl.Cur > 1<<31 {
		return -1, ""
	}
	limit := int(rl.Cur)
	if total := systemThreads(readFile("/proc/loadavg")); total >= 0 && limit-total >= 1024+threadReserve() {
		return limit - total, fmt.Sprintf("RLIMIT_NPROC %d, at most %d threads in use", limit, total)
	}
	uid := os.Getuid()
	used := userThreads("/proc", uid)
	return max(limit-used, 0), fmt.Sprintf("RLIMIT_NPROC %d, %d threads in use by uid %d", limit, used, uid)
}
