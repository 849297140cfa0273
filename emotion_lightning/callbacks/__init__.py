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

# How the best checkpoint is kept: `checkpoints/best.ckpt`, by val/acc, the weights only (best.ckpt is for evaluating,
# predicting and exporting: weights, settings and tokenizer, a third of the size with the optimizer's state; resuming
# uses last.ckpt, kept by ResumeCheckpoint at every validation end). The command line's defaults and fit_callbacks().
BEST_CHECKPOINT_SETTINGS = {
    "monitor": "val/acc",
    "mode": "max",
    "save_top_k": 1,
    "save_last": False,
    "filename": "best",
    "auto_insert_metric_name": False,
    "enable_version_counter": False,
    "save_weights_only": True,
}


def fit_callbacks() -> list:
    """The callbacks ``emotion-lightning fit`` trains with, for a ``Trainer`` of your own: ``best.ckpt`` and
    ``last.ckpt`` named as the command line names them (in ``<log dir>/checkpoints``, which ``emotion-lightning runs``
    lists), ``last.ckpt`` on SIGTERM and Ctrl-C, and a NaN loss stopped before it reaches the weights::

        L.Trainer(max_epochs=3, callbacks=fit_callbacks()).fit(model, data)
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    return [ModelCheckpoint(**BEST_CHECKPOINT_SETTINGS), ResumeCheckpoint(), NonFiniteLossGuard()]


__all__ = [
    "BEST_CHECKPOINT_SETTINGS",
    "fit_callbacks",
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
