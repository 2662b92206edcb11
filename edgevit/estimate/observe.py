"""Per-operator measurements the latency model calibrates on: stored profiles, or a run here.

A stored profile is what ``edgevit profile`` writes (``ARTIFACT_DIR/profiles/DEVICE-TIMESTAMP.json``) of
an artifact whose backend has a cost model; its manifest says which model, shape and precision ran, so the
work items are rebuilt from the model itself by the backend's cost replay and paired with the profile's
operator events, which the same replay names by kind.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..backends import get_backend, list_backends
from ..backends.cost import CostReplay, ModelWork
from ..errors import EdgevitError
from .model import Observation
from .work import model_work

__all__ = ["find_profiles", "observation_from_profile", "observation_from_rows"]


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
            if art.get("backend") not in list_backends() or get_backend(art["backend"]).cost_replay() is None:
                passed.append(f"{path}: {art.get('backend')} artifact (its backend has no cost model)")
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
    replay = get_backend(art["backend"]).cost_replay()
    work = model_work(art["model"], art["precision"], tuple(art["input_shape"]), num_classes, replay)
    # "ms" is the median per run (older profiles called it "median_ms")
    events = _kinds(replay, [(r["name"], r["median_ms"] if "median_ms" in r else r["ms"]) for r in data["ops"]])
    delegate = sum(d["median_ms"] for d in data.get("delegate_calls", []) if d.get("median_ms") is not None)
    wall = (data.get("runner_wall_ms") or data.get("wall_ms") or {}).get("median")
    return Observation(work, events, delegate or None, wall, str(path))


def _kinds(replay: CostReplay, events: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """(event name, ms) -> (operator kind, ms); events that are not operators are dropped."""
    return [(kind, ms) for name, ms in events if (kind := replay.event_category(name)) is not None]


def observation_from_rows(work: ModelWork, replay: CostReplay, rows: list[tuple[str, float]],
                          delegate_ms: float | None, wall_ms: float | None, source: str = "") -> Observation:
    """An observation from per-operator (name, median ms) rows measured here (the benchmark and the tests)."""
    return Observation(work, _kinds(replay, rows), delegate_ms, wall_ms, source)
