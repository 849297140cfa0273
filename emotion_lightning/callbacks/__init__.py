"""The Lightning callbacks of a run, one concern each.

- :class:`PredictionWriter` (prediction_writer.py): predict output that no crash or stop can lose
- :class:`EvaluationReports` (reports.py): per-class report, confusion matrix, mistakes
- :class:`ResumeCheckpoint` (resume.py): last.ckpt on SIGTERM and every N steps, exact resumption
- :class:`NonFiniteLossGuard` (loss_guard.py): stop before a NaN loss reaches the weights
- :class:`LineProgress`, :class:`RunSummary` (progress.py): progress lines in logs, what a fit made
- :class:`StopTogether` (stop_together.py): the processes of a validate, test or predict stop together
"""

from emotion_lightning.callbacks.loss_guard import NonFiniteLossError, NonFiniteLossGuard
from emotion_lightning.callbacks.prediction_writer import PredictionWriter, check_output_file
from emotion_lightning.callbacks.progress import BarWithLoss, LineProgress, RunSummary
from emotion_lightning.callbacks.reports import EvaluationReports
from emotion_lightning.callbacks.resume import ResumeCheckpoint, model_checkpoint
from emotion_lightning.callbacks.stop_together import StoppedTogether, StopTogether

__all__ = [
    "BarWithLoss",
    "EvaluationReports",
    "LineProgress",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "PredictionWriter",
    "ResumeCheckpoint",
    "RunSummary",
    "StopTogether",
    "StoppedTogether",
    "check_output_file",
    "model_checkpoint",
]
