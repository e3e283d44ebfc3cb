"""The sha256 of every file the demo generators write, for one seed: proof that a change left the demo data alone.

Every documented demo score was measured on the data these generators write, so a change to the
generator's code that is not meant to change its output is checked by comparing this list before and
after it (``diff``). It runs the three demo commands as a user would, into a temporary folder:

    python tools/demo_hashes.py --seed 0 > before.txt
    ... change the code ...
    python tools/demo_hashes.py --seed 0 | diff before.txt - && echo identical

Each line is ``sha256  path`` (``sha256sum``'s format), the path relative to the demo root, sorted; the
lock files are left out (empty, and not data). The markers in ``.demo/`` are listed too (they name the
generator and its version, which a change must not alter either), hashed without their ``seconds``:
the generation's time is the one thing in them that differs between two runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The demo commands, one per kind of demo data: the four 2D sets, the MNI152 brain-growth set, the volume sets.
COMMANDS = {
    "2d": ["-m", "common.demo"],
    "mni152": ["-m", "common.data.anatomy"],
    "2021": ["-m", "common.data.volume_demo"],
}


def content(path: Path, root: Path) -> bytes:
    """The bytes compared: the file's, or a marker's JSON without its generation time."""
    if path.parent == root / ".demo" and path.suffix == ".json":
        info = json.loads(path.read_text())
        info.pop("seconds", None)
        return json.dumps(info, sort_keys=True).encode()
    return path.read_bytes()


def file_hashes(root: Path) -> list[str]:
    """``sha256  relative/path`` for every file under ``root`` but the lock files, sorted by path."""
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")):
        lines.append(f"{hashlib.sha256(content(path, root)).hexdigest()}  {path.relative_to(root).as_posix()}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/demo_hashes.py", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the demo seed, >= 0 (default: %(default)s)")
    parser.add_argument(
        "--kinds",
        default=",".join(COMMANDS),
        metavar="KINDS",
        help=f"comma-separated kinds among {', '.join(COMMANDS)} (default: all)",
    )
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in COMMANDS]
    if unknown or not kinds:
        parser.error(f"--kinds: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(COMMANDS)}")
    with tempfile.TemporaryDirectory(prefix="demo-hashes-") as tmp:
        for kind in kinds:
            out = Path(tmp) / kind
            command = [sys.executable, *COMMANDS[kind], "--out", str(out), "--seed", str(args.seed)]
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                sys.stderr.write(done.stdout + done.stderr)
                parser.exit(1, f"{parser.prog}: error: {' '.join(command[1:])} failed (exit {done.returncode})\n")
            for line in file_hashes(out):
                digest, path = line.split("  ", 1)
                print(f"{digest}  {kind}/{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
