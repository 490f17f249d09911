// compat.h: the one place that papers over libtorch 1.13 vs 2.x differences.
#pragma once
#include <torch/version.h>

// TORCH_AT_LEAST(2, 1) is true when compiling against libtorch 2.1 or newer.
#define TORCH_AT_LEAST(major, minor)                                       \
  (TORCH_VERSION_MAJOR > (major) ||                                        \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))
