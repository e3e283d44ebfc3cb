"""What the benchmark measures: its sections, the networks, sizes and steps, and the workers' answer marker.

Plain values only (no imports beyond the standard library), shared by the parent and the workers.
"""

from __future__ import annotations

from pathlib import Path

#: The checkout (the parent runs its workers and the demo scripts from here).
ROOT = Path(__file__).resolve().parents[2]
#: The script a worker process runs (``benchmark.py --worker JSON``): the entry, so each worker starts fresh.
ENTRY = ROOT / "bench" / "benchmark.py"
#: A worker's answers are the stdout lines starting with this, followed by one JSON object.
MARKER = "@@BENCH "
SECTIONS = ("throughput", "input", "inference", "memory", "flops", "tuning", "experts", "score", "suite", "gpu")
ALIASES = {"baseline": "tuning", "tuned": "tuning"}
DEFAULT_SECTIONS = ("throughput", "input", "inference", "memory", "flops", "tuning", "experts", "score")
SIZES = (128, 256, 512)
BUILDERS = ("plain", "convlstm")
#: Network presets (the kidney script's, whose dataset all training figures use): the CPU demo and the study.
PRESETS = {
    "demo": {"depth": 4, "base_filters": 8, "batch": 2},
    "study": {"depth": 5, "base_filters": 16, "batch": 1},
}
#: Steps per timed segment (full mode), by preset and input size; the first step of a segment is not timed.
FULL_STEPS = {
    ("demo", 128): 40,
    ("demo", 256): 20,
    ("demo", 512): 8,
    ("study", 128): 20,
    ("study", 256): 8,
    ("study", 512): 4,
}
#: What --quick measures: one configuration of each preset, between them both builders.
QUICK_CONFIGS = {("demo", "convlstm", 128), ("study", "plain", 128)}
#: The learning-rate reference of the tuning and score sections: the kidney demo preset (batch 2, 1e-3).
LR_REFERENCE = (2, 1e-3)
SUITE_TASKS = (
    ("Brain_Growth", 1),
    ("Brain_Tumor", 1),
    ("Brain_Tumor", 2),
    ("Brain_Tumor", 3),
    ("Kidney", 1),
    ("Prostate", 1),
    ("Prostate", 2),
)
NO_GPU = "no GPU visible; GPU figures not measured"
