"""Pancreas (QUBIQ 2021): 3D abdominal CT volumes in Hounsfield units; the pancreas outlined by 2 raters.

40 training volumes, each stored with its slice axis first (slices x 512 x 512; 36 to 194 slices), in
``training_data_v3_QC/pancreas/case<N>-<M>/`` (no ``Training/`` level). Values below -1500 HU lie outside
the scanner's field of view. The networks are 2D: they train on the slices where a rater marked the
pancreas plus a margin of unmarked ones, every slice is predicted and the maps are stacked back into a
volume on the image's grid; the score is one Dice per volume and threshold, as the challenge states it.
CT is windowed to -100..240 HU (fat to enhanced parenchyma). No flips: the gland lies across the body,
its head on the right, and is not mirror-symmetric.
"""

from common.cli import main
from common.datasets import PANCREAS

task = 1  # pancreas has a single task

# What the dataset is (raters, volume shape, splits), this project's study preset for it and the CPU-sized
# demo's: common/datasets.py, PANCREAS.
DATASET, STUDY, DEMO = PANCREAS.spec, PANCREAS.study, PANCREAS.demo

if __name__ == "__main__":
    main(DATASET, STUDY, DEMO, task)
