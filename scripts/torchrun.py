"""torchrun, for PyTorch builds without libuv: `python3 scripts/torchrun.py
ARGS` is `torchrun ARGS`, except that where USE_LIBUV=0 the launcher's own
TCP stores use the classic server. PyTorch 2.4 made libuv the stores'
default, and 2.6's launcher (its static and c10d rendezvous) creates them
without reading USE_LIBUV, so on a PyTorch built without libuv (Debian 13's)
torchrun fails before any rank starts: "use_libuv was requested but PyTorch
was build without libuv support". kakusan's ranks need no such help: the
shim falls back by itself.
"""
import os
import sys

import torch
import torch.distributed as dist

if os.environ.get("USE_LIBUV") == "0" and tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4):
    class TCPStore(dist.TCPStore):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("use_libuv", False)
            super().__init__(*args, **kwargs)

    dist.TCPStore = TCPStore  # before the launcher's modules import it

from torch.distributed.run import main  # noqa: E402

if __name__ == "__main__":
    sys.argv[0] = "torchrun"
    main()
