"""The batches a network trains and validates on: a seeded stream over all its epochs, on any Keras backend.

Epoch ``e`` visits the ``N`` training samples in an order drawn from ``(seed, e)`` and augments its
``i``-th sample with the transform drawn from ``(seed, e * N + i)`` (:mod:`common.training.augmentation`):
the stream is a function of the seed and the epoch alone, so a resumed training sees exactly the
batches an uninterrupted one would have seen, on whichever backend it runs. The stream is one
``keras.utils.PyDataset`` over every remaining epoch, read by ``model.fit`` with
``steps_per_epoch = ceil(N / batch_size)`` (the last batch of an epoch may be smaller); Keras keeps one
iterator across the epochs when ``steps_per_epoch`` is given.

What ``model.fit`` reads is :func:`fit_input` of the stream: on JAX and PyTorch the ``PyDataset`` itself;
on TensorFlow the same batches as an in-graph ``tf.data`` pipeline (the order and the transforms drawn
by numpy once per epoch, the gather and the warp in the graph, prefetched), because Keras feeds a
``PyDataset`` to TensorFlow through a Python generator thread, one interpreter call per batch, and that
halved the demo network's training throughput on a 2-core CPU (``bench/backends.py compare``,
``docs/performance.md``).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from common.training import backend
from common.training.augmentation import (
    ORDER,
    TRAINING,
    VALIDATION,
    Augmentation,
    apply_transforms,
    draw_transforms,
    sample_rng,
    warp,
)


def epoch_images(count: int, replicas: int = 1) -> int:
    """Images trained on per epoch: all ``count``, or with several replicas a multiple of them."""
    return count - count % replicas if replicas > 1 else count


def padded_count(count: int, replicas: int = 1) -> int:
    """Validation images per evaluation: all ``count``, padded to a multiple of the replicas (see below)."""
    return count + ((-count) % replicas if replicas > 1 else 0)


def validation_padding(count: int, replicas: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """The image of each evaluated sample (copies of the first cases as padding) and the sample weights
    that keep the mean loss over the real cases (:func:`evaluation_data`); None: no padding needed."""
    total = padded_count(count, replicas)
    take = np.arange(total) % count
    if total == count:
        return take, None
    return take, np.where(np.arange(total) < count, total / count, 0.0).astype(np.float32)


def with_availability(masks: np.ndarray, available: np.ndarray | None) -> np.ndarray:
    """Multi-head targets: the masks ``(N, S, S, E)`` followed by ``available (N, E)`` as constant channels."""
    if available is None:
        return masks
    flags = np.broadcast_to(available[:, np.newaxis, np.newaxis, :], masks.shape).astype(masks.dtype)
    return np.concatenate([masks, flags], axis=-1)


class EpochStream(keras.utils.PyDataset):
    """The batches of epochs ``first_epoch .. epochs - 1`` as one sequence (see the module's docstring).

    Item ``k`` is batch ``k mod steps`` of epoch ``first_epoch + k // steps``. Each epoch's samples are
    ``order(epoch)`` (indices into ``images``), the ``j``-th of them warped with the seed
    ``(seed, stream, positions(epoch)[j])`` unless ``augmentation`` is None or the identity, then the
    availability flags (multi-head) appended to its target, and the sample ``weights`` (padding of a
    mirrored validation) appended to the batch.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        batch_size: int,
        seed: int,
        augmentation: Augmentation | None,
        epochs: int,
        first_epoch: int,
        shuffled: int | None,
        stream: int,
        available: np.ndarray | None = None,
        binary: bool = True,
        padding: tuple[np.ndarray, np.ndarray | None] | None = None,
    ):
        """``shuffled``: the images of each epoch's shuffled order (None: every image of ``padding``'s
        ``take``, in that order, with its sample ``weights``; see :func:`validation_padding`)."""
        super().__init__()
        self.images, self.masks, self.available = images, masks, available
        self.batch_size, self.seed, self.binary = batch_size, seed, binary
        self.augmentation = None if augmentation is None or augmentation.is_identity else augmentation
        self.first_epoch, self.epochs, self.stream = first_epoch, epochs, stream
        self.shuffle = shuffled is not None
        self.take, self.weights = padding if padding is not None else (None, None)
        self.per_epoch = shuffled if shuffled is not None else len(self.take)
        self.steps = math.ceil(self.per_epoch / batch_size)
        self._epoch: tuple[int, np.ndarray] | None = None
        #: None: the stream spans its epochs. An epoch number: the stream is that one epoch's batches
        #: (the augmented validation, whose epoch :class:`FollowEpoch` sets; see there).
        self.epoch: int | None = None

    def __len__(self) -> int:
        if self.epoch is not None:
            return self.steps
        return max(0, self.epochs - self.first_epoch) * self.steps

    def order(self, epoch: int) -> np.ndarray:
        """The images of ``epoch``, in the order they are visited (cached for the epoch being read)."""
        if self._epoch is None or self._epoch[0] != epoch:
            if self.shuffle:
                indices = sample_rng(self.seed, ORDER, epoch).permutation(len(self.images))[: self.per_epoch]
            else:
                indices = np.asarray(self.take)
            self._epoch = (epoch, indices)
        return self._epoch[1]

    def positions(self, epoch: int, rows: slice) -> np.ndarray:
        """The augmentation positions of ``rows`` of ``epoch``: ``epoch * N`` plus the sample's place
        (training: its place in the epoch's order; validation: its image's index)."""
        count = len(self.images)
        if self.shuffle:
            return epoch * count + np.arange(self.per_epoch)[rows]
        return epoch * count + self.order(epoch)[rows]

    def transforms(self, epoch: int, rows: slice) -> np.ndarray:
        """The warps ``(n, 8)`` of ``rows`` of ``epoch`` (:func:`draw_transforms`); the stream must augment."""
        height, width = self.images.shape[1:3]
        return draw_transforms(self.seed, self.positions(epoch, rows), self.augmentation, height, width, self.stream)

    def __getitem__(self, item: int):
        if not 0 <= item < len(self):
            raise IndexError(f"batch {item} of a stream of {len(self)}")
        if self.epoch is not None:
            epoch, batch = self.epoch, item
        else:
            epoch, batch = self.first_epoch + item // self.steps, item % self.steps
        rows = slice(batch * self.batch_size, (batch + 1) * self.batch_size)
        index = self.order(epoch)[rows]
        images, masks = self.images[index], self.masks[index]
        if self.augmentation is not None:
            images, masks = apply_transforms(images, masks, self.transforms(epoch, rows), self.binary)
        if self.available is not None:
            masks = with_availability(masks, self.available[index])
        if self.weights is not None:
            return images, masks, self.weights[rows]
        return images, masks


class FollowEpoch(keras.callbacks.Callback):
    """Sets an epoch-by-epoch stream's ``epoch`` as each training epoch begins.

    ``model.fit`` restarts its validation iterator at every evaluation (Keras 3 resets the cached
    evaluation iterator each time, on every backend), so a validation stream spanning all epochs would
    be read from its start each epoch: every epoch would validate on the first epoch's warps, and a
    resumed training on those of the epoch it resumed at. The augmented validation is therefore one
    epoch long, and this callback says which epoch it is.
    """

    def __init__(self, stream: EpochStream):
        super().__init__()
        self.stream = stream

    def on_epoch_begin(self, epoch, logs=None):
        self.stream.epoch = epoch


def fit_input(data):
    """What ``model.fit`` reads for ``data``: an :class:`EpochStream` as a ``tf.data`` pipeline of the same
    batches on TensorFlow (see the module's docstring), anything else (the stream on JAX and PyTorch, numpy
    arrays, a benchmark's own stream) as it is."""
    if isinstance(data, EpochStream) and backend.name() == "tensorflow":
        return tf_batches(data)
    return data


def tf_batches(stream: EpochStream):
    """``stream``'s batches as a ``tf.data.Dataset`` (TensorFlow only), equal to ``stream[k]`` batch by batch.

    numpy draws each epoch's order and transforms (one ``tf.numpy_function`` call per epoch, with
    :meth:`EpochStream.order` and :meth:`EpochStream.transforms`, so the numbers are the stream's own);
    the images are gathered and warped by :func:`common.training.augmentation.warp` in the graph, a batch
    at a time in parallel, in order, and prefetched. An epoch-by-epoch stream (the augmented validation)
    reads its :attr:`EpochStream.epoch` when Keras starts reading it, as the ``PyDataset`` does.
    """
    import tensorflow as tf

    images, masks = tf.constant(stream.images), tf.constant(stream.masks)
    available = None if stream.available is None else tf.constant(stream.available)
    weights = None if stream.weights is None else tf.constant(stream.weights)

    def plan(epoch):
        epoch = int(epoch) if stream.epoch is None else stream.epoch
        index = stream.order(epoch).astype(np.int64)
        if stream.augmentation is None:
            return index, np.zeros((len(index), 8), np.float32)
        return index, stream.transforms(epoch, slice(None))

    def one_epoch(epoch):
        index, transforms = tf.numpy_function(plan, [epoch], (tf.int64, tf.float32), stateful=True)
        index.set_shape([stream.per_epoch])
        transforms.set_shape([stream.per_epoch, 8])
        rows = tf.range(stream.per_epoch, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((index, transforms, rows)).batch(stream.batch_size)

    def batch(index, transforms, rows):
        x, y = tf.gather(images, index), tf.gather(masks, index)
        if stream.augmentation is not None:
            x, y = warp(x, y, transforms, stream.binary)
        if available is not None:
            flags = tf.cast(tf.gather(available, index), y.dtype)[:, tf.newaxis, tf.newaxis, :]
            y = tf.concat([y, tf.broadcast_to(flags, tf.shape(y))], axis=-1)  # as with_availability
        if weights is not None:
            return x, y, tf.gather(weights, rows)
        return x, y

    if stream.epoch is None:
        epochs = tf.data.Dataset.range(stream.first_epoch, max(stream.first_epoch, stream.epochs))
    else:  # one epoch, the one plan() reads when Keras starts reading the stream
        epochs = tf.data.Dataset.range(1)
    return (
        epochs.flat_map(one_epoch)
        .map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
        # flat_map hides the count; Keras needs it to read a validation stream without running it dry.
        .apply(tf.data.experimental.assert_cardinality(len(stream)))
    )


def training_dataset(
    images: np.ndarray,
    masks: np.ndarray,
    batch_size: int,
    seed: int,
    augmentation: Augmentation | None,
    epochs: int,
    first_epoch: int = 0,
    available: np.ndarray | None = None,
    binary: bool = True,
    replicas: int = 1,
) -> EpochStream:
    """The training batches of epochs ``first_epoch .. epochs - 1``, shuffled and augmented.

    ``masks`` may hold several channels (one per head of a multi-head network); ``available``
    ``(N, heads)`` then says which experts annotated each image, and is appended to the targets as
    constant channels after augmentation (see ``MultiHeadLoss``). Soft targets (``binary=False``)
    are warped without re-binarising.

    With ``replicas > 1`` (a mirrored training, ``batch_size`` a multiple of them) each epoch leaves
    out the last ``N mod replicas`` images of its order, so that every batch splits evenly across the
    replicas (a replica with fewer or no images fails in Keras 3); the order is drawn anew each epoch,
    so a different few images wait each time. See :func:`epoch_images`.
    """
    return EpochStream(
        images,
        masks,
        batch_size,
        seed,
        augmentation,
        epochs,
        first_epoch,
        shuffled=epoch_images(len(images), replicas),
        stream=TRAINING,
        available=available,
        binary=binary,
    )


def augmented_validation_dataset(
    images: np.ndarray,
    masks: np.ndarray,
    batch_size: int,
    seed: int,
    augmentation: Augmentation,
    epochs: int,
    first_epoch: int = 0,
    available: np.ndarray | None = None,
    binary: bool = True,
    replicas: int = 1,
) -> EpochStream:
    """The validation batches of epochs ``first_epoch .. epochs - 1``, each epoch's augmented anew.

    The study validated on a generator that augmented like the training one. Here epoch ``e`` warps
    its ``i``-th validation image (in their order, not shuffled) with the seed ``(seed, e * N + i)`` of
    the validation stream: a function of the seed and the epoch alone, like the training stream, so a
    resumed training validates on what an uninterrupted one would have, and never on a training
    sample's warp (those are drawn in another stream). The stream is one epoch's batches
    (``ceil(padded / batch_size)``), of the epoch :class:`FollowEpoch` sets (``first_epoch`` until then).
    Padding for several replicas is as in :func:`evaluation_data`.
    """
    stream = EpochStream(
        images,
        masks,
        batch_size,
        seed,
        augmentation,
        epochs,
        first_epoch,
        shuffled=None,
        stream=VALIDATION,
        available=available,
        binary=binary,
        padding=validation_padding(len(images), replicas),
    )
    stream.epoch = first_epoch
    return stream


def evaluation_data(images: np.ndarray, masks: np.ndarray, replicas: int = 1) -> tuple:
    """The plain validation set for ``model.fit`` (batched by its ``validation_batch_size``); with
    ``replicas > 1`` padded to split evenly, without changing the loss.

    Every validation case counts, since the validation loss chooses the kept epoch. A mirrored
    evaluation needs every batch to split evenly across the replicas (see ``training_dataset``), so
    the cases are padded to a multiple of the replicas with copies of the first, of sample weight 0.
    Keras averages a batch's loss over all its samples, padding included, and the batches' losses
    weighted by their sizes; giving the real cases the weight ``padded / real`` instead of 1 makes
    that average the mean over the real cases exactly. Weighted metrics ignore the uniform factor.
    """
    take, weights = validation_padding(len(images), replicas)
    if weights is None:
        return images, masks
    return images[take], masks[take], weights
