"""The values each setting may take, spelled once.

A leaf module (it imports nothing of the project): :mod:`common.spec` checks a setting against these,
:mod:`common.switches` parses the command line's values with them, and the training code that acts on a
value (:mod:`common.training.models`, :mod:`common.training.losses`) imports the same names, without
importing the settings' module (which imports the strategies, which import training).
"""

from __future__ import annotations

#: ``Settings.loss``: soft Dice (the study's), or soft Dice plus binary cross-entropy
#: (:func:`common.training.losses.make_loss`).
LOSS_NAMES = ("dice", "dice+bce")

#: ``Settings.dropout``: the U-Net's dropout layers (:func:`common.training.models.build_unet`):
#: ``SpatialDropout2D`` (the study's), ``Dropout``, or none.
DROPOUT_KINDS = ("spatial", "standard", "none")

#: ``Settings.initializer`` -> the Keras kernel initialiser of the 3x3, transposed and ConvLSTM input
#: convolutions: Keras's default (the study's), or He's.
INITIALIZERS = {"glorot": "glorot_uniform", "he": "he_normal"}

#: ``Settings.keep``: the last epoch's weights, or the best validation loss's.
KEEP_CHOICES = ("last", "best")

#: ``Settings.fit``: how an image meets the input size: centre-crop or pad, or resample.
FIT_CHOICES = ("crop", "resample")

#: ``--distribute``: how each network's training uses the local devices
#: (``common.training.distribution.distribution_strategy``). A runtime option, not a setting: it changes
#: the speed, not what is trained.
DISTRIBUTE_CHOICES = ("none", "mirrored")
