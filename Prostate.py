"""Prostate (QUBIQ 2020): 2D prostate MRI, 640 x 640 and some 960 x 640; 2 tasks, 6 experts.

Task 1 outlines the whole prostate, task 2 the transition zone inside it. One case was annotated by
only 5 experts: its consensus is the mean of the 5 masks it has.
"""

from common.cli import main
from common.spec import DatasetSpec, Settings
from common.switches import demo_settings

task = 1  # 1 or 2

DATASET = DatasetSpec(
    name="prostate",
    title="Prostate MRI",
    modality="MRI",
    channels=1,
    tasks=2,
    experts=6,
    image_shape=(640, 640),
    n_train=48,
    n_validation=7,
    n_test=13,
    n_held_out=7,
    task_names=("prostate", "transition zone"),
)

# The original study: deep U-Net with ConvLSTM decoder, 512 px, batch 1, 200 epochs.
STUDY = Settings(
    input_size=512,
    depth=5,
    base_filters=16,
    convlstm=True,
    dropout="spatial",
    dropout_rate=0.2,
    batch_size=1,
    learning_rate=1e-4,
    epochs=200,
    flip=True,
)

# CPU-sized defaults for --demo (a few minutes on 2 cores).
DEMO = demo_settings(STUDY, input_size=128, depth=4, base_filters=8, batch_size=2, learning_rate=1e-3, epochs=15)

if __name__ == "__main__":
    main(DATASET, STUDY, DEMO, task)
