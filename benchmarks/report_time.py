"""What the Grad-CAM gallery and report.html add to a finished run, e.g. the demo's.

    python benchmarks/report_time.py RUN_DIR [--repeat 2]

Times (1) the ``gradcam`` report (the gallery and the CAM-response curve of the test
split, from the run's best checkpoint), with the data already loaded as in a run, writing
into a temporary copy of ``cam/``; (2) the ``html`` report, i.e. ``mtl report RUN_DIR``
in-process (every figure in PNG and SVG, then report.html), into a copy of the run. The
run directory itself is not changed. Prints seconds per step (best of ``--repeat``).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from mtlkit import Engine, load_config
from mtlkit.plugins.gradcam.gallery import GradCamOptions, first_checkpoint, write_gallery
from mtlkit.plugins.html_report import write_report
from mtlkit.results import RunResult


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    config = load_config(args.run_dir / "config.yaml")
    engine = Engine(config)
    started = time.perf_counter()
    _ = engine.data  # a run has its data in memory already: not counted
    print(f"data loaded in {time.perf_counter() - started:.1f} s (not counted)")
    result = RunResult(out_dir=args.run_dir, metrics={}, engine=engine)
    engine.load_checkpoint(first_checkpoint(result))
    configured = [o for entry, o in engine.components.reports if entry.name == "gradcam"]
    options = configured[0] if configured else GradCamOptions()
    gallery, report = [], []
    with tempfile.TemporaryDirectory(prefix="mtlkit-report-time-") as tmp:
        for _ in range(args.repeat):
            target = Path(tmp) / "cam"
            shutil.rmtree(target, ignore_errors=True)
            started = time.perf_counter()
            write_gallery(engine, target, options, Path(tmp))
            gallery.append(time.perf_counter() - started)
            copy = Path(tmp) / "run"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(args.run_dir, copy, ignore=shutil.ignore_patterns("checkpoints"))
            started = time.perf_counter()
            write_report(copy)
            report.append(time.perf_counter() - started)
    print(f"gradcam report (gallery + CAM curve): {min(gallery):.1f} s")
    print(f"html report (figures + report.html, = mtl report): {min(report):.1f} s")


if __name__ == "__main__":
    main()
