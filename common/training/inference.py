"""Applying saved networks to images on the network's grid: the object that predicts, and test-time flips.

A :class:`Predictor` owns the Keras network it predicts with. The first saved network it reads is
loaded whole (Keras's safe mode: a file that carries Python code, a ``Lambda`` layer, is refused); every
later one with the same layers (the experts of a run, the folds of a cross-validation) gives only its
weights, which are put into that one network before it predicts. So the prediction step is traced once
per command, not once per network, and a caller holds the weights of all its networks, not their graphs.
A network with other layers keeps a network of its own.

Each saved layer keeps the dtype policy it was trained with, so a network trained with mixed precision
predicts in it; its maps are float32. The ``.keras`` format is Keras's own, so a network saved on one
backend loads on the others.

Test-time augmentation (:mod:`common.training.tta`) is averaged into each network's map before anything
else sees it: a mirrored view is not a member of any ensemble.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from common.data.cases import DataError
from common.training import losses as _registered  # noqa: F401 - registers the custom losses, so saved networks load
from common.training.tta import TTA, TestTimeAugmentation


class UnsafeNetworkError(DataError):
    """A saved network that carries Python code, which loading would run: never loaded."""


@dataclass(frozen=True)
class SavedNetwork:
    """A saved network read by a :class:`Predictor`: its file, the key of its layers, its weights."""

    path: Path
    key: str
    weights: list[np.ndarray]
    outputs: int
    channels: int
    sampler: object | None = None


def unsafe_network(path: Path, error: BaseException) -> UnsafeNetworkError:
    return UnsafeNetworkError(
        f"{path} carries Python code (a Lambda layer or another deserialised function), which loading it would "
        "run; refused (Keras safe mode). Networks this project trains hold no code, so the file was made or "
        f"changed elsewhere: train the network anew, or ask whoever shared it ({str(error)[:160]})"
    )


def load_network(
    path: Path, unreadable: Callable[[Path, BaseException], DataError], compile: bool = False
) -> keras.Model:
    """``keras.saving.load_model`` in safe mode (by default without the optimiser); a file that carries
    code is refused as such (:class:`UnsafeNetworkError`), any other bad file by ``unreadable``.

    ``unreadable`` makes the refusal of a truncated or corrupt file (its message says how to train the
    network anew, which only the caller knows).
    """
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - zipfile, h5py, ValueError, OSError ... for one bad file
        if "safe_mode" in str(error) or "arbitrary code" in str(error):
            raise unsafe_network(path, error) from error
        raise unreadable(path, error) from error


def layers_key(model: keras.Model) -> str:
    """What two networks must share for one to take the other's weights: each layer's kind, dtype policy
    and weight shapes, in order (names aside: Keras numbers some names per process)."""
    return json.dumps(
        [
            (
                type(layer).__name__,
                str(getattr(layer, "dtype_policy", "")),
                [tuple(int(d) for d in w.shape) for w in layer.weights],
            )
            for layer in model.layers
        ]
    )


def _default_unreadable(path: Path, error: BaseException) -> DataError:
    return DataError(f"{path} cannot be loaded ({type(error).__name__}: {str(error)[:200]})")


class Predictor:
    """Predicts with saved networks; owns the network(s) the weights are put into (see the module's docstring).

    Args:
        batch_size: images per step of the network.
        tta: the test-time augmentation (:data:`TTA`).
        unreadable: makes the refusal of a saved network that cannot be loaded (default: names the file).
    """

    def __init__(
        self,
        batch_size: int,
        tta: TestTimeAugmentation = TTA["none"],
        unreadable: Callable[[Path, BaseException], DataError] = _default_unreadable,
    ):
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.tta = tta
        self.unreadable = unreadable
        self._networks: dict[str, keras.Model] = {}
        self._holds: dict[str, str] = {}  # key -> the file whose weights its network holds now
        self.built = 0  # networks built (loaded whole); the rest gave only their weights

    def load(self, path: Path, sampler=None) -> SavedNetwork:
        """Read a saved network (safe mode) and keep its weights; the first of its layers' kind is kept whole.

        ``sampler`` (a strategy's, :meth:`common.strategies.Strategy.sampler`) turns the saved network into
        the one that predicts (``sampler.prepare(model)``) and gives its inputs beyond the images
        (``sampler.inputs(images, first)``, ``first`` the place of the first image in the prediction)."""
        path = Path(path)
        model = load_network(path, self.unreadable)
        if sampler is not None:
            model = sampler.prepare(model)
        key = layers_key(model)
        saved = SavedNetwork(
            path,
            key,
            model.get_weights(),
            int(model.outputs[0].shape[-1]),
            int(model.inputs[0].shape[-1]),
            sampler,
        )
        if key not in self._networks:
            self._networks[key] = model
            self._holds[key] = str(path)
            self.built += 1
        return saved

    def predict(self, network: SavedNetwork, images: np.ndarray, first: int = 0) -> np.ndarray:
        """Output maps ``(N, S, S, K)`` float32 of ``network`` for images ``(N, S, S, C)`` on its grid,
        averaged over the test-time views; ``first``: the place of ``images[0]`` in the whole prediction
        (a sampler's noise follows each image's place, not its batch)."""
        model = self._networks[network.key]
        if self._holds[network.key] != str(network.path):
            model.set_weights(network.weights)
            self._holds[network.key] = str(network.path)
        total = None
        for view in self.tta.views:
            inputs = view(images)
            if network.sampler is not None:
                inputs = [inputs, *network.sampler.inputs(len(images), first)]
            maps = model.predict(inputs, batch_size=self.batch_size, verbose=0)
            maps = view(np.asarray(maps, dtype=np.float32))
            total = maps if total is None else total + maps
        return total if len(self.tta.views) == 1 else (total / len(self.tta.views)).astype(np.float32)
