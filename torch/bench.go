package torch

/*
#include "kakusan.h"
*/
import "C"

// benchAddLoop runs a + b n times inside the shim, a C++ loop that makes and
// frees a handle per result as a Go call does: the peer against which the
// benchmarks measure the binding's per-op overhead.
func benchAddLoop(a, b *Tensor, n int) {
	var err *C.char
	C.kk_bench_add_loop(a.handle("benchAddLoop"), b.handle("benchAddLoop"), C.int64_t(n), &err)
	check("benchAddLoop", err)
}
