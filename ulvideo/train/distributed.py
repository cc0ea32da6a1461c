"""What the trainer needs past one process: FSDP on CPU processes, full weights of sharded ones.

accelerate (1.15) sets up FSDP only on accelerators: launched with an FSDP config on CPU processes
(`use_cpu: true`, gloo) it silently trains with plain DDP. torch's FSDP2 (`fully_shard`) runs on
gloo, so `enable_cpu_fsdp` switches such a launch to FSDP, as accelerate would on GPUs.
"""

import os

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.tensor import DTensor


def enable_cpu_fsdp(accelerator: Accelerator) -> None:
    """Use FSDP for a launch with an FSDP config (ACCELERATE_USE_FSDP, set by `accelerate launch`)
    that accelerate turned into CPU DDP (MULTI_CPU); the plugin reads the launch's FSDP_* settings.
    Call it right after building the Accelerator, before `prepare`."""
    wants_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    state = AcceleratorState()
    # FSDP without a plugin: a second run in the process, after AcceleratorState._reset_state()
    demoted = accelerator.distributed_type in (DistributedType.MULTI_CPU, DistributedType.FSDP)
    if not wants_fsdp or not demoted or getattr(state, "fsdp_plugin", None) is not None:
        return
    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise ValueError(
            "FSDP on CPU processes is supported with fsdp_version: 2 (torch's fully_shard) only: "
            "set it in the accelerate config"
        )
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # accelerate keeps both


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A parameter or gradient whole: FSDP's shards (DTensor) are all-gathered, so every process
    must call it; any other tensor is returned as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def peak_memory_bytes(device: torch.device) -> int:
    """The peak memory of this process: allocated CUDA memory on a GPU, else the peak resident
    set size of the process (Linux reports ru_maxrss in KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
