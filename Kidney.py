"""Kidney (QUBIQ 2020): 2D abdominal CT slices in Hounsfield units; one kidney outlined by 3 experts.

CT intensities span about -1024..1051 HU; the kidney sits in a narrow soft-tissue range, so the
study windowed the images to 0..255 HU before rescaling (its finding: windowing is crucial here).
No flips: left and right kidneys are not mirror images of one another in these slices.
"""

from common.cli import main
from common.datasets import KIDNEY

task = 1  # kidney has a single task

# What the dataset is (experts, image size, splits), the original study's settings for it and the CPU-sized
# demo's: common/datasets.py, KIDNEY.
DATASET, STUDY, DEMO = KIDNEY.spec, KIDNEY.study, KIDNEY.demo

if __name__ == "__main__":
    main(DATASET, STUDY, DEMO, task)
