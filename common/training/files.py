"""Where one network's training writes: the paths, named by the run folder (:func:`common.runs.folder.network_files`).

The trainer reads and writes only these paths, so that the run folder's module is the one place that
spells the names of its files; the trainer's own tests build them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.errors import DataError


@dataclass(frozen=True)
class NetworkFiles:
    """One network's files: the kept model, the resume backup and its state, and the per-epoch log."""

    folder: Path
    model: Path
    backup: Path
    backup_state: Path
    log: Path
    #: How to train this network anew if a saved file of it cannot be read, in its run's words (the run
    #: folder's module says it: :func:`common.runs.folder.retrain_hint`); empty outside a run.
    retrain: str = ""

    def unreadable(self, path: Path, error: BaseException) -> DataError:
        """The refusal for a saved file of this network that cannot be loaded: names it and how to train anew."""
        retrain = self.retrain or f"remove {self.folder}, then train it again"
        return DataError(
            f"{path} cannot be loaded ({type(error).__name__}: {str(error)[:200]}); to train that network anew: "
            f"{retrain}"
        )
