"""Where one network's training writes: the paths, named by the run folder (:func:`common.runs.folder.network_files`).

The trainer reads and writes only these paths, so that the run folder's module is the one place that
spells the names of its files; the trainer's own tests build them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NetworkFiles:
    """One network's files: the kept model, the resume backup and its state, and the per-epoch log."""

    folder: Path
    model: Path
    backup: Path
    backup_state: Path
    log: Path
