"""The study's findings as switches: one table of named settings shared by the scripts and experiments.

Every entry maps a name (``dropout_rate``) to a :class:`~common.spec.Settings` field, a parser for its
text form and a formatter back to text. The dataset scripts turn each entry into a command-line option
(``--dropout-rate 0.3``); :mod:`common.experiment` accepts the same names in ``--vary dropout_rate=0.2,0.5``
and ``--set``. Text forms:

- on/off switches: ``on`` or ``off`` (also ``true``/``false``, ``yes``/``no``, ``1``/``0``);
  ``--mixed-precision`` given alone means ``on`` (``Switch.bare``);
- the CT window: ``LEVEL/WIDTH`` in Hounsfield units (the study's 0..255 HU is ``127.5/255``;
  a soft-tissue window is ``40/400``) or ``off``.

Presets: ``study`` is the original study's settings for a dataset, exactly (GPU server); ``default`` is
the study's settings with early stopping (see :func:`default_preset`); ``demo`` is the CPU-sized preset
of each script.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.choices import DROPOUT_KINDS, FIT_CHOICES, INITIALIZERS, KEEP_CHOICES, LOSS_NAMES
from common.spec import (
    STRATEGIES,
    ConfigError,
    DatasetSpec,
    Settings,
)
from common.strategies import loss_meanings, summaries

PRESETS = ("default", "study", "demo")


def _on_off(text: str) -> bool:
    value = text.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise ValueError(f"expected on or off, got {text!r}")


def _either(values: tuple[str, ...]) -> str:
    """``spatial, standard or none``: a choice's values in a help line."""
    return ", ".join(values[:-1]) + f" or {values[-1]}"


def _show_on_off(value: bool) -> str:
    return "on" if value else "off"


def _int(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise ValueError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def _float(low: float, high: float | None, closed_high: bool = True, positive: bool = False):
    bound = f"> {low}" if positive else f">= {low}"
    if high is not None:
        bound += f" and {'<=' if closed_high else '<'} {high}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number {bound}, got {text!r}") from None
        too_low = value <= low if positive else value < low
        too_high = high is not None and (value > high if closed_high else value >= high)
        if too_low or too_high or value != value:
            raise ValueError(f"expected a number {bound}, got {text}")
        return value

    return parse


def _direction(text: str) -> bool:
    """``backward`` (True: ``Settings.convlstm_backwards``) or ``forward`` (False)."""
    value = text.strip().lower()
    if value in ("backward", "backwards"):
        return True
    if value in ("forward", "forwards"):
        return False
    raise ValueError(f"expected backward or forward, got {text!r}")


def _show_direction(backwards: bool) -> str:
    return "backward" if backwards else "forward"


def _choice(options) -> Callable[[str], str]:
    """A parser accepting the names in ``options`` (a tuple, or a registry read when parsing)."""

    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {text!r}")
        return text

    return parse


def parse_ct_window(text: str) -> tuple[float, float] | None:
    """``LEVEL/WIDTH`` in HU (``127.5/255`` is 0..255 HU) as ``(low, high)``, or None for ``off``."""
    if text.strip().lower() in ("off", "none"):
        return None
    parts = text.split("/")
    try:
        level, width = (float(part) for part in parts)
    except ValueError:
        raise ValueError(f"expected LEVEL/WIDTH in Hounsfield units (e.g. 40/400) or off, got {text!r}") from None
    if not width > 0:
        raise ValueError(f"the window width must be > 0, got {text!r}")
    return (level - width / 2, level + width / 2)


def parse_slice_margin(text: str) -> int | None:
    """``N`` (unlabelled slices kept on each side of a volume's labelled ones) or ``all`` (every slice)."""
    if text.strip().lower() == "all":
        return None
    return _int(0)(text)


def show_slice_margin(margin: int | None) -> str:
    return "all" if margin is None else str(margin)


def show_ct_window(window: tuple[float, float] | None) -> str:
    if window is None:
        return "off"
    low, high = window
    return f"{(low + high) / 2:g}/{high - low:g}"


@dataclass(frozen=True)
class Switch:
    """One setting as a named switch: its Settings field, how to read it from text and write it back.

    ``bare`` is the text meant by the option given without a value on the command line (``on`` for
    ``--mixed-precision``), or None when the option needs a value.
    """

    name: str
    field: str
    parse: Callable[[str], Any]
    show: Callable[[Any], str]
    metavar: str
    help: str
    bare: str | None = None

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


def _plain(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


SWITCHES: dict[str, Switch] = {
    s.name: s
    for s in (
        Switch("image_size", "input_size", _int(1), _plain, "N", "input size in pixels, a multiple of 2**depth"),
        Switch("depth", "depth", _int(1), _plain, "N", "number of poolings of the U-Net (deeper: larger context)"),
        Switch("base_filters", "base_filters", _int(1), _plain, "N", "filters of the first level, doubled per level"),
        Switch("dropout", "dropout", _choice(DROPOUT_KINDS), str, "KIND", _either(DROPOUT_KINDS)),
        Switch(
            "dropout_rate",
            "dropout_rate",
            _float(0, 1, closed_high=False),
            _plain,
            "RATE",
            "rate of every dropout layer",
        ),
        Switch("convlstm", "convlstm", _on_off, _show_on_off, "on|off", "ConvLSTM2D decoder merge (BCDU-Net)"),
        Switch("batch_norm", "batch_norm", _on_off, _show_on_off, "on|off", "batch norm after every convolution"),
        Switch("augment", "augment", _on_off, _show_on_off, "on|off", "on-the-fly augmentation at all"),
        Switch("rotation", "rotation", _float(0, 180), _plain, "DEG", "maximal random rotation in degrees"),
        Switch("shift", "shift", _float(0, 1, False), _plain, "FRAC", "maximal random shift, fraction of size"),
        Switch("flip", "flip", _on_off, _show_on_off, "on|off", "random horizontal flips"),
        Switch("ct_window", "ct_window", parse_ct_window, show_ct_window, "L/W|off", "CT window LEVEL/WIDTH in HU"),
        Switch(
            "slice_margin",
            "slice_margin",
            parse_slice_margin,
            show_slice_margin,
            "N|all",
            "volumes: train on the slices any expert marked plus N unmarked ones on each side, or all slices",
        ),
        Switch(
            "loss",
            "loss",
            _choice(LOSS_NAMES),
            str,
            "LOSS",
            f"dice (soft Dice) or dice+bce (plus cross-entropy); {loss_meanings()}",
        ),
        Switch("learning_rate", "learning_rate", _float(0, None, positive=True), _plain, "LR", "Adam's learning rate"),
        Switch("batch_size", "batch_size", _int(1), _plain, "N", "images per training batch"),
        Switch("epochs", "epochs", _int(1), _plain, "N", "training epochs per network (at most, with --patience)"),
        Switch(
            "patience",
            "patience",
            _int(0),
            _plain,
            "N",
            "early stop after N epochs with no better val loss; 0: off",
        ),
        Switch(
            "strategy",
            "strategy",
            _choice(STRATEGIES),
            str,
            "NAME",
            summaries(),
        ),
        Switch(
            "mixed_precision",
            "mixed_precision",
            _on_off,
            _show_on_off,
            "on|off",
            "16-bit compute, float32 weights and losses: bfloat16 on a CPU that has it, float16 on a GPU; alone: on",
            bare="on",
        ),
        Switch(
            "convlstm_direction",
            "convlstm_backwards",
            _direction,
            _show_direction,
            "DIR",
            "backward (the study's go_backwards=True: the skip forms the output) or forward",
        ),
        Switch("initializer", "initializer", _choice(INITIALIZERS), str, "INIT", "glorot (Keras defaults) or he"),
        Switch("keep", "keep", _choice(KEEP_CHOICES), str, "WHICH", "last epoch's weights or the best val loss's"),
        Switch("fit", "fit", _choice(FIT_CHOICES), str, "HOW", "crop (centre-crop or pad) or resample to the input"),
        Switch(
            "augment_validation",
            "augment_validation",
            _on_off,
            _show_on_off,
            "on|off",
            "augment the validation images like the training ones, anew each epoch",
        ),
        Switch("dice_smooth", "dice_smooth", _float(0, None), _plain, "S", "additive smoothing of the Dice loss"),
        Switch("latent_dim", "latent_dim", _int(1), _plain, "N", "a sampling strategy's latent dimension"),
        Switch(
            "kl_weight",
            "kl_weight",
            _float(0, None),
            _plain,
            "W",
            "weight of KL(posterior || prior) in a sampling loss",
        ),
        Switch("samples", "samples", _int(1), _plain, "N", "samples a sampling strategy draws per case"),
    )
}


def switch(name: str) -> Switch:
    """The switch called ``name`` (``dropout-rate`` and ``dropout_rate`` both work)."""
    key = name.strip().replace("-", "_")
    if key not in SWITCHES:
        raise ConfigError(f"unknown setting {name!r}; known: {', '.join(SWITCHES)}")
    return SWITCHES[key]


def parse_value(name: str, text: str) -> Any:
    """The value of switch ``name`` written as ``text``; ConfigError names the switch and what it expects."""
    entry = switch(name)
    try:
        return entry.parse(text)
    except ValueError as error:
        raise ConfigError(f"{entry.name}: {error}") from None


def show_value(name: str, value: Any) -> str:
    return switch(name).show(value)


def apply_switches(settings: Settings, values: dict[str, Any], spec: DatasetSpec | None = None) -> Settings:
    """``settings`` with the switches' parsed ``values`` (by switch name) applied and validated.

    A CT window on an MRI dataset is refused: MRI intensities are not Hounsfield units; a slice margin on a
    dataset of 2D images too.
    """
    changes = {switch(name).field: value for name, value in values.items()}
    if spec is not None and spec.modality != "CT" and changes.get("ct_window") is not None:
        raise ConfigError(
            f"ct_window: {spec.name} is {spec.modality}, not CT; a window in Hounsfield units does not apply"
        )
    if spec is not None and not spec.volumetric and "slice_margin" in changes:
        raise ConfigError(f"slice_margin: {spec.name} is a dataset of 2D images, not of volumes; it has no slices")
    return settings.replace(**changes)


def describe(settings: Settings) -> dict[str, str]:
    """Every switch's value in ``settings`` as text (for reports and ``--help``)."""
    return {name: s.show(getattr(settings, s.field)) for name, s in SWITCHES.items()}


def default_preset(study: Settings) -> Settings:
    """The study's settings with early stopping: what the scripts run on real data unless told otherwise.

    The study trained every network for a fixed 200 to 1500 epochs at batch 1 and kept the last epoch's
    weights. Training stops here once the validation loss has not improved for a tenth of the epochs (at
    least 20), and the epoch with the best validation loss is kept: the epochs after a long plateau,
    which would only be thrown away, are not spent. Because the validation loss now chooses the kept
    network, the validation images are not augmented (an augmented loss would make that choice depend
    on the random warps of each epoch). Everything else is the study's (docs/fidelity.md).
    """
    return study.replace(patience=max(20, study.epochs // 10), keep="best", augment_validation=False)


#: Where the CPU-sized demo preset departs from the study's procedure, each for a stated reason
#: (docs/fidelity.md; measured in docs/findings.md, "The study's network on the demo data"):
#: ``fit``: at a 128 px input a centre crop would keep only the middle of a 497 or 640 px image, so the demo
#: resamples. ``keep`` and ``augment_validation``: as the default preset, the best validation epoch on plain
#: validation images (the study's last epoch scored 0.018 lower on the kidney demo, 2 of 3 folds, with the
#: same training). ``initializer``: He-normal, since with Keras's Glorot-uniform defaults (the study's) the
#: demo's 60-epoch networks fit their training cases but score 0.26 on held-out ones (see findings.md).
#: ``dice_smooth``: 1, as every demo table so far was measured; not yet measured against the study's 0.
#: The ConvLSTM merge reads backwards, as the study's (forwards was within the fold-to-fold noise of it
#: on kidney and brain tumour).
DEMO_DEPARTURES = {
    "fit": "resample",
    "initializer": "he",
    "keep": "best",
    "augment_validation": False,
    "dice_smooth": 1.0,
}


def demo_settings(study: Settings, **sizes) -> Settings:
    """A dataset's CPU-sized demo preset: the study's settings at ``sizes``, with :data:`DEMO_DEPARTURES`."""
    return study.replace(**DEMO_DEPARTURES, **sizes)


def preset(name: str, study: Settings, demo: Settings) -> Settings:
    if name == "study":
        return study
    if name == "demo":
        return demo
    if name == "default":
        return default_preset(study)
    raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
