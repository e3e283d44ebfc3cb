"""Brain tumor (QUBIQ 2020): 2D brain MRI in 4 sequences (channels last); 3 nested tumour regions.

Task 1 is the largest region (oedema and tumour), task 2 the tumour core inside it, task 3 the
enhancing part inside the core. 3 experts; for some cases every expert left task 3 empty, which the
score handles (both empty = Dice 1).
"""

from common.cli import main
from common.datasets import BRAIN_TUMOR

task = 1  # 1, 2 or 3

# What the dataset is (experts, image size, splits), the original study's settings for it and the CPU-sized
# demo's: common/datasets.py, BRAIN_TUMOR.
DATASET, STUDY, DEMO = BRAIN_TUMOR.spec, BRAIN_TUMOR.study, BRAIN_TUMOR.demo

if __name__ == "__main__":
    main(DATASET, STUDY, DEMO, task)
