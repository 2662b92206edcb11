"""The short human report written next to every manifest (report.md)."""
from __future__ import annotations

__all__ = ["render_report"]


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB"


def render_report(m: dict) -> str:
    v, ops, mem = m["verification"], m["ops"], m["memory"]
    cal = m["calibration"]
    lines = [
        f"# {m['model']['name']} for {m['device']['display_name']}",
        "",
        f"- backend: {m['backend']['name']} ({m['backend'].get('delegate', '-')}), precision {m['precision']}",
        f"- artifact: `{m['artifact']['file']}`, {_mb(m['artifact']['size_bytes'])}",
        f"- weights: {m['weights']['source']}" + (f" (sha256 {m['weights']['sha256'][:12]}…)"
                                                  if m['weights']['sha256'] else ""),
        f"- calibration: {cal['count']} images from {cal['source']}" if cal else "- calibration: none (float)",
        f"- verification on {v['samples']} inputs ({v['source']}): SQNR {v['sqnr_db']:.2f} dB, cosine "
        f"{v['cosine']:.5f}, max abs {v['max_abs_error']:.4g}, top-1 agreement {v['top1_agreement']:.0%} "
        f"— {'passed' if v['passed'] else 'FAILED'}",
        f"- ops: {ops['delegated_ops']} delegated in {ops['delegate_calls']} delegate calls, "
        f"{ops['non_delegated_ops']} outside" + (f" ({', '.join(f'{k}×{n}' for k, n in ops['non_delegated'].items())})"
                                                 if ops['non_delegated'] else ""),
        f"- memory estimate: {_mb(mem['total_bytes'])} of {_mb(mem['budget_bytes'])} budget",
        f"- compiled in {m['compile_seconds']} s with edgevit {m['tool_versions']['edgevit']}",
        "",
        "Preprocess inputs exactly as `manifest.json` → `preprocessing` says.",
        "",
    ]
    return "\n".join(lines)
