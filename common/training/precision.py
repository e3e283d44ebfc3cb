"""Mixed precision: the Keras dtype policy that ``settings.mixed_precision`` asks for on this machine (from its
GPU and CPU), and that policy set while one network is built, trained or loaded."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import keras

from common.spec import Settings
from common.training import backend

#: /proc/cpuinfo flags of CPUs that compute bfloat16 in hardware (AVX512-BF16; AMX on Sapphire Rapids and later).
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_supports_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has bfloat16 instructions, from the ``flags`` lines of ``cpuinfo``.

    False when the file cannot be read (not Linux): without the instructions TensorFlow emulates
    bfloat16 arithmetic in software, which is slower than float32, so assuming no is the safe side.
    """
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & BF16_CPU_FLAGS)


def gpu_visible() -> bool:
    """Whether the backend computes on a GPU (:func:`common.training.backend.gpu_visible`); looked up here at
    call time, so the tests can choose a policy's machine without one."""
    return backend.gpu_visible()


def precision_policy(settings: Settings, log: Callable[[str], None] = print) -> str:
    """The Keras dtype policy that ``settings.mixed_precision`` asks for on this machine.

    - off: ``"float32"``;
    - on, with a GPU visible: ``"mixed_float16"``, the 16-bit type of every GPU with tensor cores
      (Keras then wraps the optimiser in a ``LossScaleOptimizer``, since float16 gradients underflow);
    - on, on a CPU with bfloat16 instructions (``avx512_bf16`` or ``amx_bf16``): ``"mixed_bfloat16"``
      (float32's exponent range, so no loss scaling);
    - on, on another CPU: ``"float32"`` after a one-line notice, because emulated bfloat16 would be
      slower than the float32 it replaces.

    Under a mixed policy the weights stay float32 and the layers compute in 16 bits; the sigmoid
    output (``build_unet``) and the losses (``common.training.losses``) stay float32.
    """
    if not settings.mixed_precision:
        return "float32"
    if gpu_visible():
        return "mixed_float16"
    if cpu_supports_bf16():
        return "mixed_bfloat16"
    log("mixed precision: this CPU has no bfloat16 instructions (avx512_bf16 or amx_bf16); training in float32")
    return "float32"


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Keras's global dtype policy set to ``name`` inside the block, and the previous one restored after.

    Global because Keras reads it when a layer is created (building) and when a saved model's
    optimiser is rebuilt (loading a mixed_float16 model outside the policy drops its loss-scale
    optimiser's state); restored so that one network's precision never leaks into the next.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
