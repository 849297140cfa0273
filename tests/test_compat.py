"""The private names of other libraries that emotion_lightning.compat leans on: each test fails when the library
changes what the package relies on, before a user meets it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emotion_lightning import compat


def test_pytorch_still_answers_whether_the_cpu_computes_bf16():
    answer = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert isinstance(answer, bool)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():  # the same answer as the CPU's own flags
        flags = cpuinfo.read_text()
        assert answer == ("avx512_bf16" in flags or "amx_bf16" in flags) or answer
    assert compat.cpu_supports_bf16() == answer


@pytest.mark.parametrize("once", [True, False])
def test_the_fused_adamw_step_still_divides_the_gradients_by_its_grad_scale(once):
    def stepped(gradient_times: float, divide: bool) -> torch.Tensor:
        weight = torch.nn.Parameter(torch.ones(4))
        # A large eps makes the step depend on the gradients' size (Adam's is otherwise nearly scale-free).
        optimizer = torch.optim.AdamW([weight], lr=0.1, eps=1.0, fused=True)
        optimizer.register_step_post_hook(compat.forget_gradient_divisor)
        weight.grad = torch.tensor([1.0, -2.0, 3.0, -4.0]) * gradient_times
        assert compat.step_divides_gradients(optimizer)
        if divide:
            compat.divide_gradients_in_step(optimizer, torch.tensor(gradient_times), once=once)
        optimizer.step()
        assert hasattr(optimizer, "grad_scale") == (divide and not once)
        return weight.detach()

    plain = stepped(1.0, divide=False)
    assert not torch.allclose(stepped(4.0, divide=False), plain)
    torch.testing.assert_close(stepped(4.0, divide=True), plain)


def test_a_plain_optimizer_takes_no_gradient_divisor():
    assert not compat.step_divides_gradients(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1))
