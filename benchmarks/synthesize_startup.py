"""What one `tumorgen synthesize` call costs before and during its first sample, as a table.

Each row is measured in fresh Python processes (the median of --repeats), so imports are cold the way
a user's call finds them: the interpreter alone, `import torch`, `import monai` (what the inference
path no longer pays), TumorGen's synthesize path (api + pipeline), loading the bundled model, and the
whole CLI call of one sample (end to end, files written). Run it on an idle machine: a timing taken
beside another job measures that job.

    python benchmarks/synthesize_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = (
    ("python interpreter", "pass"),
    ("import torch", "import torch"),
    ("import monai (no longer on the inference path)", "import monai"),
    ("import the synthesize path (tumorgen.api, pipeline)", "import tumorgen.api, tumorgen.synthesis.pipeline"),
    ("... + load the bundled model", "from tumorgen import TumorGen; TumorGen.load(device='cpu')"),
)


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="processes per row; the median is printed")
    parser.add_argument("--steps", type=int, default=None, help="Euler steps of the CLI row (default: the model's)")
    args = parser.parse_args()

    from tumorgen.data.examples import example_cases, tumor_box
    from tumorgen.io.nifti import load_volume

    case = example_cases()[0]
    box = [str(v) for v in tumor_box(load_volume(case.mask, kind="mask").array > 0)]
    rows = [(name, [sys.executable, "-c", code]) for name, code in ROWS]
    with tempfile.TemporaryDirectory() as tmp:
        cli = [sys.executable, "-m", "tumorgen", "synthesize", "--input", str(case.image), "--box", *box,
               "--out", str(Path(tmp) / "out"), "--overwrite", "--no-progress"]
        if args.steps is not None:
            cli += ["--steps", str(args.steps)]
        rows.append((f"tumorgen synthesize, 1 sample into {case.name}, files written", cli))
        print(f"| step | median s ({args.repeats} fresh processes) | min s |")
        print("|---|---:|---:|")
        for name, argv in rows:
            times = [timed(argv) for _ in range(args.repeats)]
            print(f"| {name} | {statistics.median(times):.2f} | {min(times):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
