"""Pancreatic lesion (QUBIQ 2021): 3D abdominal CT volumes; lesions of the pancreas outlined by 2 raters.

22 training volumes, stored as the pancreas set's (slices first, 512 x 512 in-plane, no ``Training/``
level, ``case<N>-<M>`` names). Lesions are small and span few slices, and for some volumes one rater
marked none at all: that rater's mask is empty, and the consensus there is at most one half. Trained as
2D slices (those a rater marked, plus a margin), predicted slice by slice and stacked back, scored per
volume; CT windowed to -100..240 HU, where hypodense lesions stand out from the enhanced gland; no flips.
"""

from common.cli import main
from common.datasets import PANCREATIC_LESION

task = 1  # pancreatic-lesion has a single task

# What the dataset is (raters, volume shape, splits), this project's study preset for it and the CPU-sized
# demo's: common/datasets.py, PANCREATIC_LESION.
DATASET, STUDY, DEMO = PANCREATIC_LESION.spec, PANCREATIC_LESION.study, PANCREATIC_LESION.demo

if __name__ == "__main__":
    main(DATASET, STUDY, DEMO, task)
