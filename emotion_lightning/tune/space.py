"""The search space of ``tune``: read from YAML and checked against fit's settings, then sampled for a trial."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

from emotion_lightning.cli.config_files import read_yaml_file
from emotion_lightning.cli.settings import recipe_path
from emotion_lightning.console import say
from emotion_lightning.errors import EmotionLightningError, SettingError

KINDS = ("float", "int", "categorical")
PLAIN_VALUES = (str, int, float, bool, type(None))


class TuneError(EmotionLightningError, ValueError):
    """A study that cannot be run as asked."""


def first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


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
