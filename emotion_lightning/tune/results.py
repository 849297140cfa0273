"""What a study leaves: ``best.yaml`` (a preset that composes with the recipes) and its plots."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from emotion_lightning.console import say

if TYPE_CHECKING:
    from emotion_lightning.tune.settings import TuneSettings


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
