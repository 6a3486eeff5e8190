"""What checking DATA's content hash costs a reader: `tasks.data.check.content_hash` on a DATA folder
whose images.parquet is `--mb` MiB (random bytes: the hash reads bytes, it does not parse them), the
first call (streamed sha256) and a second one on the unchanged files (the memo: one stat per file).

    python benchmarks/data_hash.py [--mb 1024] [--work /tmp/tbpr-data-hash]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from tasks.data.check import content_hash
from tasks.data.layout import CAPTIONS, IMAGES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tbpr-data-hash"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    with open(args.work / IMAGES, "wb") as handle:
        for _ in range(args.mb):
            handle.write(os.urandom(1 << 20))
    (args.work / CAPTIONS).write_bytes(os.urandom(1 << 20))
    start = time.perf_counter()
    first = content_hash(args.work)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    again = content_hash(args.work)
    warm = time.perf_counter() - start
    assert first == again
    print(
        f"{args.mb + 1} MiB: first {cold:.2f} s ({(args.mb + 1) / cold:,.0f} MiB/s), unchanged again {warm * 1e3:.2f} ms"
    )
    shutil.rmtree(args.work)


if __name__ == "__main__":
    main()
