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


def test_the_fused_adamw_step_still_skips_itself_on_its_found_inf_flag():
    def stepped(skip: bool | None) -> torch.Tensor:
        weight = torch.nn.Parameter(torch.ones(4))
        optimizer = torch.optim.AdamW([weight], lr=0.1, fused=True)
        weight.grad = torch.tensor([1.0, -2.0, 3.0, -4.0])
        assert compat.step_divides_gradients(optimizer)
        if skip is not None:
            compat.skip_step_where(optimizer, torch.tensor(skip))
        optimizer.step()
        compat.skip_step_where(optimizer, None)
        assert not hasattr(optimizer, "found_inf")
        return weight.detach()

    assert torch.equal(stepped(True), torch.ones(4))  # left as it was
    assert torch.equal(stepped(False), stepped(None))
    assert not torch.equal(stepped(False), torch.ones(4))


def test_a_plain_optimizer_takes_no_step_verdict():
    assert not compat.step_divides_gradients(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1))


def test_an_in_place_change_still_raises_a_tensors_version():
    weight = torch.nn.Parameter(torch.ones(3))
    before = compat.tensor_version(weight)
    with torch.no_grad():
        weight.mul_(2)
    assert compat.tensor_version(weight) > before
    model = torch.nn.Linear(2, 2)
    before = compat.tensor_version(model.weight)
    model.load_state_dict(torch.nn.Linear(2, 2).state_dict())
    assert compat.tensor_version(model.weight) > before


@pytest.mark.parametrize("rows", [1, 5, 64])  # one text's row; fewer rows than CUDA's kernel takes; a batch
def test_the_int8_product_is_exact_in_int32(rows):
    generator = torch.Generator().manual_seed(rows)
    a = torch.randint(-127, 128, (rows, 96), dtype=torch.int8, generator=generator)
    b = torch.randint(-127, 128, (96, 40), dtype=torch.int8, generator=generator)
    product = compat.int8_matmul(a, b)
    assert product.dtype == torch.int32
    assert torch.equal(product, a.int() @ b.int())
