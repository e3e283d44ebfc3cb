"""Brain growth (QUBIQ 2020): 2D neonatal brain MRI; the brain outlined by 7 experts.

The experts' disagreement sits on the faint boundary between brain and cerebrospinal fluid.
The study's plain deep U-Net (no ConvLSTM: it did not help here) with strong spatial dropout.
"""

from common.cli import main
from common.datasets import BRAIN_GROWTH

task = 1  # brain-growth has a single task

# What the dataset is (experts, image size, splits), the original study's settings for it and the CPU-sized
# demo's: common/datasets.py, BRAIN_GROWTH.
DATASET, STUDY, DEMO = BRAIN_GROWTH.spec, BRAIN_GROWTH.study, BRAIN_GROWTH.demo

if __name__ == "__main__":
    main(DATASET, STUDY, DEMO, task)
