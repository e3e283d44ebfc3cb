"""Small builders of QUBIQ-like files for tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from common.spec import DatasetSpec, Settings


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), str(path))
    return path


def write_case(folder: Path, image: np.ndarray, masks: dict[tuple[int, int], np.ndarray]) -> Path:
    """``folder/image.nii.gz`` and ``folder/taskTT_segEE.nii.gz`` for each ``(task, expert)``."""
    write_nifti(folder / "image.nii.gz", image)
    for (task, expert), mask in masks.items():
        write_nifti(folder / f"task{task:02d}_seg{expert:02d}.nii.gz", mask)
    return folder


def write_cases(folder: Path, cases: dict[str, list[tuple[int, int]]], shape: tuple[int, int] = (8, 8)) -> Path:
    """``folder/<case id>/`` for each case: a tiny image and a one-pixel mask for each ``(task, expert)`` listed.

    A case listed with no ``(task, expert)`` is a test case: an image and no mask.
    """
    for number, (case_id, pairs) in enumerate(cases.items()):
        mask = np.zeros(shape, np.uint8)
        mask[number % shape[0], 0] = 1
        write_case(folder / case_id, np.full(shape, number, np.float32), {pair: mask for pair in pairs})
    return folder


SPEC = DatasetSpec(
    name="toy",
    title="Toy",
    modality="MRI",
    channels=1,
    tasks=1,
    experts=2,
    image_shape=(20, 24),
    n_train=5,
    n_validation=2,
    n_test=1,
    n_held_out=2,
)
TINY = Settings(input_size=16, depth=2, base_filters=4, batch_size=2, learning_rate=1e-3, epochs=2)


def toy_case(rng, grow):
    image = rng.normal(0, 0.1, (20, 24)).astype(np.float32)
    top, left = rng.integers(3, 8), rng.integers(3, 10)
    image[top : top + 8, left : left + 8] += 1
    masks = {}
    for expert in (1, 2):
        mask = np.zeros((20, 24), np.uint8)
        g = grow if expert == 2 else 0
        mask[top - g : top + 8 + g, left - g : left + 8 + g] = 1
        masks[(1, expert)] = mask
    return image, masks


def make_toy_root(root: Path) -> Path:
    """A tiny QUBIQ tree for dataset ``toy``: case01-05 training (case03 lacks expert 2), case06-07 validation."""
    rng = np.random.default_rng(0)
    for number in range(1, 6):
        image, masks = toy_case(rng, grow=1)
        if number == 3:
            del masks[(1, 2)]  # expert 2 did not annotate case03
        write_case(root / "training_data_v2" / "toy" / "Training" / f"case{number:02d}", image, masks)
    for number in (6, 7):
        image, masks = toy_case(rng, grow=1)
        write_case(root / "validation_data_v2" / "toy" / "Validation" / f"case{number:02d}", image, masks)
    return root


def gradient(function, x: np.ndarray) -> np.ndarray:
    """d function(x) / dx on the Keras backend in use (``function`` maps a backend tensor to a scalar).

    Each backend has its own automatic differentiation (TensorFlow's tape, ``jax.grad``, PyTorch's
    autograd); the loss tests hold the losses' gradients on every backend with this one helper.
    """
    import keras

    x = np.asarray(x, np.float32)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        variable = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = function(variable)
        return tape.gradient(value, variable).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: function(v).sum())(jax.numpy.asarray(x)))
    import torch

    tensor = torch.tensor(x, requires_grad=True)
    function(tensor).sum().backward()
    return tensor.grad.numpy()
