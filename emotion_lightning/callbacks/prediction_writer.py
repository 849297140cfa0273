"""Prediction output: a CSV with one row per input text, in input order, that no crash or stop can lose.

While predicting, each process appends its rows to a part file of its own run
(``<output>.<run>.part<rank>``, JSON lines, flushed after every batch). At the end the parts are merged
into the output (written beside it, then renamed into place) and only then removed. A run stopped by
SIGTERM keeps its part; the same command run again predicts only the texts that are not in it yet.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from emotion_lightning.callbacks.stop_together import StopTogether
from emotion_lightning.console import say
from emotion_lightning.errors import EmotionLightningError
from emotion_lightning.processes import process_alive

# Where predict writes by default: <run folder>/predictions/<predict file's name>.csv
PREDICTIONS_FOLDER = "predictions"


class PredictionOutputError(EmotionLightningError, OSError):
    """The prediction output cannot be written where the settings say."""


def check_output_file(path: Path, reads: Iterable[str | Path | None] = ()) -> None:
    """Fail now, before any prediction, if ``path`` cannot become the output file, or is a file the command
    reads (the texts, the checkpoint, a config): the output would replace it."""
    if path.is_dir():
        raise PredictionOutputError(
            f"prediction_writer.output_file {path} is a folder; give a file name, such as {path / 'predictions.csv'}"
        )
    for read in filter(None, reads):
        if path.exists() and Path(read).exists() and os.path.samefile(path, read):
            raise PredictionOutputError(
                f"prediction_writer.output_file {path} is {read}, which predict reads; writing there would "
                "replace it: give another file name"
            )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise PredictionOutputError(f"cannot write predictions to {path}: {error.strerror or error}") from None


def output_path(output_file: str | None, root: str | Path, predict_file: str | Path | None = None) -> Path:
    """``output_file``, else ``<root>/predictions/<predict file's name>.csv``, numbered (``-2``, ``-3``...)
    where an earlier prediction already finished there: a default output never replaces another."""
    if output_file:
        return Path(output_file)
    stem = Path(predict_file).stem if predict_file else "predictions"
    folder, number = Path(root) / PREDICTIONS_FOLDER, 1
    while (candidate := folder / (f"{stem}.csv" if number == 1 else f"{stem}-{number}.csv")).exists():
        number += 1
    return candidate


def _shown(rows: dict[int, list], at_most: int = 20) -> str:
    """A few predictions, one line each (label, score, text) in input order; for more, how many of each label."""
    if len(rows) <= at_most:
        lines = (
            f"{label:<9} {max(probabilities):.3f}  {text}" for _, (text, label, *probabilities) in sorted(rows.items())
        )
    else:
        counts = collections.Counter(label for _, label, *_ in rows.values())
        lines = (f"{label:<9} {count}" for label, count in counts.most_common())
    return "".join(f"\n  {line}" for line in lines)


def _job_fingerprint(texts: list[str], model: L.LightningModule, max_length: int | None) -> str:
    """What a part file's rows depend on: the texts, where they are cut, and the model's weights."""
    digest = hashlib.sha256(f"max_length={max_length}\0".encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _writer_alive(part: Path) -> bool:
    """Whether the process that named this part file (``<output>.<pid>-<id>.part<rank>``) still runs here."""
    try:
        pid = int(part.suffixes[-2].lstrip(".").split("-")[0])
    except (ValueError, IndexError):
        return False
    return process_alive(pid)


def read_part(path: Path) -> tuple[str | None, dict[int, list]]:
    """A part file's job fingerprint and its rows by input index; a torn last line is ignored."""
    rows, fingerprint = {}, None
    with path.open(encoding="utf-8") as part:
        for number, line in enumerate(part):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line a killed process was writing
            if number == 0 and isinstance(record, dict):
                fingerprint = record.get("job")
            elif isinstance(record, list):
                rows[record[0]] = record[1:]
    return fingerprint, rows


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` results to ``output_file`` (CSV: text, label, score, one column per class).

    Args:
        output_file: where the CSV goes (default: predictions/<predict file's name>.csv in the checkpoint's run
            folder). It never replaces an earlier one.
    """

    def __init__(self, output_file: str | None = None):
        super().__init__(write_interval="batch")
        self.output_file = output_file
        self._part = None
        self._run_name = ""
        self._part_path: Path | None = None
        self._fingerprint: str | None = None
        self._earlier_rows: dict[int, list] = {}

    def _stopped_parts(self, output: Path) -> list[Path]:
        """Part files of earlier runs into ``output`` whose process is gone (stopped or killed)."""
        return [path for path in sorted(output.parent.glob(f"{output.name}.*.part*")) if not _writer_alive(path)]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        predict_file = getattr(trainer.datamodule, "predict_file", None)
        self._output = output_path(self.output_file, trainer.default_root_dir, predict_file)
        check_output_file(self._output)
        # One name for this run's parts on every process: runs into the same output never share a part.
        self._run_name = trainer.strategy.broadcast(f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self._part_path = self._part_of_rank(self._output, trainer.global_rank)
        self._fingerprint = None
        self._earlier_rows = {}

    def predicted_before(self, trainer: L.Trainer) -> set[int]:
        """The input positions that stopped runs of this same job (texts, ``max_length`` and weights) already
        predicted; the data module asks when it builds the predict loader, once the weights are loaded."""
        texts = trainer.datamodule.predict_texts_in_order()
        self._fingerprint = _job_fingerprint(texts, trainer.lightning_module, trainer.datamodule.max_length)
        self._earlier_rows = self._rows_of_stopped_runs(self._output)
        if self._earlier_rows:
            say(f"Continuing a stopped prediction: {len(self._earlier_rows)} of {len(texts)} texts are done")
        return set(self._earlier_rows)

    def _part_of_rank(self, output: Path, rank: int) -> Path:
        return output.with_name(f"{output.name}.{self._run_name}.part{rank}")

    def _rows_of_stopped_runs(self, output: Path) -> dict[int, list]:
        rows: dict[int, list] = {}
        for path in self._stopped_parts(output):
            fingerprint, part_rows = read_part(path)
            if fingerprint == self._fingerprint:
                rows.update(part_rows)
        return rows

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._part = self._part_path.open("w", encoding="utf-8")
        self._part.write(json.dumps({"job": self._fingerprint}) + "\n")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        rows = zip(
            prediction["index"].tolist(),
            batch["text"],
            prediction["labels"],
            prediction["probabilities"].tolist(),
            strict=True,
        )
        # JSON escapes every character that could break a line or a field: no text can spoil the file.
        self._part.writelines(
            json.dumps([index, text, label, *probabilities]) + "\n" for index, text, label, probabilities in rows
        )
        self._part.flush()

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._part.close()
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            self._merge_parts(trainer, pl_module.labels)
        trainer.strategy.barrier()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self._part is None or not self._part_path.is_file():  # nothing written yet, or merged already
            return
        self._part.close()  # closed already when every batch was done (the failure was at the end)
        done = len(read_part(self._part_path)[1])
        stop = StopTogether.of(trainer)
        stopped = stop.why_stopped(exception) if stop is not None else None
        if stopped is not None:  # SIGTERM, or a peer gone: every process says what it kept
            say(
                f"{stopped.reason}: stopped after {done} predictions, kept in {self._part_path}. "
                "Run the same command again to predict the rest.",
                every_process=True,
            )
        elif done:
            say(f"The {done} predictions made before the error are kept in {self._part_path}", every_process=True)

    def _merge_parts(self, trainer: L.Trainer, labels) -> None:
        output = self._output
        this_run = [self._part_of_rank(output, rank) for rank in range(trainer.world_size)]
        rows = dict(self._earlier_rows)
        predicted_now = set()
        for path in this_run:
            # A distributed sampler repeats a few inputs to even out the ranks: keep one of each.
            part_rows = read_part(path)[1]
            predicted_now.update(part_rows)
            rows.update(part_rows)
        partial = output.with_name(f"{output.name}.{self._run_name}.writing")
        with partial.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["text", "label", "score", *(f"prob_{label}" for label in labels)])
            for index in sorted(rows):
                text, label, *probabilities = rows[index]
                writer.writerow([text, label, *(f"{p:.6f}" for p in (max(probabilities), *probabilities))])
        os.replace(partial, output)
        # Only once the output is in place: this run's parts, and those of stopped runs of the same job.
        finished = this_run + [
            path
            for path in self._stopped_parts(output)
            if self._fingerprint and read_part(path)[0] == self._fingerprint
        ]
        for path in finished:
            path.unlink(missing_ok=True)
        continued = f" ({len(predicted_now)} predicted by this run)" if self._earlier_rows else ""
        say(f"Wrote {len(rows)} predictions to {output}{continued}" + _shown(rows))
