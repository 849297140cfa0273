"""The on-disk cache of tokenized splits: where it is, what its key is made of, and the folders it is built in
(renamed into place when complete, and removed when the process that built them is gone)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

from emotion_lightning.processes import process_alive

# Bump when the cached layout changes, so that stale caches are not reused.
CACHE_FORMAT = 4
# A build folder of another machine (a shared cache) is taken as abandoned after this long.
FOREIGN_BUILD_SECONDS = 24 * 3600


def default_cache_dir() -> Path:
    """Where tokenized splits are kept: $EMOTION_LIGHTNING_CACHE, else ~/.cache/emotion_lightning."""
    return Path(os.environ.get("EMOTION_LIGHTNING_CACHE", Path.home() / ".cache" / "emotion_lightning"))


def source_fingerprint(dataset_name: str, dataset_config: str | None, split_files: dict[str, Path]) -> str:
    """What the data is, as a hash: its name on the Hub, and every byte of the local split files."""
    digest = hashlib.sha256(f"hub:{dataset_name}:{dataset_config}".encode())
    for split, path in sorted(split_files.items()):
        digest.update(f"{split}:{path.name}:".encode())
        with path.open("rb") as file:
            while block := file.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def cache_folder(cache_dir: Path, *key) -> Path:
    """The folder of the splits tokenized from these inputs (data, tokenizer, settings): same inputs, same folder."""
    return cache_dir / hashlib.sha256(json.dumps([CACHE_FORMAT, *key]).encode()).hexdigest()[:20]


def tokenizer_fingerprint(tokenizer) -> str:
    """What the tokenizer does, as a hash: its vocabulary and rules, not its state."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        described = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    else:
        # Truncation and padding state change when the tokenizer is called: not part of its identity.
        described = json.loads(backend.to_str())
        described.pop("truncation", None)
        described.pop("padding", None)
        described = json.dumps(described, sort_keys=True)
    return hashlib.sha256(described.encode()).hexdigest()


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


def put_in_place(building: Path, target: Path) -> None:
    """Mark a build folder complete and rename it to ``target``; where another process's complete build is there
    already, that one stays (the caller removes its own)."""
    (building / "complete").write_text(json.dumps(sorted(path.name for path in building.iterdir())))
    if target.is_dir() and not (target / "complete").is_file():
        shutil.rmtree(target)  # left by a run of an older version that was killed
    try:
        building.rename(target)
    except OSError:
        if not (target / "complete").is_file():
            raise
