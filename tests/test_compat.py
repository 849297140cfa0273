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


def test_uvicorns_protocol_still_has_what_the_header_guard_reads():
    """A connection that sends half a request line is closed at the deadline; one that sends too many header bytes
    is answered 431. Both need the protocol's ``connections``, ``cycle``, ``transport`` and ``loop``."""
    import asyncio

    pytest.importorskip("httptools")
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    class Transport(asyncio.Transport):
        def __init__(self):
            super().__init__()
            self.closed, self.written = False, b""

        def get_extra_info(self, name, default=None):
            return {"peername": ("127.0.0.1", 5), "sockname": ("127.0.0.1", 8)}.get(name, default)

        def is_closing(self):
            return self.closed

        def close(self):
            self.closed = True

        def write(self, data):
            self.written += data

    async def connect(first_bytes: bytes) -> Transport:
        protocol_class = compat.guarded_http_protocol(read_timeout=0.05, max_connections=4)
        config = Config(app=lambda scope, receive, send: None, http=protocol_class)
        config.load()
        protocol = protocol_class(config, ServerState(), {})
        transport = Transport()
        protocol.connection_made(transport)
        protocol.data_received(first_bytes)
        await asyncio.sleep(0.2)
        protocol.connection_lost(None)
        return transport

    late = asyncio.run(connect(b"GET / HT"))
    assert late.closed and late.written == b""
    too_large = asyncio.run(connect(b"GET / HTTP/1.1\r\nx-filler: " + b"a" * 20_000))
    assert too_large.written.startswith(b"HTTP/1.1 431")


@pytest.mark.parametrize(("max_epochs", "shown"), [(3, "Epoch 1/3"), (-1, "Epoch 1")])
def test_the_rich_bar_still_takes_its_epoch_text_from_the_method_the_package_replaces(max_epochs, shown):
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import RichProgressBar

    bar = compat.counting_epochs_from_one(RichProgressBar)()
    bar._trainer = SimpleNamespace(max_epochs=max_epochs)
    assert bar._get_train_description(0) == shown
    assert "_get_train_description" in vars(RichProgressBar)  # the bar still takes its text from that method


def test_lightnings_csv_writer_still_adds_rows_under_a_header_it_is_given(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    writer = CSVLogger(str(tmp_path), name="", version="").experiment
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("epoch,step,train/loss,val/acc\n0,1,0.5,0.75\n")  # a column the next row lacks
    compat.continue_csv_metrics(writer, ["epoch", "step", "train/loss", "val/acc"])
    writer.log_metrics({"train/loss": 0.25, "epoch": 0}, step=2)
    writer.save()
    assert metrics.read_text().splitlines() == ["epoch,step,train/loss,val/acc", "0,1,0.5,0.75", "0,2,0.25,"]


def _package_modules():
    package = Path(compat.__file__).parent
    for path in sorted(package.rglob("*.py")):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        yield path, name.removesuffix(".__init__")


def test_no_private_name_of_another_object_is_read_outside_compat():
    """``x._name`` only on ``self`` or ``cls``: another library's private names live in compat.py alone (and the
    package's own private names stay in their module). ``os._exit`` is Python's documented way to end at once."""
    import ast

    found = []
    for path, _ in _package_modules():
        if path.name == "compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                receiver = ast.unparse(node.value)
                if receiver not in ("self", "cls", "os"):
                    found.append(f"{path.name}:{node.lineno} {receiver}.{node.attr}")
            elif (
                isinstance(node, ast.ImportFrom)
                and any(alias.name.startswith("_") for alias in node.names)
                and not (node.module or "").startswith("emotion_lightning")
            ):
                found.append(f"{path.name}:{node.lineno} from {node.module} import a private name")
    assert not found


def test_no_subclass_outside_compat_touches_a_private_name_of_its_library_base():
    """A subclass of another library's class neither overrides nor reads a ``_name`` its base classes define."""
    import importlib
    import inspect
    import re

    def source_of(base: type) -> str:
        try:
            return inspect.getsource(base)
        except (OSError, TypeError):  # a class written in C
            return ""

    found = []
    for path, module_name in _package_modules():
        if path.name in ("compat.py", "__main__.py"):
            continue
        module = importlib.import_module(module_name)
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module_name:
                continue
            ours = ("emotion_lightning", "builtins")
            foreign = [base for base in cls.__mro__[1:] if not base.__module__.startswith(ours)]
            base_source = "\n".join(source_of(base) for base in foreign)
            used = set(re.findall(r"self\.(_[a-z]\w*)", inspect.getsource(cls))) | {
                name
                for name in vars(cls)
                if re.fullmatch(r"_[a-z]\w*", name) and name != "_abc_impl"  # ABCMeta's
            }
            found += [
                f"{module_name}.{cls.__name__}.{name}"
                for name in used
                if any(name in vars(base) for base in foreign) or f"self.{name}" in base_source
            ]
    assert not found


def test_lightnings_wandb_logger_still_starts_its_run_with_the_arguments_the_package_changes(monkeypatch):
    from unittest import mock

    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(project="p", mode="online")
    compat.wandb_init_arguments(logger)["mode"] = "offline"
    with mock.patch("wandb.init") as init, mock.patch("wandb.run", None):
        logger.experiment  # noqa: B018 (the property starts the run)
    assert init.call_args.kwargs["mode"] == "offline" and init.call_args.kwargs["project"] == "p"
