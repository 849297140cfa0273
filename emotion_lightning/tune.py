"""`emotion-lightning tune`: an Optuna study of ordinary `fit` runs on validation accuracy, resumable and shared.

    emotion-lightning tune -c configs/reference.yaml -c configs/offline.yaml --tune.trials 20

Every trial is a `fit` with the configs given, the search space's values on top, into a run folder of its own
under ``<tune.output>/<study>/``. Each validation reports ``val/acc`` to the study, which prunes hopeless trials
(median pruner). The study lives in a database (SQLite by default; any SQL server Optuna takes), so that a
stopped tuner continues where it was with the same command, and tuners on several machines share one study.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from emotion_lightning.console import say
from emotion_lightning.errors import EmotionLightningError, SettingError

DEFAULT_SPACE = Path(__file__).parents[1] / "configs" / "tune.yaml"
KINDS = ("float", "int", "categorical")
# A stopped tuner's trial counts as interrupted once it has sent no heartbeat for this long.
HEARTBEAT_SECONDS, GRACE_SECONDS = 2, 10


class TuneError(EmotionLightningError, ValueError):
    """A study that cannot be run as asked."""


@dataclass
class TuneSettings:
    trials: int = 20
    storage: str | None = None  # default sqlite:///<output>/study.db
    study_name: str = "emotion-lightning"
    timeout: float | None = None
    space: Path = DEFAULT_SPACE
    output: Path = Path("runs/tune")


def split_arguments(argv: list[str]) -> tuple[TuneSettings, list[str]]:
    """``--tune.X value`` / ``--tune.X=value`` settings, and the rest (the fit arguments)."""
    settings, rest, position = TuneSettings(), [], 0
    names = {name: type(value) for name, value in vars(TuneSettings()).items()}
    while position < len(argv):
        argument = argv[position]
        if not argument.startswith("--tune."):
            rest.append(argument)
            position += 1
            continue
        name, equals, value = argument.removeprefix("--tune.").partition("=")
        if name not in names:
            raise SettingError(f"--tune.{name} is not a tune setting; the settings are {', '.join(names)}")
        if not equals:
            position += 1
            if position == len(argv):
                raise SettingError(f"--tune.{name} needs a value")
            value = argv[position]
        position += 1
        try:
            converted = {"trials": int, "timeout": float, "space": Path, "output": Path}.get(name, str)(value)
        except ValueError:
            raise SettingError(f"--tune.{name} must be a number, got {value!r}") from None
        setattr(settings, name, converted)
    if settings.trials < 1:
        raise SettingError(f"--tune.trials must be at least 1, got {settings.trials}")
    return settings, rest


def read_space(path: Path) -> dict[str, dict]:
    """The search space: fit setting -> {type, low, high, log, step} or {type: categorical, choices}."""
    if not path.is_file():
        raise SettingError(f"search space {path} does not exist (--tune.space)")
    space = yaml.safe_load(path.read_text()) or {}
    if not isinstance(space, dict) or not space:
        raise SettingError(f"{path}: a search space maps fit settings to ranges, such as model.learning_rate")
    for name, spec in space.items():
        _check_parameter(path, name, spec)
    return space


def _check_parameter(path: Path, name: str, spec: object) -> None:
    import lightning as L

    from emotion_lightning.data import EmotionDataModule
    from emotion_lightning.lightning_cli import EmotionCLI
    from emotion_lightning.model import EmotionClassifier

    owners = {"model": EmotionClassifier, "data": EmotionDataModule, "trainer": L.Trainer}
    group, _, setting = str(name).partition(".")
    if group not in owners or setting not in inspect.signature(owners[group].__init__).parameters:
        raise SettingError(f"{path}: {name} is not a fit setting (model.*, data.* or trainer.*)")
    if setting in EmotionCLI.LINKED:
        raise SettingError(f"{path}: {name} is set through the model's setting of the same name")
    if not isinstance(spec, dict) or spec.get("type") not in KINDS:
        raise SettingError(f"{path}: {name} needs a type, one of {', '.join(KINDS)}")
    needed = ("choices",) if spec["type"] == "categorical" else ("low", "high")
    if missing := [key for key in needed if key not in spec]:
        raise SettingError(f"{path}: {name} ({spec['type']}) needs {' and '.join(missing)}")


def sample(trial, space: dict[str, dict]) -> dict[str, object]:
    """One value per parameter, as Optuna suggests it."""
    values = {}
    for name, spec in space.items():
        if spec["type"] == "float":
            values[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False))
        elif spec["type"] == "int":
            values[name] = trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1))
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

    storage_url = settings.storage or f"sqlite:///{settings.output / 'study.db'}"
    try:
        with _creating_alone(storage_url):
            return _open_study(optuna, storage_url, settings, space)
    except TuneError:
        raise
    except Exception as error:  # sqlalchemy and the database drivers raise many kinds
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TuneError(f"cannot open the study storage {storage_url}: {first_line}") from None


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


def _open_study(optuna, storage_url: str, settings: TuneSettings, space: dict):
    storage = optuna.storages.RDBStorage(
        storage_url,
        heartbeat_interval=HEARTBEAT_SECONDS,
        grace_period=GRACE_SECONDS,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
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
    """Trials of stopped tuners (no heartbeat for a while) are marked failed and queued again; says which."""
    import optuna

    before = {trial.number for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)
    failed = [t for t in study.get_trials(states=(optuna.trial.TrialState.FAIL,)) if t.number in before]
    for trial in failed:
        say(f"Trial {trial.number} was interrupted (its tuner stopped): marked failed, and its values tried again")
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    if finished:
        say(f"Continuing study {study.study_name}: {len(finished)} trials finished")


TUNE_HELP = """usage: emotion-lightning tune [-h] [-c CONFIG ...] [--FIT_SETTING VALUE ...] [--tune.SETTING VALUE ...]

An Optuna study of `fit` runs on validation accuracy. The fit settings (configs and --SETTING VALUE, as for
`emotion-lightning fit`) apply to every trial; the search space's values go on top.

tune settings:
  --tune.trials N          trials to finish (completed or pruned), counting those of earlier runs (default 20)
  --tune.space FILE        the search space (default configs/tune.yaml)
  --tune.storage URL       the study's database (default sqlite:///<output>/study.db; any SQL URL Optuna takes)
  --tune.study_name NAME   the study (default emotion-lightning)
  --tune.timeout SECONDS   stop starting trials after this long
  --tune.output FOLDER     trials' run folders, best.yaml and the plots (default runs/tune)
"""


def main(argv: list[str]) -> None:
    """``emotion-lightning tune [fit arguments] --tune.trials N ...``"""
    if any(argument in ("-h", "--help") for argument in argv):
        print(TUNE_HELP, end="")
        return
    settings, fit_arguments = split_arguments(argv)
    space = read_space(settings.space)
    try:
        import optuna
    except ImportError:
        raise TuneError("tune needs Optuna: pip install 'emotion-lightning[tune]' (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The heartbeat (how a stopped tuner's trial is found) is marked experimental: nothing for the user to do.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = open_study(settings, space)
    continue_study(study)
    trials_folder = settings.output / study.study_name
    started = time.monotonic()

    def objective(trial) -> float:
        from emotion_lightning.lightning_cli import run

        values = sample(trial, space)
        shown = ", ".join(
            f"{name} {value:.3g}" if isinstance(value, float) else f"{name} {value}" for name, value in values.items()
        )
        say(f"Trial {trial.number}: {shown}")
        overrides = [f"--{name}={value}" for name, value in values.items()]
        if not any(argument.startswith("--resume.keep_last_after_fit") for argument in fit_arguments):
            overrides.append("--resume.keep_last_after_fit=false")  # a trial keeps its best weights, 87 MiB for MiniLM
        cli = run(
            ["fit", *fit_arguments, *overrides, "--trainer.default_root_dir", str(trials_folder)],
            callbacks=[report_to(trial)],
        )
        trial.set_user_attr("run_folder", cli.trainer.default_root_dir)
        best = cli.trainer.checkpoint_callback.best_model_score
        if best is None:
            raise TuneError("a trial measured no val/acc: the fit ran no validation")
        return float(best)

    budget = optuna.study.MaxTrialsCallback(
        settings.trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )
    study.optimize(objective, timeout=settings.timeout, callbacks=[budget], catch=(), gc_after_trial=True)
    say(f"Study {study.study_name}: {time.monotonic() - started:.0f} s in this tuner")
    report(study, settings)


def report(study, settings: TuneSettings) -> None:
    """The table of trials, the best trial's preset as a YAML that composes, and the plots."""
    import optuna

    rows = []
    for trial in study.get_trials():
        took = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete else None
        values = "  ".join(
            f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
            for name, value in trial.params.items()
        )
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        rows.append(
            f"  {trial.number:>4}  {trial.state.name:<8}  {value:>7}  {f'{took:.0f} s' if took else '-':>7}  {values}"
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
    settings.output.mkdir(parents=True, exist_ok=True)
    path = settings.output / "best.yaml"
    header = (
        f"# The best trial of study {study.study_name} (trial {best.number}, val/acc {best.value:.4f}, "
        f"{len(completed)} trials completed). Compose it after the configs it was tuned with:\n"
        f"#   emotion-lightning fit -c configs/reference.yaml -c configs/offline.yaml -c {path}\n"
    )
    path.write_text(header + yaml.safe_dump(preset, sort_keys=True))
    say(f"Best trial {best.number}: val/acc {best.value:.4f}; its settings: {path}")
    _plots(study, settings.output)


def _plots(study, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    for name, plot in (
        ("val_acc_by_trial.png", plot_optimization_history),
        ("importances.png", plot_param_importances),
    ):
        try:
            axes = plot(study)
        except (RuntimeError, ValueError) as error:  # importances need two completed trials that differ
            say(f"No {name}: {error}")
            continue
        axes.figure.tight_layout()
        axes.figure.savefig(folder / name, dpi=100)
        plt.close(axes.figure)
        say(f"Wrote {folder / name}")
