#!/usr/bin/env python
"""`edgevit bench` for each family's smallest model (or --models), one markdown table at the end.

    python tools/bench_zoo.py                                   # 4 families, host, 1 thread
    python tools/bench_zoo.py --threads 1,2 --out zoo_bench.md

Each model's bench.json/bench.png stay under out/bench/MODEL-host/; the table collects the rows.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
for _noisy in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

from edgevit.profiling import BenchOptions, run_bench  # noqa: E402

DEFAULT_MODELS = ["efficientformer_l1", "efficientformerv2_s0", "tiny_vit_5m_224", "shvit_s1"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--device", default="host")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, help="Also write the markdown table here.")
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]

    lines = ["| model | backend/precision | threads | median ms | p90 ms | size MB | peak MB | SQNR dB | cosine "
             "| verified |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.models:
        print(f"benchmarking {name} …", flush=True)
        report = run_bench(BenchOptions(model=name, device=args.device, threads=threads, rounds=args.rounds))
        for r in report["rows"]:
            def f(v, fmt):
                return format(v, fmt) if v is not None else "-"
            verified = "-" if r["passed"] is None else ("yes" if r["passed"] else "no")
            error = " " + r["error"][:60] if r["error"] else ""
            lines.append(f"| {name} | {r['label']} | {r['threads']} | {f(r['median_ms'], '.2f')} | "
                         f"{f(r['p90_ms'], '.2f')} | "
                         f"{f(r['size_bytes'] and r['size_bytes'] / 2**20, '.2f')} | "
                         f"{f(r['peak_memory_bytes'] and r['peak_memory_bytes'] / 2**20, '.1f')} | "
                         f"{f(r['sqnr_db'], '.1f')} | {f(r['cosine'], '.5f')} | "
                         f"{verified}{error} |")
        lines.append(f"| {name} | auto choice | | {report['auto_choice']} | | | | | | |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
