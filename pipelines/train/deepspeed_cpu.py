"""Works around DeepSpeed (0.19) compiling its shared-memory communication op on CPU-only workers.

When a CPU run initialises DeepSpeed's communication, `deepspeed.comm.torch.build_shm_op` compiles the
"deepspeed_shm_comm" extension with the machine's C++ toolchain (tens of seconds per worker, and a failure where no
toolchain is installed) unless `deepspeed.ops.__compatible_ops__` marks it incompatible. CPU runs communicate
through gloo, which needs none of it. The dict is DeepSpeed's private table, so it is touched here only, and only
on CPU workers; tests/pipelines/test_train_options.py fails when DeepSpeed renames or drops it.
"""

from __future__ import annotations

import deepspeed

SHM_OP = "deepspeed_shm_comm"


def skip_shared_memory_op() -> None:
    """Call on a CPU worker before deepspeed.init_distributed."""
    deepspeed.ops.__compatible_ops__[SHM_OP] = False
