"""A QUBIQ dataset and a training configuration, described once, as data.

Each top-level script (``Kidney.py`` ...) builds one :class:`DatasetSpec` and one
:class:`Settings` (the original study's values) and hands them to :func:`common.cli.main`.
Nothing in ``common`` hard-codes a dataset's counts or the study's hyper-parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from common.choices import DROPOUT_KINDS, FIT_CHOICES, INITIALIZERS, KEEP_CHOICES, LOSS_NAMES
from common.errors import ConfigError
from common.strategies import STRATEGIES as _REGISTRY
from common.strategies import STUDY_STRATEGY as _STUDY_STRATEGY
from common.strategies import strategy as _strategy

SPLITS = ("train", "validation", "test")

#: How the experts' masks are learned: the registry of :mod:`common.strategies` itself (name -> strategy), so a
#: strategy registered later is a choice too.
STRATEGIES = _REGISTRY

#: The QUBIQ releases as distributed: release -> split -> the accepted names of the split's top folder,
#: preferred first (``<root>/<top>/<dataset>/[<level>/]caseNN``). 2021 is handed out as ``*_QC`` zips; the
#: non-QC copies of the same cases still circulate, so both names are accepted (but not both at once).
#: :func:`common.data.cases.find_release` reads this table; ``SPLIT_FOLDERS`` below is derived from it.
RELEASES: dict[str, dict[str, tuple[str, ...]]] = {
    "2020": {
        "train": ("training_data_v2",),
        "validation": ("validation_data_v2",),
        "test": ("test",),
    },
    "2021": {
        "train": ("training_data_v3_QC", "training_data_v3"),
        "validation": ("validation_data_qubiq2021_QC", "validation_data_qubiq2021"),
        "test": ("QUBIQ21_test",),
    },
}
RELEASE_NAMES = tuple(RELEASES)

#: The optional level between a dataset folder and its case folders (``kidney/Training/case01``).
SPLIT_LEVELS = {"train": "Training", "validation": "Validation", "test": "Testing"}

#: The 2020 layout, ``split -> (top folder, level)``: what the demo generator writes.
SPLIT_FOLDERS = {split: (RELEASES["2020"][split][0], SPLIT_LEVELS[split]) for split in SPLITS}


@dataclass(frozen=True)
class DatasetSpec:
    """What the QUBIQ challenge says about one dataset.

    Attributes:
        name: the dataset's folder name in the QUBIQ layout (``"kidney"``).
        title: a human-readable name for reports.
        modality: ``"CT"`` or ``"MRI"``; CT images are in Hounsfield units.
        channels: image channels (brain-tumor has 4 MRI sequences, last axis).
        tasks: number of segmentation tasks (``taskTT`` in the mask file names).
        experts: number of experts per task (``segEE``); a case may have fewer.
        image_shape: the usual in-plane shape (rows, columns) of an image; for volumes, the shape every
            slice must have (it tells the slice axis from the in-plane axes, see ``slice_axis``).
        n_train, n_validation, n_test: cases per split as distributed; None where the release does not
            publish the count (the 2021 3D sets' validation and test volumes), never invented.
        n_held_out: training cases the study held out for scoring (the official
            test set has no masks).
        task_names: optional names of the tasks, for reports.
        slice_axis: None for a dataset of 2D images; for a dataset of volumes, the array axis (as nibabel
            reads the file) along which its 2D slices lie (the 2021 release's pancreas sets: 0, first).
            Networks train on slices; predictions and scores are of whole volumes
            (:mod:`common.data.volumes`).
    """

    name: str
    title: str
    modality: str
    channels: int
    tasks: int
    experts: int
    image_shape: tuple[int, int]
    n_train: int
    n_validation: int | None
    n_test: int | None
    n_held_out: int
    task_names: tuple[str, ...] = ()
    slice_axis: int | None = None

    def __post_init__(self) -> None:
        if self.modality not in ("CT", "MRI"):
            raise ConfigError(f"DatasetSpec {self.name!r}: modality must be 'CT' or 'MRI', got {self.modality!r}")
        for attr in ("channels", "tasks", "experts", "n_train", "n_held_out"):
            if getattr(self, attr) < 1:
                raise ConfigError(f"DatasetSpec {self.name!r}: {attr} must be >= 1, got {getattr(self, attr)}")
        if self.n_held_out >= self.n_train:
            raise ConfigError(
                f"DatasetSpec {self.name!r}: n_held_out ({self.n_held_out}) must be smaller than "
                f"n_train ({self.n_train})"
            )
        if self.task_names and len(self.task_names) != self.tasks:
            raise ConfigError(f"DatasetSpec {self.name!r}: {len(self.task_names)} task_names for {self.tasks} tasks")
        if self.slice_axis is not None:
            if self.slice_axis not in (0, 1, 2):
                raise ConfigError(f"DatasetSpec {self.name!r}: slice_axis is 0, 1, 2 or None, not {self.slice_axis}")
            if self.channels != 1:
                raise ConfigError(f"DatasetSpec {self.name!r}: volumes have one channel, not {self.channels}")

    @property
    def volumetric(self) -> bool:
        """Whether a case is a volume (trained as slices, predicted and scored whole)."""
        return self.slice_axis is not None

    @property
    def valid_tasks(self) -> list[int]:
        return list(range(1, self.tasks + 1))

    def task_name(self, task: int) -> str:
        return self.task_names[task - 1] if self.task_names else f"task{task:02d}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: What a run written before these settings existed did (they came with the study's exact procedure,
#: whose values are now the defaults): ``Settings.from_dict`` fills them in for an old ``config.json``.
LEGACY_VALUES = {
    "convlstm_backwards": False,
    "initializer": "he",
    "keep": "best",
    "fit": "resample",
    "augment_validation": False,
    "dice_smooth": 1.0,
}


@dataclass(frozen=True)
class Settings:
    """How to train and preprocess: the network, the optimiser, the augmentation.

    Attributes:
        input_size: the network's square input size; images are resampled (when larger)
            or padded (when smaller) to it, and predictions mapped back.
        depth: number of poolings of the U-Net (the study: 5).
        base_filters: filters of the first level, doubled at each pooling (the study: 16).
        convlstm: ConvLSTM2D skip merge in the decoder (BCDU-Net design).
        dropout: ``"spatial"``, ``"standard"`` or ``"none"``.
        dropout_rate: rate of every dropout layer.
        batch_norm: batch normalisation in the conv blocks.
        batch_size, learning_rate, epochs: the optimiser (Adam) and its schedule.
        ct_window: ``(low, high)`` in Hounsfield units applied before rescaling, or None.
        augment: on-the-fly augmentation at all; when False the ranges below are ignored.
        rotation: maximal random rotation in degrees (0 disables).
        shift: maximal random shift as a fraction of the size (0 disables).
        flip: random horizontal flip.
        loss: ``"dice"`` (the study's soft Dice) or ``"dice+bce"`` (soft Dice plus binary cross-entropy).
        patience: stop an expert's training once its validation loss has not improved for this many
            epochs (early stopping); 0 trains all ``epochs`` (the study).
        strategy: how the experts' masks are learned, a name of :data:`STRATEGIES` (the study's: one
            network per expert, maps averaged); each strategy checks the settings it cannot train with
            (:meth:`common.strategies.Strategy.check`).
        mixed_precision: compute in 16-bit floats where the hardware does it natively (bfloat16 on a
            CPU with AVX512-BF16 or AMX, float16 on a GPU), keeping the weights, the sigmoid output
            and the losses in float32 (see ``common.training.precision.precision_policy``). It changes the
            arithmetic, so it is a setting recorded with the run, not a runtime option.
        convlstm_backwards: the ConvLSTM merge reads its two-step sequence (skip, upsampled) backwards,
            as the study's and BCDU-Net's code do (``go_backwards=True``): its last step, the one that
            forms the output, sees the skip tensor. False runs it forwards.
        initializer: ``"glorot"`` (Keras's defaults, the study's: Glorot-uniform kernels, the ConvLSTM's
            orthogonal recurrent kernel) or ``"he"`` (He-normal kernels).
        keep: ``"last"`` (the study's: the weights after the last epoch trained) or ``"best"`` (those of
            the epoch with the best validation loss).
        fit: ``"crop"`` (the study's: centre-crop an axis longer than the input, zero-pad a shorter one)
            or ``"resample"`` (resample a larger image to fit, then pad); see ``common.data.preprocessing``.
        augment_validation: augment the validation images like the training ones (the study's
            generator did), anew each epoch; False validates on the images as they are.
        dice_smooth: the additive smoothing of the soft Dice loss (the study's: 0, plain
            ``1 - 2 sum(p g) / (sum(p) + sum(g))``).
        slice_margin: for a dataset of volumes, the unlabelled slices kept for training on each side of
            the slices that any expert marked (None: every slice); see :mod:`common.data.volumes`. Datasets
            of 2D images ignore it.
        latent_dim, kl_weight, samples: the settings of a sampling strategy (the Probabilistic U-Net,
            Kohl et al. 2018): the dimension of its latent Gaussian (the original's 6), the weight of
            KL(posterior || prior) in its loss (1), and the samples drawn per case at prediction (16,
            the usual count). Recorded with every run; the other strategies do not read them.
    """

    input_size: int
    depth: int = 5
    base_filters: int = 16
    convlstm: bool = False
    dropout: str = "spatial"
    dropout_rate: float = 0.5
    batch_norm: bool = True
    batch_size: int = 1
    learning_rate: float = 1e-4
    epochs: int = 500
    ct_window: tuple[float, float] | None = None
    augment: bool = True
    rotation: float = 10.0
    shift: float = 0.1
    flip: bool = True
    loss: str = "dice"
    patience: int = 0
    strategy: str = _STUDY_STRATEGY
    mixed_precision: bool = False
    convlstm_backwards: bool = True
    initializer: str = "glorot"
    keep: str = "last"
    fit: str = "crop"
    augment_validation: bool = True
    dice_smooth: float = 0.0
    slice_margin: int | None = 5
    latent_dim: int = 6
    kl_weight: float = 1.0
    samples: int = 16

    def __post_init__(self) -> None:
        if self.dropout not in DROPOUT_KINDS:
            kinds = ", ".join(map(repr, DROPOUT_KINDS[:-1])) + f" or {DROPOUT_KINDS[-1]!r}"
            raise ConfigError(f"dropout must be {kinds}, got {self.dropout!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        for attr in ("input_size", "depth", "base_filters", "batch_size", "epochs"):
            if getattr(self, attr) < 1:
                raise ConfigError(f"{attr} must be >= 1, got {getattr(self, attr)}")
        if self.loss not in LOSS_NAMES:
            raise ConfigError(f"loss must be one of {', '.join(LOSS_NAMES)}, got {self.loss!r}")
        _strategy(self.strategy).check(self)
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0 (0: no early stopping), got {self.patience}")
        if not 0 <= self.rotation <= 180:
            raise ConfigError(f"rotation must be in [0, 180] degrees, got {self.rotation}")
        if not 0 <= self.shift < 1:
            raise ConfigError(f"shift must be a fraction in [0, 1), got {self.shift}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.input_size % (2**self.depth):
            raise ConfigError(
                f"input_size {self.input_size} is not divisible by 2**depth = {2**self.depth} "
                f"(depth {self.depth}); choose a multiple of {2**self.depth}"
            )
        for attr, allowed in (("initializer", INITIALIZERS), ("keep", KEEP_CHOICES), ("fit", FIT_CHOICES)):
            if getattr(self, attr) not in allowed:
                raise ConfigError(f"{attr} must be one of {', '.join(allowed)}, got {getattr(self, attr)!r}")
        if not self.dice_smooth >= 0:
            raise ConfigError(f"dice_smooth must be >= 0, got {self.dice_smooth}")
        if self.slice_margin is not None and self.slice_margin < 0:
            raise ConfigError(f"slice_margin must be >= 0 or None (every slice), got {self.slice_margin}")
        for attr in ("latent_dim", "samples"):
            if getattr(self, attr) < 1:
                raise ConfigError(f"{attr} must be >= 1, got {getattr(self, attr)}")
        if not self.kl_weight >= 0:
            raise ConfigError(f"kl_weight must be >= 0, got {self.kl_weight}")
        if self.ct_window is not None:
            low, high = self.ct_window
            if not low < high:
                raise ConfigError(f"ct_window must be (low, high) with low < high, got {self.ct_window}")

    @classmethod
    def from_dict(cls, values: dict) -> Settings:
        """Settings as written by :meth:`to_dict` (and read back from JSON).

        A field missing from ``values`` was written before the field existed, so it takes the value
        that describes what such a run did: :data:`LEGACY_VALUES` for the fields whose default has
        since become the study's (a run folder made before them trained forwards, He-initialised,
        resampled, kept the best epoch ...), else the default (``mixed_precision``: off).
        """
        values = {**LEGACY_VALUES, **dict(values)}
        if values.get("ct_window") is not None:
            values["ct_window"] = tuple(values["ct_window"])
        return cls(**values)

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
