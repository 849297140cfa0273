"""The few places that lean on another library's private names or internals, because no public way exists.

Each has a test in tests/test_compat.py that fails when the library changes it.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not imported here: `serve`'s HTTP process never imports torch
    import torch


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX).

    Without it bf16 is emulated: on a 2-core AVX2 EPYC a bf16 matmul ran at 0.9 GFLOP/s against 116 GFLOP/s
    in fp32. PyTorch answers this only privately (pytorch/pytorch#80315 asks for a public
    ``torch.backends.mkldnn`` query); /proc/cpuinfo where it does not.
    """
    import torch

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
    import torch

    return torch._int_mm(a, b)


# Seconds a new connection has to send its headers before it can be closed to make room for another.
FIRST_READ_GRACE = 0.1
# The most bytes a request's line and headers may take (h11's limit; llhttp has none of its own).
MAX_HEADER_BYTES = 16 * 1024


def guarded_http_protocol(read_timeout: float, max_connections: int):
    """uvicorn's HTTP/1.1 protocol on llhttp (httptools: Node.js's parser), with what it lacks against slow clients.

    llhttp frames every request by one rule, the strict one: a request with both Transfer-Encoding and
    Content-Length, a Content-Length given twice (even with one value), a Transfer-Encoding other than chunked
    last, is answered 400 and its connection closed, so that no bytes a proxy framed one way run here as a second
    request (RFC 9112 6.3). Added here: a deadline for each request's headers (a connection that opens and sends
    nothing, or half a header, is closed after ``read_timeout``), a cap on their size (431), and at most
    ``max_connections`` open connections (beyond, the oldest one still sending its headers is closed).

    uvicorn takes a protocol class (``Config(http=...)``) but has no setting for any of these (encode/uvicorn#2171
    asks for a headers timeout): the subclass reads the protocol's ``connections``, ``cycle``, ``transport`` and
    ``loop``, which tests/test_compat.py checks."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    waiting: dict = {}  # the connections still sending their headers, oldest first (a dict keeps its order)

    class GuardedHttpProtocol(HttpToolsProtocol):
        def connection_made(self, transport) -> None:
            self._headers_deadline = None
            self._header_bytes = 0
            super().connection_made(transport)
            self._watch_headers()
            if len(self.connections) > max_connections:
                # Not at once: accepted in a burst of thousands, a real request would be among the oldest still
                # "sending its headers" before the loop has read what it sent with its connection.
                self.loop.call_later(FIRST_READ_GRACE, self._close_oldest_waiting)

        def data_received(self, data: bytes) -> None:
            if self._awaits_headers():
                self._header_bytes += len(data)
            super().data_received(data)
            if not self._awaits_headers():
                self._header_bytes = 0
            elif self._header_bytes > MAX_HEADER_BYTES:
                self._refuse_headers_too_large()
                return
            self._watch_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch_headers()

        def connection_lost(self, exc) -> None:
            self._stop_watching()
            super().connection_lost(exc)

        def _close_oldest_waiting(self) -> None:
            if len(self.connections) > max_connections and waiting:
                oldest = next(iter(waiting))
                oldest._stop_watching()
                oldest.transport.close()

        def _awaits_headers(self) -> bool:
            # No request in flight (none yet, or its answer sent): the next bytes are a request's line and headers.
            return (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing()

        def _refuse_headers_too_large(self) -> None:
            self._stop_watching()
            detail = f'{{"detail": "the request line and headers are over {MAX_HEADER_BYTES} bytes"}}'.encode()
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(detail)}\r\nconnection: close\r\n\r\n".encode()
                + detail
            )
            self.transport.close()

        def _watch_headers(self) -> None:
            if not self._awaits_headers():
                self._stop_watching()
            elif self._headers_deadline is None:
                waiting[self] = None
                self._headers_deadline = self.loop.call_later(read_timeout, self._headers_late)

        def _stop_watching(self) -> None:
            waiting.pop(self, None)
            if self._headers_deadline is not None:
                self._headers_deadline.cancel()
                self._headers_deadline = None

        def _headers_late(self) -> None:
            late = self._awaits_headers()
            self._stop_watching()
            if late:
                self.transport.close()

    return GuardedHttpProtocol


def counting_epochs_from_one(bar_class: type) -> type:
    """Lightning's rich progress bar with epochs counted from 1, as the log lines and the fit summary count them
    (the bar counts from 0, and shows "Epoch 0/0" for a one-epoch run). Its text comes from a private method."""

    class CountingFromOne(bar_class):
        def _get_train_description(self, current_epoch: int) -> str:
            epochs = self.trainer.max_epochs
            return f"Epoch {current_epoch + 1}{f'/{epochs}' if epochs and epochs > 0 else ''}"

    return CountingFromOne


def continue_csv_metrics(writer, columns: list[str]) -> None:
    """Have Lightning's CSV writer add rows under the header ``columns`` of a ``metrics.csv`` put back in place,
    instead of writing a header of its own over them: the writer's ``metrics_keys`` (its class is private)."""
    writer.metrics_keys = list(columns)


def read_argument_error(message: str) -> SimpleNamespace:
    """What a jsonargparse error is about, read from its message (its errors carry no fields): ``unknown`` options
    of the command line, ``unknown_in_config`` (a key of a config file), else the setting ``key`` at fault, the
    types it ``wanted``, the value ``given`` and the message's first ``detail`` line. tests/test_errors.py has
    jsonargparse write each kind of message."""
    unknown = [word.partition("=")[0] for word in message.split()[2:] if word.startswith("-")]
    in_config = re.search(r"does not accept (?:nested key|option) '([^']+)'", message)
    key = re.match(r'Parser key "([^"]+)":', message)
    given = re.search(r"(?:Given|Got) value: (.*)", message)
    return SimpleNamespace(
        unknown=unknown if message.startswith("unrecognized arguments:") else [],
        unknown_in_config=in_config[1] if in_config else None,
        key=key[1] if key else None,
        wanted=sorted(set(re.findall(r"Expected an? <class '(\w+)'>", message)) - {"NoneType"}),
        given=given[1].strip() if given else None,
        detail=next((line.strip(" -") for line in message.splitlines()[1:] if line.strip(" -")), ""),
    )


def wandb_init_arguments(logger) -> dict:
    """The arguments Lightning's ``WandbLogger`` will hand ``wandb.init`` when it starts its run: changed to start
    it offline after an online start failed (the logger keeps them in a private dict; ``mode`` has no setter)."""
    return logger._wandb_init
