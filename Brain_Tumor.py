"""Brain tumor (QUBIQ 2020): 2D brain MRI in 4 sequences (channels last); 3 nested tumour regions.

Task 1 is the largest region (oedema and tumour), task 2 the tumour core inside it, task 3 the
enhancing part inside the core. 3 experts; for some cases every expert left task 3 empty, which the
score handles (both empty = Dice 1).
"""

from common.cli import main
from common.spec import DatasetSpec, Settings
from common.switches import demo_settings

task = 1  # 1, 2 or 3

DATASET = DatasetSpec(
    name="brain-tumor",
    title="Brain tumour (4-sequence MRI)",
    modality="MRI",
    channels=4,
    tasks=3,
    experts=3,
    image_shape=(240, 240),
    n_train=28,
    n_validation=4,
    n_test=8,
    n_held_out=4,
    task_names=("whole tumour", "tumour core", "enhancing tumour"),
)

# The original study: deep U-Net with ConvLSTM decoder, 256 px x 4 channels, batch 1, 1500 epochs.
STUDY = Settings(
    input_size=256,
    depth=5,
    base_filters=16,
    convlstm=True,
    dropout="spatial",
    dropout_rate=0.1,
    batch_size=1,
    learning_rate=1e-4,
    epochs=1500,
    flip=True,
)

# CPU-sized defaults for --demo (a few minutes on 2 cores).
DEMO = demo_settings(STUDY, input_size=128, depth=4, base_filters=8, batch_size=2, learning_rate=1e-3, epochs=40)

if __name__ == "__main__":
    main(DATASET, STUDY, DEMO, task)
