"""``emotion-lightning tune``: its settings, parsed by fit's parser, and the loop of trials."""

from __future__ import annotations

import os
import socket
import time
import warnings
from pathlib import Path

from emotion_lightning.console import say
from emotion_lightning.tune.results import report
from emotion_lightning.tune.settings import TuneSettings
from emotion_lightning.tune.space import TuneError, first_line, read_space, sample, without_typed_settings
from emotion_lightning.tune.study import continue_study, open_study, report_to


def parse(args: list[str]):
    """fit's settings and the study's, parsed and checked by fit's own parser; nothing is built (each trial is a
    fit of its own). Returns the study's settings and the YAML of fit's."""
    from emotion_lightning.cli.lightning import EmotionCLI
    from emotion_lightning.cli.settings import parser_rules
    from emotion_lightning.data import EmotionDataModule
    from emotion_lightning.model import EmotionClassifier
    from emotion_lightning.runs import HeldRunFolders

    class TuneCLI(EmotionCLI):
        help_subcommand = "tune"

        def add_arguments_to_parser(self, parser) -> None:
            super().add_arguments_to_parser(parser)
            parser.add_class_arguments(TuneSettings, "tune")
            # A trial keeps its best weights only (87 MiB for MiniLM), and a stopped one no last.ckpt: it is
            # tried again from the start.
            parser.set_defaults({"resume.keep_last_after_fit": False, "resume.save_on_sigterm": False})

        def before_instantiate_classes(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            pass

        def after_instantiate_classes(self) -> None:
            pass

    cli = TuneCLI(
        EmotionClassifier,
        EmotionDataModule,
        run=False,
        args=args[1:],
        started=time.monotonic(),
        run_folders=HeldRunFolders(),
        seed_everything_default=42,
        parser_kwargs={"prog": "emotion-lightning tune", **parser_rules()},
    )
    settings = TuneSettings(**cli.config.tune.as_dict())
    settings.check()
    fit_config = cli.config.clone()
    for key in ("tune", "config"):
        fit_config.pop(key, None)
    return settings, cli.parser.dump(fit_config, skip_check=True)


class TrialFailed(Exception):
    """A trial that could not finish (a diverging loss, a refused value, a full disk): marked FAIL with its
    reason, and the study goes on."""


def main(args: list[str]) -> None:
    """``emotion-lightning tune [fit settings] [--tune.SETTING VALUE ...]``"""
    try:
        import optuna
    except ImportError:
        raise TuneError("tune needs Optuna: pip install 'emotion-lightning[tune]' (or pip install optuna)") from None
    settings, fit_config = parse(args)
    space = read_space(settings.space)
    space = without_typed_settings(space, args[1:], settings.space)
    # Optuna's own lines about a failed trial carry its traceback; the tuner says each failure in one line.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # The heartbeat (how a stopped tuner's trial is found) is marked experimental: nothing for the user to do.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from emotion_lightning.runs import write_new_file

    study = open_study(settings, space)
    try:
        fit_file = write_new_file(settings.output / study.study_name, "fit-config.yaml", fit_config.encode())
        _optimize(optuna, study, space, settings, fit_file)
        report(study, settings, fit_config)
    except TuneError:
        raise
    except SIGTERMException:
        say(
            f"Stopped (SIGTERM): the same command continues study {study.study_name}, and tries the unfinished "
            "trial again"
        )
        raise SystemExit(143) from None
    except Exception as error:
        # The database refused a write (a full disk, a lost server); Optuna may raise its own error over it.
        cause = error
        while cause is not None and not _is_storage_error(optuna, cause):
            cause = cause.__context__
        if cause is None:
            raise
        raise TuneError(f"the study {settings.storage_url} could not be written: {first_line(cause)}") from None


def _is_storage_error(optuna, error: BaseException) -> bool:
    return isinstance(error, optuna.exceptions.StorageInternalError | OSError) or type(error).__module__.startswith(
        "sqlalchemy"
    )


def _optimize(optuna, study, space: dict, settings: TuneSettings, fit_file: Path) -> None:
    continue_study(study)
    trials_folder = settings.output / study.study_name
    started = time.monotonic()
    tuner = f"{socket.gethostname()}:{os.getpid()}"
    failures: list[str] = []  # the reasons of the trials failed in a row

    def objective(trial) -> float:
        from emotion_lightning.cli.lightning import run

        trial.set_user_attr("tuner", tuner)  # a trial left RUNNING by a process gone is known at once
        values = sample(trial, space)
        shown = ", ".join(
            f"{name} {value:.3g}" if isinstance(value, float) else f"{name} {value}" for name, value in values.items()
        )
        say(f"Trial {trial.number}: {shown}")
        overrides = [f"--{name}={value}" for name, value in values.items()]
        try:
            cli = run(
                ["fit", "-c", str(fit_file), *overrides, "--trainer.default_root_dir", str(trials_folder)],
                callbacks=[report_to(trial)],
            )
            trial.set_user_attr("run_folder", cli.trainer.default_root_dir)
            best = cli.trainer.checkpoint_callback.best_model_score
            if best is None:
                raise TuneError("the fit ran no validation, so it measured no val/acc")
        except optuna.TrialPruned:
            raise
        except Exception as error:  # a fit that fails is this trial's end, not the study's
            reason = first_line(error)
            trial.set_user_attr("failure", reason)
            say(f"Trial {trial.number} failed: {reason}")
            raise TrialFailed(reason) from None
        return float(best)

    def stop_after_failures(study, trial) -> None:
        if trial.state == optuna.trial.TrialState.FAIL and "failure" in trial.user_attrs:
            failures.append(trial.user_attrs["failure"])
        elif trial.state != optuna.trial.TrialState.FAIL:
            failures.clear()
        if len(failures) >= settings.max_failures:
            study.stop()

    budget = optuna.study.MaxTrialsCallback(
        settings.trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )
    study.optimize(
        objective,
        timeout=settings.timeout,
        callbacks=[budget, stop_after_failures],
        catch=(TrialFailed,),
        gc_after_trial=True,
    )
    say(f"Study {study.study_name}: {time.monotonic() - started:.0f} s in this tuner")
    if len(failures) >= settings.max_failures:
        report(study, settings, fit_file.read_text())
        raise TuneError(
            f"{len(failures)} trials in a row failed (--tune.max_failures), the study stops; the last: {failures[-1]}"
        )
