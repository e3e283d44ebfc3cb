"""Floating-point operations: counted from a built Keras model, and the measured matmul peak to compare with.

:func:`count_flops` reads only the layers' shapes (it imports nothing). :func:`matmul_peak` runs in a
worker and takes the worker's ``tf`` module; the profiler's cross-check, which imports TensorFlow's
internals, is the worker's own (:func:`bench.benchmarking.worker.profiler_forward_flops`).
"""

from __future__ import annotations

import math
import time

from bench.benchmarking.stats import summarise


def count_flops(model) -> dict:
    """Forward multiply-accumulates of a built Keras model, per image, counted from its layers' shapes.

    - ``Conv2D``: output pixels x output channels x (kernel height x width x input channels / groups),
      i.e. ``H_out * W_out * kernel.size``;
    - ``Conv2DTranspose``: every input pixel scatters the whole kernel: ``H_in * W_in * kernel.size``;
    - ``ConvLSTM2D``: per time step, the input convolution and the recurrent convolution, both
      producing the 4 gates: ``T * H_out * W_out * (kernel.size + recurrent_kernel.size)``;
    - ``Dense``: ``kernel.size`` per input row.

    Biases, batch normalisation, activations, pooling and the gates' element-wise products are not
    counted (a few percent at most). FLOPs = 2 x MACs. Layers with weights of another type are
    listed in ``uncounted``.
    """
    by_type: dict[str, int] = {}
    uncounted: list[str] = []

    def shape(tensor) -> tuple:
        return tuple(int(d) if d is not None else 1 for d in tensor.shape)

    def visit(layer) -> None:
        kind = type(layer).__name__
        if hasattr(layer, "layers") and layer.layers:  # nested model
            for inner in layer.layers:
                visit(inner)
            return
        if kind in ("Conv2D", "Conv1D", "Conv3D"):
            out = shape(layer.output)
            macs = math.prod(out[1:-1]) * int(math.prod(layer.kernel.shape))
        elif kind in ("Conv2DTranspose", "Conv1DTranspose", "Conv3DTranspose"):
            inp = shape(layer.input)
            macs = math.prod(inp[1:-1]) * int(math.prod(layer.kernel.shape))
        elif kind in ("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"):
            inp, out = shape(layer.input), shape(layer.output)
            steps = inp[1]
            spatial = out[-(len(inp) - 3) - 1 : -1]
            cell = getattr(layer, "cell", layer)
            weights = int(math.prod(cell.kernel.shape)) + int(math.prod(cell.recurrent_kernel.shape))
            macs = steps * math.prod(spatial) * weights
        elif kind == "Dense":
            inp = shape(layer.input)
            macs = math.prod(inp[1:-1]) * int(math.prod(layer.kernel.shape))
        else:
            if layer.weights and kind not in ("BatchNormalization", "LayerNormalization"):
                uncounted.append(f"{layer.name} ({kind})")
            return
        by_type[kind] = by_type.get(kind, 0) + int(macs)

    for layer in model.layers:
        visit(layer)
    macs = sum(by_type.values())
    return {"macs_by_type": by_type, "macs": macs, "forward_flops": 2 * macs, "uncounted": uncounted}


def matmul_peak(tf, n: int, dtype: str, repeats: int, chain: int = 8, device: str | None = None) -> dict:
    """GFLOP/s of ``chain`` dependent ``n x n`` matmuls in one ``tf.function`` call, ``repeats`` calls."""
    with tf.device(device or ("/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0")):
        rng = tf.random.Generator.from_seed(0)
        a = tf.cast(rng.normal((n, n)), dtype)
        b = tf.cast(rng.normal((n, n)) / math.sqrt(n), dtype)

        @tf.function
        def run(x):
            for _ in range(chain):
                x = tf.linalg.matmul(x, b)
            return x

        run(a).numpy()  # trace and warm up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(a).numpy()
            times.append(time.perf_counter() - t0)
    flops = 2.0 * n**3 * chain
    gflops = [flops / t / 1e9 for t in times]
    return {"n": n, "dtype": dtype, "chain": chain, "seconds": times, "gflops": gflops, "summary": summarise(gflops)}
