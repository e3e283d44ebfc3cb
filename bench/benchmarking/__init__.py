"""The parts of ``bench/benchmark.py`` (the entry: options, ``main``, the workers' ``--worker JSON``).

- :mod:`~bench.benchmarking.settings`: what is measured (sections, presets, sizes, steps) and the workers' marker;
- :mod:`~bench.benchmarking.stats`: summaries, ratios, orders, learning-rate scaling, throughput of a segment;
- :mod:`~bench.benchmarking.flops`: FLOPs counted from a model's layers; the measured matmul peak;
- :mod:`~bench.benchmarking.study`: the study-style baseline's input (numpy augmentation in a Python generator);
- :mod:`~bench.benchmarking.machine`: CPU, memory, load average, GPUs;
- :mod:`~bench.benchmarking.worker`: the worker processes (loading, streams, building and timing the networks);
- :mod:`~bench.benchmarking.sections`: the parent's orchestration, one function per section;
- :mod:`~bench.benchmarking.report`: the markdown report of a run's ``state``.

Only ``worker`` imports TensorFlow, inside its functions; ``flops.matmul_peak`` and ``machine.gpu_details``
use the ``tf`` module a worker passes them. The parent imports ``worker`` (the entry dispatches ``--worker``)
but never calls it, so it never imports TensorFlow.
"""
