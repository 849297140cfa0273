"""The Optuna study of ``tune``: opened (created by one tuner alone), checked against its search space, shared by
tuners on several machines, and continued after a stop (a dead tuner's trials marked interrupted)."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from emotion_lightning.console import say
from emotion_lightning.processes import process_alive
from emotion_lightning.tune.space import TuneError, first_line

if TYPE_CHECKING:
    from emotion_lightning.tune.settings import TuneSettings

# A stopped tuner's trial counts as interrupted once it has sent no heartbeat for this long.
HEARTBEAT_SECONDS, GRACE_SECONDS = 2, 10


def report_to(trial):
    """A Lightning callback: each validation's ``val/acc`` goes to the trial, which may end as pruned.

    Made here rather than at module level: `tune --help` must not import Lightning.
    """
    import lightning as L
    import optuna

    class ReportToStudy(L.Callback):
        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking or "val/acc" not in trainer.callback_metrics:
                return
            trial.report(float(trainer.callback_metrics["val/acc"]), step=trainer.current_epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"val/acc {float(trainer.callback_metrics['val/acc']):.4f}")

    return ReportToStudy()


def open_study(settings: TuneSettings, space: dict):
    """The study in its storage, created if new; a study of the same name must have the same search space."""
    import optuna

    storage_url = settings.storage_url
    try:
        with _creating_alone(storage_url):
            return _open_study(optuna, storage_url, settings, space)
    except TuneError:
        raise
    except Exception as error:  # sqlalchemy and the database drivers raise many kinds
        raise TuneError(f"cannot open the study storage {storage_url}: {first_line(error)}") from None


@contextlib.contextmanager
def _creating_alone(storage_url: str):
    """For a SQLite file, one tuner at a time opens (and maybe creates) the study: two tuners creating one new
    database at once would each find the other's half-made tables. Servers handle this themselves."""
    if not storage_url.startswith("sqlite:///"):
        yield
        return
    import fcntl

    database = Path(storage_url.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(f"{database.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def interrupted_trial_callback():
    """What happens to a trial whose tuner stopped (killed, or its machine lost): said, and its values queued again."""
    import optuna

    class SayAndRetry(optuna.storages.RetryHeartbeatStaleTrialCallback):
        def __call__(self, study, trial) -> None:
            say(f"Trial {trial.number} was interrupted (its tuner stopped): marked failed, and its values tried again")
            super().__call__(study, trial)

    return SayAndRetry(max_retry=1)


def _open_study(optuna, storage_url: str, settings: TuneSettings, space: dict):
    storage = optuna.storages.RDBStorage(
        storage_url,
        heartbeat_interval=HEARTBEAT_SECONDS,
        grace_period=GRACE_SECONDS,
        heartbeat_stale_trial_callback=interrupted_trial_callback(),
    )
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    described = json.dumps(space, sort_keys=True)
    if study.user_attrs.get("search_space", described) != described:
        raise TuneError(
            f"study {settings.study_name!r} in {storage_url} was made with another search space; "
            "give another --tune.study_name, or the space it was made with"
        )
    study.set_user_attr("search_space", described)
    return study


def continue_study(study) -> None:
    """Trials of stopped tuners are marked failed and their values queued again, said one by one: at once for a
    tuner of this machine whose process is gone, after the heartbeat's grace period for one elsewhere."""
    import optuna

    for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
        host, _, pid = str(trial.user_attrs.get("tuner", "")).rpartition(":")
        if host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            interrupted_trial_callback()(study, trial)
    optuna.storages.fail_stale_trials(study)
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    if finished:
        say(f"Continuing study {study.study_name}: {len(finished)} trials finished")
