"""Kidney (QUBIQ 2020): 2D abdominal CT slices in Hounsfield units; one kidney outlined by 3 experts.

CT intensities span about -1024..1051 HU; the kidney sits in a narrow soft-tissue range, so the
study windowed the images to 0..255 HU before rescaling (its finding: windowing is crucial here).
No flips: left and right kidneys are not mirror images of one another in these slices.
"""

from common.cli import main
from common.spec import DatasetSpec, Settings
from common.switches import demo_settings

task = 1  # kidney has a single task

DATASET = DatasetSpec(
    name="kidney",
    title="Kidney CT",
    modality="CT",
    channels=1,
    tasks=1,
    experts=3,
    image_shape=(497, 497),
    n_train=20,
    n_validation=4,
    n_test=4,
    n_held_out=4,
    task_names=("kidney",),
)

# The original study: deep U-Net with ConvLSTM decoder, 512 px, batch 1, 500 epochs.
STUDY = Settings(
    input_size=512,
    depth=5,
    base_filters=16,
    convlstm=True,
    dropout="spatial",
    dropout_rate=0.2,
    batch_size=1,
    learning_rate=1e-4,
    epochs=500,
    ct_window=(0.0, 255.0),
    flip=False,
)

# CPU-sized defaults for --demo (a few minutes on 2 cores).
DEMO = demo_settings(STUDY, input_size=128, depth=4, base_filters=8, batch_size=2, learning_rate=1e-3, epochs=60)

if __name__ == "__main__":
    main(DATASET, STUDY, DEMO, task)
