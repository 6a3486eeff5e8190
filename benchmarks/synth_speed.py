"""How fast `tbpr synth` writes a dataset: identities/s and images/s (1,000 identities should take < 60 s).

.venv/bin/python benchmarks/synth_speed.py [--identities 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from tasks.data.synth import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--identities", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None, help="default: generate's own choice")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "synth"
        began = time.perf_counter()
        summary = generate(out, identities=args.identities, seed=0, workers=args.workers, show_progress=False)
        seconds = time.perf_counter() - began
        cpu = sum(
            u.ru_utime + u.ru_stime
            for u in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
        )
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f} workers={args.workers or 'auto'}")
    print(
        f"identities={summary.identities} images={summary.images} captions={2 * summary.images} seconds={seconds:.1f}"
    )
    print(
        f"identities/s={summary.identities / seconds:.1f} images/s={summary.images / seconds:.1f} MB={size / 1e6:.1f}"
    )
    # CPU seconds (this process and its workers) say what an idle machine would take when others share it
    print(f"cpu_seconds={cpu:.1f} cpu_ms_per_image={1000 * cpu / summary.images:.1f}")


if __name__ == "__main__":
    main()
