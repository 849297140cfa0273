"""A model worker process of ``emotion-lightning serve``: it loads the model once, says it is ready (or why not),
then predicts each batch of requests the server sends over its pipe, until the pipe closes."""

from __future__ import annotations

import os
import signal
import traceback
from dataclasses import dataclass
from pathlib import Path

from emotion_lightning.serve.openapi import PREDICTION_FIELDS


@dataclass(frozen=True)
class WorkerSettings:
    """How each worker loads the model (a checkpoint or an exported folder); ``workers`` share a CPU's cores."""

    model: Path
    accelerator: str
    precision: str
    batch_size: int
    workers: int = 1
    pack: bool | None = None
    compile: str = "auto"
    int8: str = "auto"
    verbose: bool = False  # the libraries' notices shown (`serve --verbose`)


def worker_main(connection, settings: WorkerSettings) -> None:
    """The worker process: load the model, say ready (or why not), then answer batches until the pipe closes."""
    # Before torch loads OpenMP: threads that wait for the others at the end of a parallel region sleep rather than
    # spin. Spinning took the core a busy neighbour process shared with a worker thread, and the parallel regions
    # then ran at the pace of that thread: with one core busy, 38 texts/s spinning, 194 without (2-core CPU,
    # 64 clients; alone 304 spinning, 300 and 312 without: no cost; docs/performance.md). A user's own setting stands.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by OpenMP when it starts: torch has no call for it
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    from emotion_lightning.processes import end_with_parent

    end_with_parent()
    from emotion_lightning.console import set_up_messages

    set_up_messages(settings.verbose, show=False)  # the server says what the workers do
    try:
        predictor = _load(settings, connection)
        while predictor is not None:
            connection.send(_answers(predictor, connection.recv()))
    except (EOFError, BrokenPipeError):  # the server closed the pipe: it is stopping
        return


def _load(settings: WorkerSettings, connection):
    """The predictor, after saying ready with its labels and max_length; None after saying why not."""
    from emotion_lightning.errors import EmotionLightningError

    try:
        import torch

        from emotion_lightning.cpu import usable_cores
        from emotion_lightning.predictor import EmotionPredictor

        if settings.accelerator == "cuda" and not torch.cuda.is_available():
            raise EmotionLightningError(
                "--accelerator cuda: no CUDA GPU is visible here; give --accelerator cpu (or auto)"
            )
        device = "cuda" if settings.accelerator != "cpu" and torch.cuda.is_available() else "cpu"
        if device == "cpu":  # workers that share the cores: more threads than cores makes each step slower
            torch.set_num_threads(max(1, usable_cores() // settings.workers))
        predictor = EmotionPredictor.load(
            settings.model,
            device=device,
            precision=settings.precision,
            batch_size=settings.batch_size,
            pack=settings.pack,
            compile=settings.compile,
            int8=settings.int8,
        )
        predictor.warm_up()  # ready means ready to answer at full speed: the fast path built (and compiled)
    except EmotionLightningError as error:  # the user's to fix: said as it is
        connection.send(("refused", str(error)))
        return None
    except Exception as error:  # a bug: its traceback on the server's stderr, its one line to the server
        traceback.print_exc()
        connection.send(("failed", f"{type(error).__name__}: {error}"))
        return None
    info = {
        "labels": list(predictor.labels),
        "max_length": predictor.max_length,
        "device": str(predictor.device),
        "threads": torch.get_num_threads() if predictor.device.type == "cpu" else None,
        "compiled": predictor.compiled,
        "int8": predictor.runs_int8,
    }
    connection.send(("ready", info))
    return predictor


def _answers(predictor, requests: list[list[str]]) -> list[list[dict] | str]:
    """Each request's predictions, or the message of what failed; a failing batch is redone one request at a
    time, so that no request fails another."""
    try:
        predictions = iter(predictor([text for texts in requests for text in texts]))
        return [[_answer(next(predictions)) for _ in texts] for texts in requests]
    except Exception as error:
        if len(requests) == 1:
            return [f"the model failed on this request ({type(error).__name__}: {error})"]
        return [_answers(predictor, [texts])[0] for texts in requests]


def _answer(prediction) -> dict:
    return {name: getattr(prediction, name) for name in PREDICTION_FIELDS}
