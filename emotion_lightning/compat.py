"""The few places that lean on another library's private names, because no public way exists.

Each has a test in tests/test_compat.py that fails when the library changes it.
"""

from __future__ import annotations

from pathlib import Path

import torch


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX).

    Without it bf16 is emulated: on a 2-core AVX2 EPYC a bf16 matmul ran at 0.9 GFLOP/s against 116 GFLOP/s
    in fp32. PyTorch answers this only privately (pytorch/pytorch#80315 asks for a public
    ``torch.backends.mkldnn`` query); /proc/cpuinfo where it does not.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        cpuinfo = Path("/proc/cpuinfo")
        flags = cpuinfo.read_text() if cpuinfo.is_file() else ""
        return "avx512_bf16" in flags or "amx_bf16" in flags


def step_divides_gradients(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` takes the GradScaler's verdicts itself (fused Adam/AdamW/SGD).

    That is the GradScaler's protocol with fused optimizers (``_step_supports_amp_scaling``, then the
    ``found_inf`` attribute read by ``step``); it has no public name (pytorch/pytorch#90752).
    """
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def skip_step_where(optimizer: torch.optim.Optimizer, skip: torch.Tensor | None) -> None:
    """Have the next fused ``step`` leave the weights and its state as they are where ``skip`` is true, decided on
    the device (read as ``optimizer.found_inf``, the GradScaler's own flag): no wait for the device to answer.
    ``None`` takes the flag away again after that step."""
    if skip is None:
        optimizer.__dict__.pop("found_inf", None)
    else:
        optimizer.found_inf = skip.float()


def tensor_version(tensor: torch.Tensor) -> int:
    """A counter PyTorch raises at every in-place change of a tensor (an optimizer step, ``copy_``,
    ``load_state_dict``): how the prediction copy of the weights knows they changed. Autograd's own check of
    saved tensors; it has no public name (``Tensor._version``)."""
    return tensor._version


def int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` of two int8 matrices, exact, in int32: the CPU's int8 dot-product instructions (AVX512-VNNI, AMX)
    through oneDNN. PyTorch's one entry to it is ``torch._int_mm`` (torchao's int8 layouts call it too); the
    ``torch.ao.quantization`` modules around it are deprecated."""
    return torch._int_mm(a, b)
