"""The QUBIQ datasets as data (four 2D sets, the 2021 release's two 3D sets): each one, its study and demo settings.

Each entry is what the library knows of a dataset (its shape, its experts, its splits' sizes) and the
settings the original study trained it with; the dataset scripts at the project's root run one entry
each, with the task their ``task = N`` line names. The library finds a dataset here by name, and the
task a script's line names without importing the script (:func:`script_task`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from common.spec import ConfigError, DatasetSpec, Settings
from common.switches import demo_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Dataset:
    """One dataset: its description, the study's settings, the demo's, and the script that runs it."""

    spec: DatasetSpec
    study: Settings
    demo: Settings
    script: str  # the top-level script's file name

    @property
    def name(self) -> str:
        return self.spec.name


BRAIN_GROWTH = Dataset(
    DatasetSpec(
        name="brain-growth",
        title="Brain growth (neonatal MRI)",
        modality="MRI",
        channels=1,
        tasks=1,
        experts=7,
        image_shape=(256, 256),
        n_train=34,
        n_validation=5,
        n_test=10,
        n_held_out=5,
        task_names=("brain",),
    ),
    # The original study: deep U-Net with spatial dropout 0.5 (no ConvLSTM: it did not help here), 256 px,
    # batch 1, 500 epochs.
    study := Settings(
        input_size=256,
        depth=5,
        base_filters=16,
        convlstm=False,
        dropout="spatial",
        dropout_rate=0.5,
        batch_size=1,
        learning_rate=1e-4,
        epochs=500,
        flip=True,
    ),
    # CPU-sized defaults for --demo (a few minutes on 2 cores).
    demo_settings(
        study, input_size=128, depth=4, base_filters=8, dropout_rate=0.2, batch_size=2, learning_rate=1e-3, epochs=30
    ),
    "Brain_Growth.py",
)

BRAIN_TUMOR = Dataset(
    DatasetSpec(
        name="brain-tumor",
        title="Brain tumour (4-sequence MRI)",
        modality="MRI",
        channels=4,
        tasks=3,
        experts=3,
        image_shape=(240, 240),
        n_train=28,
        n_validation=4,
        n_test=8,
        n_held_out=4,
        task_names=("whole tumour", "tumour core", "enhancing tumour"),
    ),
    # The original study: deep U-Net with ConvLSTM decoder, 256 px x 4 channels, batch 1, 1500 epochs.
    study := Settings(
        input_size=256,
        depth=5,
        base_filters=16,
        convlstm=True,
        dropout="spatial",
        dropout_rate=0.1,
        batch_size=1,
        learning_rate=1e-4,
        epochs=1500,
        flip=True,
    ),
    demo_settings(study, input_size=128, depth=4, base_filters=8, batch_size=2, learning_rate=1e-3, epochs=40),
    "Brain_Tumor.py",
)

KIDNEY = Dataset(
    DatasetSpec(
        name="kidney",
        title="Kidney CT",
        modality="CT",
        channels=1,
        tasks=1,
        experts=3,
        image_shape=(497, 497),
        n_train=20,
        n_validation=4,
        n_test=4,
        n_held_out=4,
        task_names=("kidney",),
    ),
    # The original study: deep U-Net with ConvLSTM decoder, 512 px, batch 1, 500 epochs; CT windowed to
    # 0..255 HU before rescaling; no flips (left and right kidneys are not mirror images in these slices).
    study := Settings(
        input_size=512,
        depth=5,
        base_filters=16,
        convlstm=True,
        dropout="spatial",
        dropout_rate=0.2,
        batch_size=1,
        learning_rate=1e-4,
        epochs=500,
        ct_window=(0.0, 255.0),
        flip=False,
    ),
    demo_settings(study, input_size=128, depth=4, base_filters=8, batch_size=2, learning_rate=1e-3, epochs=60),
    "Kidney.py",
)

PROSTATE = Dataset(
    DatasetSpec(
        name="prostate",
        title="Prostate MRI",
        modality="MRI",
        channels=1,
        tasks=2,
        experts=6,
        image_shape=(640, 640),
        n_train=48,
        n_validation=7,
        n_test=13,
        n_held_out=7,
        task_names=("prostate", "transition zone"),
    ),
    # The original study: deep U-Net with ConvLSTM decoder, 512 px, batch 1, 200 epochs.
    study := Settings(
        input_size=512,
        depth=5,
        base_filters=16,
        convlstm=True,
        dropout="spatial",
        dropout_rate=0.2,
        batch_size=1,
        learning_rate=1e-4,
        epochs=200,
        flip=True,
    ),
    demo_settings(study, input_size=128, depth=4, base_filters=8, batch_size=2, learning_rate=1e-3, epochs=15),
    "Prostate.py",
)

# The 2021 release's two 3D CT sets (QUBIQ 2021). The study never trained them; their study preset is this
# project's reading of it (docs/fidelity.md): the study's kidney network and procedure, on 512 px slices.
# Networks train on slices (those any rater marked, plus ``slice_margin`` on each side); maps and scores are
# of whole volumes. The release publishes its training counts (40 and 22 volumes) but not how its other 28
# volumes split into validation and test: those counts are unknown (None), not invented.

#: CT window for the pancreas sets: -100..240 HU (LEVEL/WIDTH 70/340), the window of pancreas segmentation
#: work on CT (e.g. Zhou et al. 2017 on the NIH pancreas set): from fat (about -100 HU), which outlines the
#: gland, to contrast-enhanced parenchyma and vessels (up to about 200 HU); cysts and hypodense lesions
#: (0..40 HU) fall inside it. Bone, air and the frame below -1500 HU outside the field of view are clipped.
PANCREAS_WINDOW = (-100.0, 240.0)

PANCREAS = Dataset(
    DatasetSpec(
        name="pancreas",
        title="Pancreas CT (volumes)",
        modality="CT",
        channels=1,
        tasks=1,
        experts=2,
        image_shape=(512, 512),
        n_train=40,
        n_validation=None,
        n_test=None,
        n_held_out=8,
        task_names=("pancreas",),
        slice_axis=0,
    ),
    # This project's study preset (the study never trained it): the kidney network (ConvLSTM decoder, spatial
    # dropout 0.2), 512 px slices, batch 1, lr 1e-4, no flips (the pancreas lies across the body, its head on
    # the right: not mirror-symmetric), and 10 epochs: about the 10,000 steps of the study's kidney training
    # (500 epochs x 20 images) over about 1,000 training slices.
    study := Settings(
        input_size=512,
        depth=5,
        base_filters=16,
        convlstm=True,
        dropout="spatial",
        dropout_rate=0.2,
        batch_size=1,
        learning_rate=1e-4,
        epochs=10,
        ct_window=PANCREAS_WINDOW,
        flip=False,
        slice_margin=5,
    ),
    demo_settings(study, input_size=128, depth=4, base_filters=8, batch_size=4, learning_rate=1e-3, epochs=8),
    "Pancreas.py",
)

PANCREATIC_LESION = Dataset(
    DatasetSpec(
        name="pancreatic-lesion",
        title="Pancreatic lesion CT (volumes)",
        modality="CT",
        channels=1,
        tasks=1,
        experts=2,
        image_shape=(512, 512),
        n_train=22,
        n_validation=None,
        n_test=None,
        n_held_out=5,
        task_names=("lesion",),
        slice_axis=0,
    ),
    # As pancreas, with 20 epochs: fewer volumes, and a lesion spans fewer slices than the gland.
    study := study.replace(epochs=20),
    demo_settings(study, input_size=128, depth=4, base_filters=8, batch_size=4, learning_rate=1e-3, epochs=12),
    "Pancreatic_Lesion.py",
)
del study

#: The datasets by name (``--dataset``).
DATASETS: dict[str, Dataset] = {
    d.name: d for d in (BRAIN_GROWTH, BRAIN_TUMOR, KIDNEY, PROSTATE, PANCREAS, PANCREATIC_LESION)
}


def dataset(name: str) -> Dataset:
    """The dataset called ``name``, or a refusal naming the choices."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"--dataset {name!r}: choose one of {', '.join(DATASETS)}") from None


def script_task(entry: Dataset, root: Path = PROJECT_ROOT) -> int:
    """The task that the dataset script's hand-edited ``task = N`` line names (read, not imported).

    Falls back to task 1 when the script is not there (the library installed without the scripts);
    a line that is not a whole number is refused by name.
    """
    path = Path(root) / entry.script
    try:
        tree = ast.parse(path.read_text())
    except OSError:
        return 1
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "task" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                value = None
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{path}: its 'task = ...' line must name a task number, e.g. task = 1")
            return value
    return 1
