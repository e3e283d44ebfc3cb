"""Brain growth (QUBIQ 2020): 2D neonatal brain MRI; the brain outlined by 7 experts.

The experts' disagreement sits on the faint boundary between brain and cerebrospinal fluid.
The study's plain deep U-Net (no ConvLSTM: it did not help here) with strong spatial dropout.
"""

from common.cli import main
from common.spec import DatasetSpec, Settings
from common.switches import demo_settings

task = 1  # brain-growth has a single task

DATASET = DatasetSpec(
    name="brain-growth",
    title="Brain growth (neonatal MRI)",
    modality="MRI",
    channels=1,
    tasks=1,
    experts=7,
    image_shape=(256, 256),
    n_train=34,
    n_validation=5,
    n_test=10,
    n_held_out=5,
    task_names=("brain",),
)

# The original study: deep U-Net with spatial dropout 0.5, 256 px, batch 1, 500 epochs.
STUDY = Settings(
    input_size=256,
    depth=5,
    base_filters=16,
    convlstm=False,
    dropout="spatial",
    dropout_rate=0.5,
    batch_size=1,
    learning_rate=1e-4,
    epochs=500,
    flip=True,
)

# CPU-sized defaults for --demo (a few minutes on 2 cores).
DEMO = demo_settings(
    STUDY, input_size=128, depth=4, base_filters=8, dropout_rate=0.2, batch_size=2, learning_rate=1e-3, epochs=30
)

if __name__ == "__main__":
    main(DATASET, STUDY, DEMO, task)
