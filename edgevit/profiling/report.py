"""A profile on disk: ``profiles/DEVICE-TIMESTAMP.json`` plus ``.md`` for people and a ``.png`` of the top ops.

Files are created atomically and exclusively: a second profile in the same second gets ``-2``, never
replaces the first.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

from .._io import atomic_create_bytes
from ..errors import EdgevitError

__all__ = ["write_profile", "render_markdown", "render_chart", "module_group", "MODULE_DEPTH"]

TOP = 15
MODULE_DEPTH = 4  # "stages.2.blocks.0": a block of the zoo models; deeper paths are one op each


def module_group(path: str | None, depth: int = MODULE_DEPTH) -> str:
    if not path:
        return "(no module: layout/quantize)"  # input layout transposes, (de)quantize at the graph edges
    return ".".join(path.split(".")[:depth])


def _mb(n) -> str:
    return f"{n / 2**20:.1f} MB" if n else "-"


def _ms(v) -> str:
    return f"{v:.3f}" if v is not None else "-"


def render_markdown(r: dict) -> str:
    a, w = r["artifact"], r["wall_ms"]
    info = r["target"].get("device_info", {})
    lines = [f"# Profile: {a['model']} ({a['backend']} {a['precision']}, compiled for {a['device']})", "",
             f"Run via `{r['settings']['via']}` on {info.get('soc') or info.get('model') or r['target']}, "
             f"{r['settings']['threads']} thread(s), {w['runs']} timed runs after {r['settings']['warmup']} "
             f"warm-up; {r['created']}.", "",
             "| wall ms min | median | p90 | mean | load ms | peak memory | ops sum ms |",
             "|---:|---:|---:|---:|---:|---:|---:|",
             f"| {w['min']:.3f} | {w['median']:.3f} | {w['p90']:.3f} | {w['mean']:.3f} | {_ms(r['load_ms'])} | "
             f"{_mb(r['peak_memory_bytes'])} | {r['ops_total_ms']:.3f} |", "",
             f"Execution time: {r['timing_source']}. Per-op time: {r['op_timing']}.", "",
             f"## Top {TOP} operator types", "", "| operator | ops | ms / run (median) | share |",
             "|---|---:|---:|---:|"]
    for g in r["op_types"][:TOP]:
        lines.append(f"| {g['name']} | {g['ops']} | {g['ms']:.3f} | {g['share']:.1%} |")
    lines += ["", f"## By module (depth {r['module_depth']}; mapping: {r['module_mapping']})", "",
              "| module | ops | ms / run (median) | share | top ops |", "|---|---:|---:|---:|---|"]
    for g in r["modules"][:TOP * 2]:
        ops = sorted((o for o in r["ops"] if _group_of(o, r) == g["name"]), key=lambda o: -o["ms"])[:3]
        top = "; ".join(f"{_leaf(o, g['name'])}{o['op_type'].split(' (')[0]} {o['ms']:.3f}" for o in ops)
        lines.append(f"| {g['name']} | {g['ops']} | {g['ms']:.3f} | {g['share']:.1%} | {top} |")
    if r.get("delegate_calls"):
        lines += ["", "## Delegate calls", "", "| # | backend | ops | calls | median ms | mean ms |",
                  "|---:|---|---:|---:|---:|---:|"]
        for d in r["delegate_calls"]:
            lines.append(f"| {d['index']} | {d['backend']} | {d['ops']} | {d['calls']} | {_ms(d['median_ms'])} | "
                         f"{_ms(d['mean_ms'])} |")
    lines += ["", "## Device and runtime", "", "```", json.dumps(r["target"], indent=2),
              json.dumps(r["host_versions"]), "```"]
    if r["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r["notes"]]
    return "\n".join(lines) + "\n"


def _leaf(op: dict, group: str) -> str:
    """The op's module below its group ("mlp.fc1"), as a prefix for the op type."""
    rest = (op["module"] or "")[len(group) + 1:]
    return f"{rest}: " if rest else ""


def _group_of(op: dict, r: dict) -> str:
    return module_group(op["module"], r["module_depth"])


def render_chart(r: dict) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=90)
    for ax, groups, title in ((axes[0], r["op_types"], "operator types"), (axes[1], r["modules"], "modules")):
        top = groups[:12][::-1]
        ax.barh([g["name"][:38] for g in top], [g["ms"] for g in top], color="#4C72B0")
        ax.set_xlabel("ms per run")
        ax.set_title(f"top {title}", fontsize=10)
        ax.tick_params(axis="y", labelsize=7)
    a, w = r["artifact"], r["wall_ms"]
    fig.suptitle(f"{a['model']} {a['backend']}/{a['precision']} via {r['settings']['via']}: "
                 f"median {w['median']:.2f} ms, {r['settings']['threads']} thread(s)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_profile(folder: Path, device: str, started: float, report: dict) -> dict:
    """Claim ``DEVICE-TIMESTAMP`` (or ``-2``, ``-3``...) by creating the .json exclusively; then .md and .png."""
    base = f"{device}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(started))}"
    chart = render_chart(report)
    for n in range(1, 1000):
        stem = base if n == 1 else f"{base}-{n}"
        paths = {ext: folder / f"{stem}.{ext}" for ext in ("json", "md", "png")}
        if any(p.exists() for p in paths.values()):
            continue
        report["files"] = {ext: str(p) for ext, p in paths.items()}
        try:
            atomic_create_bytes(paths["json"], (json.dumps(report, indent=2) + "\n").encode())
        except FileExistsError:
            continue  # another profile took the name in between
        atomic_create_bytes(paths["md"], render_markdown(report).encode())
        atomic_create_bytes(paths["png"], chart)
        return report["files"]
    raise EdgevitError(f"{folder} already holds 999 profiles named {base}*; move some away.")
