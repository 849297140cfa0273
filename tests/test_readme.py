"""Every code block of the README runs as written: the Python blocks, and the commands that need no Hub.

Where a block names the Hub's model or the real data, the tiny backbone and the fixture data stand in (the tests
cannot reach the Hub, and the real recipe takes minutes); a command that trains gets the tiny model and one epoch
after its own settings. The commands run in one folder, in the README's order, as a user would run them there.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
REAL_DATA = "../shared/data/emotion"
# Commands that set up an environment (the README's first two blocks; CI runs the second).
NOT_RUN = ("python3 -m venv", "pip install")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def commands(port: int = 8000) -> list[str]:
    """The README's commands, in order; those that reach the Hub (the reference recipe alone) left out."""
    lines = [line.split("  #")[0].strip() for block in blocks("bash") for line in block.splitlines()]
    lines = [line.replace("8000", str(port)) for line in lines if line and not line.startswith(("#", *NOT_RUN))]
    return [line for line in lines if not ("-c reference" in line and "-c offline" not in line)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny_bert, data_dir) -> Path:
    """A folder with the README's data path, and its tiny stand-ins."""
    folder = tmp_path_factory.mktemp("readme") / "main"
    folder.mkdir()
    (folder.parent / "shared" / "data").mkdir(parents=True)
    (folder.parent / "shared" / "data" / "emotion").symlink_to(data_dir)  # ../shared/data/emotion
    return folder


def stand_ins(text: str, tiny_bert: Path) -> str:
    return text.replace("sentence-transformers/all-MiniLM-L6-v2", str(tiny_bert)).replace(
        "max_epochs=3", "max_epochs=1"
    )


def run_command(command: str, folder: Path, tiny_bert: Path) -> None:
    """A README command in ``folder``: the package's own in this process (as its console script runs it), others
    in a shell."""
    from emotion_lightning.cli import main

    words = shlex.split(command)
    if words[0] != "emotion-lightning":
        subprocess.run(command, shell=True, cwd=folder, check=True, timeout=60)
        return
    if words[1] in ("fit", "tune"):
        # One epoch each; the README's `--ckpt_path last` continues that fit for one more (a finished run is refused).
        epochs = "2" if "last" in words else "1"
        words += [
            "--model.backbone",
            str(tiny_bert),
            "--trainer.max_epochs",
            epochs,
            "--trainer.log_every_n_steps",
            "5",
        ]
    if words[1] == "tune":
        words += ["--tune.trials", "1"]
    here = Path.cwd()
    os.chdir(folder)
    try:
        main(words[1:])
    finally:
        os.chdir(here)


@pytest.mark.slow
def test_the_readme_commands_run_as_written(folder, tiny_bert):
    from tests.test_serve import free_port

    port, ran = free_port(), []  # the README's port 8000 may be taken where the tests run
    for command in commands(port):
        if command.startswith("emotion-lightning serve") or command.startswith("curl"):
            continue  # below: the server runs while curl asks it
        run_command(command, folder, tiny_bert)
        ran.append(command.split()[1] if command.startswith("emotion-lightning") else command.split()[0])
    assert {"fit", "validate", "test", "predict", "export", "tune", "runs"} <= set(ran), ran
    predictions = (folder / "runs" / "offline" / "version_0" / "predictions").iterdir()
    assert any(path.name == "texts.csv" for path in predictions)
    assert (folder / "exported" / "README.md").is_file() and (folder / "exported" / "model.onnx").is_file()

    serving = next(command for command in commands(port) if command.startswith("emotion-lightning serve"))
    serving += f" --port {port}"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(shlex.split(serving), cwd=folder, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200:
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the README's server did not start"
                time.sleep(0.3)
        curl = next(command for command in commands(port) if command.startswith("curl"))
        answer = json.loads(subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=60).stdout)
        assert set(answer) == {"label", "score", "probabilities", "truncated"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
    assert server.returncode == 0


def test_the_readme_python_runs_as_written(folder, tiny_bert, tiny_checkpoint):
    from emotion_lightning.cli import main

    # What the README's first command leaves: a run's best checkpoint, and the folder `export` writes.
    best = folder / "runs" / "offline" / "version_0" / "checkpoints" / "best.ckpt"
    best.parent.mkdir(parents=True, exist_ok=True)
    best.write_bytes(tiny_checkpoint.read_bytes())
    if not (folder / "exported").exists():
        main(["export", str(best), str(folder / "exported")])
    python = blocks("python")
    assert len(python) == 3
    for code in python:
        done = subprocess.run(
            [sys.executable, "-c", stand_ins(code, tiny_bert)], cwd=folder, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{code}\n{done.stderr[-3000:]}"
