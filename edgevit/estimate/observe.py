"""Per-operator measurements the latency model calibrates on: stored profiles, or a run here.

A stored profile is what ``edgevit profile`` writes (``ARTIFACT_DIR/profiles/DEVICE-TIMESTAMP.json``,
ExecuTorch artifacts only); its manifest says which model, shape and precision ran, so the work items
are rebuilt from the model itself and paired with the profile's XNNPACK events.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import EdgevitError
from .graph import category_of_event, model_work
from .model import Observation

__all__ = ["find_profiles", "observation_from_etdump", "observation_from_profile"]


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "profile_version" in data and "ops" in data else None


def find_profiles(roots: list[Path], device: str, threads: int = 1) -> tuple[list[Path], list[str]]:
    """Profile JSON files under ``roots`` of ExecuTorch artifacts compiled for ``device`` and run with
    ``threads``; the second list says which other profiles were passed over and why."""
    found, passed = [], []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise EdgevitError(f"{root} does not exist; give folders that hold artifact folders with profiles "
                               "(e.g. out/) or profile JSON files.")
        candidates = [root] if root.is_file() else sorted(root.glob("**/profiles/*.json"))
        for path in candidates:
            data = _read(path)
            if data is None:
                if root.is_file():
                    raise EdgevitError(f"{path} is not a profile written by `edgevit profile`.")
                continue
            art, settings = data.get("artifact", {}), data.get("settings", {})
            if art.get("device") != device:
                continue
            if art.get("backend") != "executorch":
                passed.append(f"{path}: {art.get('backend')} artifact (the model covers ExecuTorch/XNNPACK)")
            elif settings.get("threads") != threads:
                passed.append(f"{path}: ran with {settings.get('threads')} threads, not {threads}")
            else:
                found.append(path)
    return found, passed


def observation_from_profile(path: Path) -> Observation:
    data = _read(path)
    if data is None:
        raise EdgevitError(f"{path} is not a profile written by `edgevit profile`.")
    art = data["artifact"]
    manifest_path = Path(art.get("folder") or Path(path).parent.parent) / "manifest.json"
    if not manifest_path.exists():
        manifest_path = Path(path).parent.parent / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        raise EdgevitError(f"The profile {path} has no readable manifest.json next to its artifact "
                           f"({manifest_path}); the model it ran cannot be rebuilt.") from None
    num_classes = (manifest.get("model") or {}).get("num_classes")
    work = model_work(art["model"], art["precision"], tuple(art["input_shape"]), num_classes)
    # "ms" is the median per run (older profiles called it "median_ms")
    events = [(r["name"], r["median_ms"] if "median_ms" in r else r["ms"]) for r in data["ops"]
              if category_of_event(r["name"])]
    delegate = sum(d["median_ms"] for d in data.get("delegate_calls", []) if d.get("median_ms") is not None)
    wall = (data.get("runner_wall_ms") or data.get("wall_ms") or {}).get("median")
    return Observation(work, events, delegate or None, wall, str(path))


def observation_from_etdump(work, etdump: bytes, wall_ms: float | None, warmup: int = 0,
                            source: str = "") -> Observation:
    """An observation from an ETDump taken here (the benchmark and the tests)."""
    from ..profiling.etdump import parse_etdump

    parsed = parse_etdump(etdump, warmup=warmup, source=source or "the ETDump")
    events = [(r.name, r.median_ms) for r in parsed.ops if category_of_event(r.name)]
    delegate = sum(d["median_ms"] for d in parsed.delegate_calls if d.get("median_ms") is not None)
    return Observation(work, events, delegate or None, wall_ms, source)
