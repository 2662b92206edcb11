"""Child process for peak-memory measurement: load one artifact, run it, print RSS figures as JSON.

A process's peak RSS can only grow, so each artifact is measured in a fresh process:
``python -m edgevit.profiling._memprobe BACKEND ARTIFACT N C H W RUNS THREADS``.
"""
from __future__ import annotations

import json
import resource
import sys


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main(argv: list[str]) -> int:
    backend_name, artifact, *dims = argv
    n, c, h, w, runs, threads = map(int, dims)
    import torch

    from ..backends import get_backend
    backend = get_backend(backend_name)
    x = torch.zeros(n, c, h, w)
    baseline = _peak_rss_bytes()  # interpreter + torch + runtime libraries, before the artifact
    run = backend.load(artifact, threads)
    for _ in range(runs):
        run(x)
    print(json.dumps({"baseline_rss_bytes": baseline, "peak_rss_bytes": _peak_rss_bytes()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
