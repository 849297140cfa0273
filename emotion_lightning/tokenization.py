"""Turn texts into token ids, cut by the tokenizer, in worker processes that end with their parent.

Large splits are tokenized by several processes, each on a contiguous shard. The workers die with the
process that started them, even when it is killed outright (SIGKILL): nothing keeps computing for a run
that is gone. Build folders that a killed run leaves in the cache are removed by the next run.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import os
import re
import shutil
import signal
import socket
import tempfile
import time
import uuid
from pathlib import Path

# Batch of texts handed to the tokenizer at once.
BATCH_SIZE = 2000
# A build folder of another machine (a shared cache) is only removed once it is this old.
FOREIGN_BUILD_SECONDS = 24 * 3600


# Texts longer than this many characters per token of max_length are cut (at a space) before tokenizing,
# once enough of them is known to be truncated: a 20 MB line must not become millions of token ids.
CHARACTERS_PER_TOKEN = 32


class Encoder:
    """Texts -> token ids cut at ``max_length`` by the tokenizer, their lengths, and whether each was cut
    (a ``datasets.map`` function)."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        texts, cut = zip(*map(self._beginning, batch["text"]), strict=True) if batch["text"] else ((), ())
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, return_overflowing_tokens=True, verbose=False
        )
        # With return_overflowing_tokens, a text that was cut comes back as several rows: the first is kept.
        input_ids, truncated = [], list(cut)
        for ids, text_index in zip(encoded["input_ids"], encoded["overflow_to_sample_mapping"], strict=True):
            if text_index < len(input_ids):
                truncated[text_index] = True
            else:
                input_ids.append(ids)
        return {"input_ids": input_ids, "length": [len(ids) for ids in input_ids], "truncated": truncated}

    def _beginning(self, text: str) -> tuple[str, bool]:
        """The text, or, for a very long one, a beginning of it (ending at a space) that already holds more
        than ``max_length`` tokens: the same first tokens, without tokenizing the rest. Says whether it was cut."""
        limit = self.max_length * CHARACTERS_PER_TOKEN
        while limit < len(text):
            end = max(text.rfind(space, 0, limit) for space in " \t\n")
            beginning = text[: end if end > 0 else limit]
            if len(self.tokenizer(beginning, add_special_tokens=False, verbose=False)["input_ids"]) > self.max_length:
                return beginning, True
            limit *= 4
        return text, False


def tokenize(rows, encoder: Encoder, processes: int = 1, progress: bool = True):
    """``rows`` (a ``datasets.Dataset`` with a ``text`` column) with ``input_ids``, ``length`` and ``truncated``.

    Several processes only for rows kept in files (the workers read them from there). ``progress``:
    show the library's progress bar (not for a few texts predicted from Python).
    """
    if processes > 1 and len(rows) >= processes and rows.cache_files:
        return _tokenize_in_processes(rows, encoder, processes)
    with _progress_bars(progress):
        return _map(rows, encoder, desc="Tokenizing")


def _map(rows, encoder: Encoder, **settings):
    # A fresh fingerprint, not a computed one: datasets would hash the whole tokenizer on every call (a third
    # of a second), and the result is cached by the data module under its own key anyway.
    return rows.map(encoder, batched=True, batch_size=BATCH_SIZE, new_fingerprint=uuid.uuid4().hex, **settings)


@contextlib.contextmanager
def _progress_bars(show: bool):
    import datasets

    hide = not show and not datasets.are_progress_bars_disabled()
    if hide:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if hide:
            datasets.enable_progress_bars()


# -- several processes ---------------------------------------------------------------------------


def _end_with_parent() -> None:
    """Worker start-up: die when the parent dies, and take SIGTERM / SIGINT as a plain process does."""
    # A forked worker inherits the parent's Python handlers (Lightning's SIGTERM handler only sets a
    # flag), which would keep it computing after a scheduler stopped the job.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the tokenizer's own threads, after a fork: off
    end_with_parent()


def end_with_parent() -> None:
    """Have this process killed when its parent dies, however the parent ends (SIGKILL too)."""
    try:
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the workers end when their parent closes them
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _tokenize_shard(rows, encoder: Encoder, processes: int, folder: str, index: int) -> str:
    shard = rows.shard(processes, index, contiguous=True)
    path = Path(folder) / f"shard-{index}"
    _map(shard, encoder).save_to_disk(str(path))
    return str(path)


def _tokenize_in_processes(rows, encoder: Encoder, processes: int):
    import datasets

    # Beside the rows' own file (a build's staging folder): removed with it. The rows go to the workers as
    # their file's name (a memory-mapped dataset pickles as that), the encoder as its tokenizer.
    folder = tempfile.mkdtemp(prefix="shards-", dir=Path(rows.cache_files[0]["filename"]).parent)
    job = functools.partial(_tokenize_shard, rows, encoder, processes, folder)
    with multiprocessing.get_context("fork").Pool(processes, initializer=_end_with_parent) as pool:
        paths = pool.map(job, range(processes))
    return datasets.concatenate_datasets([datasets.load_from_disk(path) for path in paths])


# -- build folders -------------------------------------------------------------------------------


def build_folder(cache_dir: Path, target_name: str) -> Path:
    """A new folder to build ``target_name`` in; its name says which machine and process builds it."""
    prefix = f".building-{target_name}-{socket.gethostname()}-{os.getpid()}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=cache_dir))


def remove_abandoned_builds(cache_dir: Path) -> None:
    """Remove build folders whose process is gone: on this machine, a process that no longer runs;
    from another machine (a shared cache), only folders older than a day. A live build is never touched."""
    host = socket.gethostname()
    for folder in cache_dir.glob(".building-*"):
        match = re.fullmatch(r"\.building-[0-9a-f]+-(?P<host>.+)-(?P<pid>\d+)-[^-]+", folder.name)
        if match is None:
            continue  # an older version's folder: its process cannot be known
        if match["host"] == host:
            abandoned = not process_alive(int(match["pid"]))
        else:
            abandoned = time.time() - folder.stat().st_mtime > FOREIGN_BUILD_SECONDS
        if abandoned:
            shutil.rmtree(folder, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (another user's counts as running; one that has ended but that
    its parent has not collected yet, a zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state after the command's name in /proc/PID/stat; Z (zombie) or X (dead) has ended
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")
