"""Prediction's forward pass in reduced precision: the classifier's weights copied once to bf16 (fp16 on CUDA), or
with the transformer's linear layers in int8 on a CPU, compiled where that pays, and run without autocast.

Under bf16 or fp16 autocast every call casts each fp32 weight again before its matrix product; a copy made once
does not. The copy follows the weights: it is made again when they change (training, ``load_state_dict``, a
move to another device). ``EmotionClassifier.probabilities`` uses it whenever prediction runs under autocast
(``EmotionPredictor``, ``emotion-lightning predict`` and the ``serve`` workers alike) and still redoes the texts
it is unsure of in fp32.

``int8``: ``True`` runs the transformer's linear layers in int8 (:mod:`emotion_lightning.int8`) and the rest in fp32,
in place of the bf16 copy, on a CPU; ``"auto"`` does so on the kinds of CPU where that was measured faster
(:data:`INT8_PAYS_ON`); ``False`` never.

``compile``: ``True`` compiles the copy with ``torch.compile`` (inductor, weights frozen into the code) at the
first call; ``"auto"`` compiles in a thread of its own while the eager copy answers, and switches to the compiled
code once it is built, on the kinds of CPU where that was measured faster (:data:`COMPILE_PAYS_ON`);
``False`` never compiles. PyTorch's inductor keeps what it compiled in its on-disk cache for the next process.
"""

from __future__ import annotations

import copy
import threading
import warnings

import torch

from emotion_lightning.compat import tensor_version
from emotion_lightning.cpu import this_cpu_kind
from emotion_lightning.errors import SettingError
from emotion_lightning.first_token import classifier_logits
from emotion_lightning.int8 import quantize_linear_layers

SWITCH_SETTINGS = ("auto", True, False)
# Kinds of CPU (emotion_lightning.cpu.cpu_kind) where the compiled copy was measured to predict faster than the eager
# one; elsewhere "auto" leaves it eager. None yet: on an AVX512-BF16 CPU without AMX (2 cores, MiniLM, 2,000 texts)
# compiled and eager ran alike (322-344 and 320-349 texts/s; 27 s to compile), with static shapes too; on an AVX2
# CPU without native bf16 (fp32 there) an fp32 copy compiled ran 216-246 texts/s against 218-248 eager, 100 s to
# compile. AMX machines were not measured (docs/performance.md).
COMPILE_PAYS_ON: tuple[str, ...] = ()
# Kinds of CPU where int8 linear layers were measured to predict faster than the bf16 copy, their labels equal to
# fp32's after the redo: on an AVX512-BF16 CPU with AVX512-VNNI, no AMX (2 cores, MiniLM, 2,000 texts, one process,
# 4 rounds interleaved): 554.6 texts/s against 470.9 (docs/performance.md). Not on AVX2 without VNNI: there
# torch._int_mm ran 1 GOP/s against fp32's 56 GFLOP/s (one thread, 1472x384x1536). AMX machines were not measured.
INT8_PAYS_ON: tuple[str, ...] = ("avx512_bf16",)


def check_switch_setting(value, name: str):
    """``auto``, ``true`` or ``false`` (strings from a command line or a YAML file too), as ``"auto"``, True, False."""
    if isinstance(value, str) and value.strip().lower() in ("auto", "true", "false"):
        value = {"auto": "auto", "true": True, "false": False}[value.strip().lower()]
    if value not in SWITCH_SETTINGS or isinstance(value, int) and not isinstance(value, bool):
        raise SettingError(f"{name} must be auto, true or false, got {value!r}")
    return value


def runs_int8(int8, device: torch.device, name: str = "int8") -> bool:
    """Whether prediction on ``device`` runs int8 linear layers, as the setting ``int8`` says."""
    if int8 is True and device.type != "cpu":
        raise SettingError(f"{name} true: int8 prediction runs on a CPU, and this model is on {device}")
    return int8 is True or int8 == "auto" and device.type == "cpu" and this_cpu_kind() in INT8_PAYS_ON


def _weights_key(model: torch.nn.Module) -> tuple:
    """Changes whenever a weight does: in-place updates raise a tensor's version, replacements change its storage."""
    return tuple((p.device, p.data_ptr(), tensor_version(p)) for p in model.parameters())


class ReducedPrecisionCopy:
    """A copy of a Hugging Face sequence classifier in ``dtype`` (or with int8 linear layers, the rest in fp32), for
    inference only, optionally compiled."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype, compile="auto", int8: bool = False):
        self.dtype = dtype
        self.int8 = int8
        self.key = _weights_key(model)
        # (deepcopy leaves out what nn.Module.compile added: a model compiled for training gives an eager copy)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        # Int8 products with fp32 around them: in bf16 the casts to and from the products cost what int8 saved.
        self.model = quantize_linear_layers(self.model.float()) if int8 else self.model.to(dtype)
        self.compile = compile
        # torch.compile builds the code at the first call it is given: true compiles there, in the caller's time.
        self._compiled = self._build() if compile is True else None
        device = next(model.parameters()).device
        self._compile_at_first_call = compile == "auto" and device.type == "cpu" and this_cpu_kind() in COMPILE_PAYS_ON
        self._background_done = threading.Event()
        self._background_done.set()

    @property
    def compiled(self) -> bool:
        """Whether calls now run compiled code."""
        return self._compiled is not None

    def wait_until_compiled(self) -> None:
        """Return once a compilation started in the background has ended (at once if none was started)."""
        self._background_done.wait()

    def matches(self, model: torch.nn.Module, dtype: torch.dtype, compile, int8: bool) -> bool:
        """Whether this copy is of ``model``'s weights as they are now, made with these settings."""
        settings = (dtype, compile, int8) == (self.dtype, self.compile, self.int8)
        return settings and _weights_key(model) == self.key

    def logits(self, batch: dict) -> torch.Tensor:
        """Logits of a packed batch (``packed``) or a padded one (``input_ids``, ``attention_mask``)."""
        if "packed" in batch:
            inputs = batch["packed"].model_inputs()
        else:
            inputs = (batch["input_ids"], batch["attention_mask"], None, None)
        if self._compile_at_first_call:
            self._compile_at_first_call = False
            self._compile_in_background(inputs)
        forward = self._compiled or self._forward
        with torch.autocast(inputs[0].device.type, enabled=False):
            return forward(*inputs)

    def _forward(self, input_ids, attention_mask, position_ids, starts) -> torch.Tensor:
        return classifier_logits(self.model, input_ids, attention_mask, position_ids, starts)

    # -- compilation ---------------------------------------------------------------------------------

    def _build(self):
        # Freezing folds the weights into the code as constants (the CPU's kernels get them pre-packed); rows and
        # batches vary in number and length, hence dynamic shapes from the first call.
        return torch.compile(self._forward, dynamic=True, options={"freezing": True})

    def _compile_in_background(self, inputs):
        """Build the compiled code in a thread with these inputs; calls go on eager until it is there."""
        self._background_done.clear()
        example = tuple(None if tensor is None else tensor.clone() for tensor in inputs)
        threading.Thread(target=self._warm_up, args=(example,), name="compile", daemon=True).start()

    def _warm_up(self, example):
        try:
            with torch.inference_mode():
                compiled = self._build()
                compiled(*example)
            self._compiled = compiled
        except Exception as error:  # the eager copy goes on answering: slower, not wrong
            warnings.warn(
                f"compiling the prediction path failed; it stays eager: {type(error).__name__}: {error}", stacklevel=1
            )
        finally:
            self._background_done.set()


def batch_device(batch: dict) -> torch.device:
    return batch["packed"].input_ids.device if "packed" in batch else batch["input_ids"].device
