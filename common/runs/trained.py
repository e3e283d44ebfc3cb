"""A finished run or cross-validation folder read as the networks it trained: what ``common.predict`` applies.

A run folder gives its planned networks (the strategy's, from ``config.json``); a cross-validation folder
gives every chosen fold's, which form one ensemble, as nnU-Net predicts with all its folds by default.
Each network's members are named by its strategy (:meth:`common.strategies.Strategy.member_names`): an
expert's network or head is ``seg01``, a consensus network's map is the network's name; in a
cross-validation each is prefixed with its fold (``fold2-seg01``), so no two members share a name.

Networks are looked for only inside the folder given, at the place the run folder's layout names
(:func:`common.runs.folder.network_folder`), whatever paths its ``config.json`` or ``result.json`` hold: a
run folder shared from another machine holds that machine's paths. A saved network that leads out of the
folder through a link is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.data.cases import DataError
from common.runs.folder import (
    CONFIG_FILE,
    EXPERIMENT_FILE,
    MODEL_FILE,
    RESULT_FILE,
    VARIANTS_FOLDER,
    fold_folder,
    network_folder,
    planned_networks,
    read_config,
)
from common.runs.gather import spec_from_config
from common.spec import ConfigError, DatasetSpec, Settings
from common.strategies import Network, strategy


@dataclass(frozen=True)
class TrainedNetwork:
    """One saved network of the ensemble: its file, the planned network (which says what its outputs
    are) and the names of the members it gives."""

    name: str
    fold: int | None
    model: Path
    members: tuple[str, ...]
    network: Network


@dataclass(frozen=True)
class TrainedRun:
    """The networks of a finished run (``kind`` ``"run"``) or of chosen folds of a cross-validation."""

    folder: Path
    kind: str
    folds: tuple[int, ...]
    config: dict  # the run's config.json (a fold's, for a cross-validation: the folds share the settings)
    spec: DatasetSpec
    settings: Settings
    task: int
    networks: tuple[TrainedNetwork, ...]

    @property
    def members(self) -> list[str]:
        return [m for n in self.networks for m in n.members]

    def describe(self) -> str:
        folds = ", ".join(map(str, self.folds))
        where = f"cross-validation {self.folder}, fold(s) {folds}" if self.folds else str(self.folder)
        return (
            f"{self.spec.title}, task {self.task}, strategy {self.settings.strategy}: {len(self.networks)} network(s) "
            f"of {where}, {len(self.members)} map(s) averaged"
        )


def resume_command(config: dict, folder: Path) -> str:
    """How to finish an interrupted run or cross-validation: its script with ``--resume``."""
    from common.datasets import DATASETS

    command = config.get("command") or []
    name = (config.get("dataset") or {}).get("name")
    script = command[0] if command else (DATASETS[name].script if name in DATASETS else "<the run's script>")
    return f"python {script} --resume {folder}"


def _read(folder: Path) -> dict:
    config = read_config(folder, f"RUN {folder}")
    try:
        spec_from_config(config), Settings.from_dict(config["settings"]), int(config["task"])
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"RUN {folder}: unreadable {folder / CONFIG_FILE} ({error!r})") from error
    return config


def _networks(folder: Path, config: dict, fold: int | None) -> tuple[list[TrainedNetwork], dict]:
    """The run folder's planned networks, and what each unfinished one lacks (by its planned network)."""
    found, missing = [], {}
    top = folder.resolve()
    prefix = f"fold{fold}-" if fold is not None else ""
    learner = strategy(Settings.from_dict(config["settings"]).strategy)
    for network in planned_networks(config):
        place = folder / network_folder(network)
        model = place / MODEL_FILE
        if not (place / RESULT_FILE).is_file() or not model.is_file():
            missing[network] = f"{network.name} (no {place / RESULT_FILE}: not trained, or still training)"
            continue
        if top not in model.resolve().parents:
            raise DataError(
                f"RUN {folder}: {model} leads out of the run folder (to {model.resolve()}); networks are read only "
                "from inside the folder given"
            )
        members = tuple(prefix + m for m in learner.member_names(network))
        found.append(TrainedNetwork(network.name, fold, model, members, network))
    return found, missing


def open_trained(folder: Path, folds: list[int] | None = None) -> TrainedRun:
    """The networks of a finished run or cross-validation folder (all folds, or ``folds``).

    Raises:
        ConfigError: not a run or cross-validation folder (an experiment's top folder names its
            variants); ``folds`` given for a single run or out of range; a network or fold not finished
            (each named, with the command that finishes it).
        DataError: a saved network leads out of the folder.
    """
    folder = Path(folder)
    if not folder.exists():
        raise ConfigError(f"RUN {folder}: no such folder")
    if not folder.is_dir():
        raise ConfigError(f"RUN {folder} is a file; name a run folder (the --out of a dataset script)")
    if (folder / EXPERIMENT_FILE).is_file():
        variants = sorted(p for p in (folder / VARIANTS_FOLDER).glob("*") if (p / CONFIG_FILE).is_file())
        shown = "\n  ".join(map(str, variants)) or f"(none yet under {folder / VARIANTS_FOLDER})"
        raise ConfigError(
            f"RUN {folder} is an experiment, whose variants are separate ensembles; predict with one variant's "
            f"cross-validation folder:\n  {shown}"
        )
    if not (folder / CONFIG_FILE).is_file():
        inside = sorted(p.parent for p in folder.glob(f"*/{CONFIG_FILE}"))
        hint = f"; it holds run folders: {', '.join(map(str, inside[:5]))}" if inside else ""
        raise ConfigError(f"RUN {folder}: not a run folder (no {CONFIG_FILE} there){hint}")
    config = _read(folder)
    if config.get("kind") == "cross-validation":
        return _open_cross_validation(folder, config, folds)
    if folds:
        raise ConfigError(f"--fold: {folder} is a single run, not a cross-validation folder; leave out --fold")
    networks, missing = _networks(folder, config, None)
    if missing:
        from common.runs.jobs import job_command

        experts = [n.heads[0] for n in missing if n.per_expert]
        finish = job_command(config, folder, experts) if config.get("jobs") else resume_command(config, folder)
        raise ConfigError(
            f"RUN {folder} is not finished: {len(missing)} network(s) not trained: {'; '.join(missing.values())}; "
            f"finish it with: {finish}"
        )
    settings = Settings.from_dict(config["settings"])
    spec = spec_from_config(config)
    return TrainedRun(folder, "run", (), config, spec, settings, int(config["task"]), tuple(networks))


def _open_cross_validation(folder: Path, config: dict, folds: list[int] | None) -> TrainedRun:
    count = int(config.get("folds") or 0)
    chosen = sorted(set(folds)) if folds else list(range(1, count + 1))
    wrong = [k for k in chosen if not 1 <= k <= count]
    if wrong:
        raise ConfigError(f"--fold {','.join(map(str, wrong))}: {folder} has folds 1 to {count}")
    networks, unfinished, fold_config = [], {}, None
    for k in chosen:
        place = fold_folder(folder, k)
        if not (place / CONFIG_FILE).is_file():
            unfinished[k] = f"fold{k} (not started)"
            continue
        fold_config = _read(place)
        found, missing = _networks(place, fold_config, k)
        if missing:
            unfinished[k] = f"fold{k} ({'; '.join(missing.values())})"
        networks.extend(found)
    if unfinished:
        others = [k for k in chosen if k not in unfinished]
        pick = f", or predict with the finished fold(s) only: --fold {','.join(map(str, others))}" if others else ""
        raise ConfigError(
            f"RUN {folder}: {len(unfinished)} of {len(chosen)} fold(s) not finished: {', '.join(unfinished.values())}; "
            f"finish them with: {resume_command(config, folder)}{pick}"
        )
    settings = Settings.from_dict(fold_config["settings"])
    spec = spec_from_config(fold_config)
    return TrainedRun(
        folder,
        "cross-validation",
        tuple(chosen),
        fold_config,
        spec,
        settings,
        int(fold_config["task"]),
        tuple(networks),
    )
