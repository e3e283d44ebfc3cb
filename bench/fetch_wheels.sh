#!/usr/bin/env bash
# The wheels bench/gpu_check.sh carries to a GPU machine that has JAX/PyTorch, numpy, scipy, scikit-image,
# h5py, rich, absl-py, ml-dtypes and packaging (the device image's list) but not Keras or nibabel:
# keras, namex, optree (compiled, small) and nibabel, for CPython 3.12 on x86-64, into .whl/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0 nibabel==5.4.2
du -ch .whl/*.whl
