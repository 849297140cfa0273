"""`emotion-lightning tune`: an Optuna study of ordinary `fit` runs on validation accuracy, resumable and shared.

    emotion-lightning tune -c reference -c offline --tune.trials 20

The settings are fit's (parsed and checked by fit's parser) and the study's (``--tune.*``). Every trial is a `fit`
of those settings (written once as ``<tune.output>/<study>/fit-config.yaml``) with the search space's values on
top, into a run folder of its own under ``<tune.output>/<study>/``. Each validation reports ``val/acc`` to the
study, which prunes hopeless trials (median pruner). The study lives in a database (SQLite by default; any SQL
server Optuna takes), so that a stopped tuner continues where it was with the same command, and tuners on several
machines share one study.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from emotion_lightning.config_files import read_yaml_file
from emotion_lightning.console import say
from emotion_lightning.errors import EmotionLightningError, SettingError, check_at_least
from emotion_lightning.settings import recipe_path
from emotion_lightning.tokenization import process_alive

KINDS = ("float", "int", "categorical")
PLAIN_VALUES = (str, int, float, bool, type(None))
# A stopped tuner's trial counts as interrupted once it has sent no heartbeat for this long.
HEARTBEAT_SECONDS, GRACE_SECONDS = 2, 10


class TuneError(EmotionLightningError, ValueError):
    """A study that cannot be run as asked."""


@dataclass
class TuneSettings:
    """The study's settings (``--tune.*``); fit's settings apply to every trial.

    Args:
        trials: trials to finish (completed or pruned), counting those of earlier runs of the study
        space: the search space, a YAML file or the name of a shipped one (default: tune)
        storage: the study's database (default sqlite:///<output>/study.db; any SQL URL Optuna takes)
        study_name: the study's name (a name, not a path)
        timeout: seconds after which no new trial starts
        output: the trials' run folders, and each study's best.yaml and plots
        max_failures: trials failed in a row after which the study stops
    """

    trials: int = 20
    space: str = "tune"
    storage: str | None = None
    study_name: str = "emotion-lightning"
    timeout: float | None = None
    output: Path = Path("runs/tune")
    max_failures: int = 3

    def check(self) -> None:
        """One line for a setting that cannot work, before anything is opened or written."""
        check_at_least("--tune.trials", self.trials, 1)
        check_at_least("--tune.max_failures", self.max_failures, 1)
        if self.timeout is not None and not 0 < self.timeout < math.inf:
            raise SettingError(f"--tune.timeout must be a number of seconds more than 0, got {self.timeout}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", self.study_name):
            raise SettingError(
                f"--tune.study_name must be a name (letters, digits, '.', '_' and '-', at most 100), not a path: "
                f"got {self.study_name!r}"
            )
        if self.storage is not None and re.fullmatch(r"sqlite:///?(:memory:)?(\?.*)?", self.storage):
            raise SettingError(
                f"--tune.storage {self.storage} keeps the study in memory: it could not be continued or shared; "
                "give a file (sqlite:///runs/tune/study.db) or a database server"
            )

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.output / 'study.db'}"


def parse(args: list[str]):
    """fit's settings and the study's, parsed and checked by fit's own parser; nothing is built (each trial is a
    fit of its own). Returns the study's settings and the YAML of fit's."""
    from emotion_lightning.data import EmotionDataModule
    from emotion_lightning.lightning_cli import EmotionCLI
    from emotion_lightning.model import EmotionClassifier
    from emotion_lightning.runs import HeldRunFolders
    from emotion_lightning.settings import parser_rules

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


def read_space(name: str) -> dict[str, dict]:
    """The search space: fit setting -> {type, low, high, log, step} or {type: categorical, choices}, checked
    whole (every problem named, one line each) before any study storage is touched."""
    path = Path(recipe_path(name))
    if not path.is_file():
        raise SettingError(f"search space {path} does not exist (--tune.space)")
    space = read_yaml_file(path, "a YAML search space") or {}
    if not isinstance(space, dict) or not space:
        raise SettingError(f"{path}: a search space maps fit settings to ranges, such as model.learning_rate")
    problems = [f"{path}: {name}: {problem}" for name, spec in space.items() for problem in _problems(name, spec)]
    if len(problems) > 1:
        raise SettingError("the search space cannot be used:\n  " + "\n  ".join(problems))
    if problems:
        raise SettingError(problems[0])
    return space


def without_typed_settings(space: dict[str, dict], args: list[str], where: str) -> dict[str, dict]:
    """The search space less the settings typed on the command line (``--trainer.max_epochs 1``): the user's value
    holds in every trial, said in one line each; the study is of what is left."""
    typed = {arg[2:].partition("=")[0] for arg in args if arg.startswith("--")}
    for name in sorted(typed & set(space)):
        say(f"{name}: the value given on the command line, in every trial (not searched, though {where} has it)")
    left = {name: spec for name, spec in space.items() if name not in typed}
    if not left:
        raise TuneError(f"every parameter of the search space {where} is given on the command line: nothing to search")
    return left


def _problems(name: object, spec: object) -> list[str]:
    import lightning as L

    from emotion_lightning.data import EmotionDataModule
    from emotion_lightning.model import EmotionClassifier

    owners = {"model": EmotionClassifier, "data": EmotionDataModule, "trainer": L.Trainer}
    group, _, setting = str(name).partition(".")
    if group not in owners or setting not in inspect.signature(owners[group].__init__).parameters:
        return ["not a fit setting (model.*, data.* or trainer.*)"]
    if not isinstance(spec, dict) or spec.get("type") not in KINDS:
        return [f"needs a type, one of {', '.join(KINDS)}"]
    kind = spec["type"]
    allowed = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}}.get(kind, {"choices"})
    problems = [f"{key!r} is not a key of a {kind} range" for key in spec if key not in allowed | {"type"}]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            return [*problems, "choices must be a list of at least one value"]
        return problems + [f"choice {c!r} is not a plain value" for c in choices if not isinstance(c, PLAIN_VALUES)]
    number = int if kind == "int" else (int, float)
    for key in ("low", "high"):
        if key not in spec:
            problems.append(f"needs {key}")
        elif not isinstance(spec[key], number) or isinstance(spec[key], bool) or not math.isfinite(spec[key]):
            problems.append(f"{key} must be {'an integer' if kind == 'int' else 'a number'}, got {spec[key]!r}")
    if problems:
        return problems
    if spec["low"] > spec["high"]:
        problems.append(f"low {spec['low']} is more than high {spec['high']}")
    if spec.get("log", False) not in (True, False):
        problems.append(f"log must be true or false, got {spec['log']!r}")
    elif spec.get("log") and spec["low"] <= 0:
        problems.append(f"a log range needs low more than 0, got {spec['low']}")
    if "step" in spec and (not isinstance(spec["step"], number) or isinstance(spec["step"], bool) or spec["step"] <= 0):
        problems.append(f"step must be more than 0, got {spec['step']!r}")
    elif "step" in spec and spec.get("log"):
        problems.append("a range takes log or step, not both")
    return problems


def sample(trial, space: dict[str, dict]) -> dict[str, object]:
    """One value per parameter, as Optuna suggests it."""
    values = {}
    for name, spec in space.items():
        if spec["type"] == "float":
            low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
            values[name] = trial.suggest_float(name, low, high, log=log, step=step)
        elif spec["type"] == "int":
            log = spec.get("log", False)
            values[name] = trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1), log=log)
        else:
            values[name] = trial.suggest_categorical(name, spec["choices"])
    return values


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
        raise TuneError(f"cannot open the study storage {storage_url}: {_first_line(error)}") from None


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


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


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
        raise TuneError(f"the study {settings.storage_url} could not be written: {_first_line(cause)}") from None


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
        from emotion_lightning.lightning_cli import run

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
            reason = _first_line(error)
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


def report(study, settings: TuneSettings, fit_config: str) -> None:
    """The table of trials; in ``<output>/<study>/``, the best trial's preset as a YAML that composes and the
    plots, each a new file (an earlier one is kept: ``best-2.yaml``, ...)."""
    import optuna

    from emotion_lightning.runs import write_new_file

    rows = []
    for trial in study.get_trials():
        took = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete else None
        values = "  ".join(
            f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
            for name, value in trial.params.items()
        )
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        failure = f"  ({trial.user_attrs['failure']})" if "failure" in trial.user_attrs else ""
        rows.append(
            f"  {trial.number:>4}  {trial.state.name:<8}  {value:>7}  {f'{took:.0f} s' if took else '-':>7}  "
            f"{values}{failure}"
        )
    say("Trials (number, state, best val/acc, time, values):\n" + "\n".join(rows))
    completed = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        return
    best = study.best_trial
    preset = {}
    for name, value in best.params.items():
        group, _, setting = name.partition(".")
        preset.setdefault(group, {})[setting] = value
    folder = settings.output / study.study_name
    # The settings that shaped the score but are not part of the recipe (quarter epochs, say): noted, not set.
    trainer = yaml.safe_load(fit_config).get("trainer", {})
    limits = {name: value for name, value in trainer.items() if name.startswith("limit_") and value not in (None, 1.0)}
    if trainer.get("max_steps", -1) not in (None, -1):
        limits["max_steps"] = trainer["max_steps"]
    measured_with = " ".join(f"--trainer.{name} {value}" for name, value in limits.items())
    header = (
        f"# The best trial of study {study.study_name} (trial {best.number}, val/acc {best.value:.4f}, "
        f"{len(completed)} trials completed"
        + (f"; measured with {measured_with}" if measured_with else "")
        + "). Compose it after the configs it was tuned with:\n"
        f"#   emotion-lightning fit -c reference -c offline -c {folder / 'best.yaml'}\n"
    )
    path = write_new_file(folder, "best.yaml", (header + yaml.safe_dump(preset, sort_keys=True)).encode())
    say(f"Best trial {best.number}: val/acc {best.value:.4f}; its settings: {path}")
    _plots(study, folder, len(completed))


def _plots(study, folder: Path, completed: int) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    from emotion_lightning.runs import write_new_file

    for name, plot in (
        ("val_acc_by_trial.png", plot_optimization_history),
        ("importances.png", plot_param_importances),
    ):
        try:
            with warnings.catch_warnings():  # "too few trials": said in the plot's title instead
                warnings.simplefilter("ignore", UserWarning)
                axes = plot(study)
        except (RuntimeError, ValueError) as error:  # importances need two completed trials that differ
            say(f"No {name}: {error}")
            continue
        if name == "val_acc_by_trial.png":
            axes.set_ylabel("best val/acc of the trial")
        else:  # from a handful of trials, importances are mostly noise
            # In Optuna's own place for a title (left): a centred one was drawn over it.
            axes.set_title(
                f"Importance for val/acc\nfrom {completed} completed trials"
                + (" (few: a rough guide)" if completed < 10 else ""),
                loc="left",
                fontsize=10,
            )
        axes.figure.tight_layout()
        image = io.BytesIO()
        axes.figure.savefig(image, format="png", dpi=100)
        plt.close(axes.figure)
        say(f"Wrote {write_new_file(folder, name, image.getvalue())}")
