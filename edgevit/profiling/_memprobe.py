"""Child process for peak-memory measurement: load one artifact, run it, print RSS figures as JSON.

``python -m edgevit.profiling._memprobe BACKEND ARTIFACT N C H W RUNS THREADS``

Importing torch and the runtimes peaks far above what running a small model adds, so the process's
lifetime high-water mark says nothing. Linux resets it on request (``/proc/self/clear_refs`` <- 5);
after that, VmHWM is the peak of loading and running the artifact, measured from VmRSS before loading.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def main(argv: list[str]) -> int:
    backend_name, artifact, *dims = argv
    n, c, h, w, runs, threads = map(int, dims)
    import torch

    from ..backends import get_backend
    backend = get_backend(backend_name)
    x = torch.zeros(n, c, h, w)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    baseline = _status_kib("VmRSS")
    run = backend.load(artifact, threads)
    for _ in range(runs):
        run(x)
    peak = _status_kib("VmHWM")
    print(json.dumps({"baseline_rss_bytes": baseline * 1024, "peak_rss_bytes": peak * 1024}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
