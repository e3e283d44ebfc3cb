"""Prostate (QUBIQ 2020): 2D prostate MRI, 640 x 640 and some 960 x 640; 2 tasks, 6 experts.

Task 1 outlines the whole prostate, task 2 the transition zone inside it. One case was annotated by
only 5 experts: its consensus is the mean of the 5 masks it has.
"""

from common.cli import main
from common.datasets import PROSTATE

task = 1  # 1 or 2

# What the dataset is (experts, image size, splits), the original study's settings for it and the CPU-sized
# demo's: common/datasets.py, PROSTATE.
DATASET, STUDY, DEMO = PROSTATE.spec, PROSTATE.study, PROSTATE.demo

if __name__ == "__main__":
    main(DATASET, STUDY, DEMO, task)
