"""The latency model: the fit recovers known factors, the graph walk matches what XNNPACK runs, a real
.pte's calibrated estimate lands near its measured time, and every bad input is a clear exit 2."""
from __future__ import annotations

import dataclasses
import json
import random

import pytest

from edgevit.backends.cost import ModelWork, WorkItem
from edgevit.cli import main
from edgevit.estimate.model import CostModel, Observation, OpCost, fit

pytestmark = pytest.mark.filterwarnings("ignore")


# ---------------------------------------------------------------------------------- synthetic fit

def _synthetic_truth() -> CostModel:
    return CostModel("synthetic", {
        "gemm/fp32": OpCost(1 / 100e9, 1 / 80e9, 1 / 40e9, 2e-6, "truth"),
        "binary/fp32": OpCost(0.0, 1 / 50e9, 0.0, 0.5e-6, "truth"),
        "transpose/fp32": OpCost(0.0, 1 / 20e9, 0.0, 0.3e-6, "truth"),
    }, tile_m=7, tile_n=16, dispatch_s={"fp32": 0.8e-6}, call_s={"fp32": 50e-6}, unprofiled={"fp32": 0.02})


def _synthetic_model(rng: random.Random, n: int) -> ModelWork:
    items = []
    for _ in range(n):
        m, nn, k = rng.choice([1, 16, 49, 196, 784, 3136]), rng.choice([24, 64, 100, 320, 770, 1280]), \
            rng.choice([32, 64, 128, 320, 640, 1280])
        w = nn * k * 4
        items.append(WorkItem("gemm", "fp32", m * nn * k, (m * k + m * nn) * 4 + w, "s", "linear",
                              (1, m, nn, k), w))
        elems = rng.choice([3136, 12544, 50176, 200704])
        items.append(WorkItem("binary", "fp32", elems, 12 * elems, "s", "add"))
        items.append(WorkItem("transpose", "fp32", elems, 8 * elems, "s", "layout"))
    return ModelWork(f"synthetic{n}", (1, 3, 224, 224), "fp32", items)


@pytest.mark.unit
def test_fit_recovers_known_factors():
    truth, rng = _synthetic_truth(), random.Random(0)
    observations = []
    for n in (20, 30, 40, 50):
        work = _synthetic_model(rng, n)
        events = [(i.category, truth.item_seconds(i) * 1e3 * (1 + rng.gauss(0, 0.03))) for i in work.items]
        inside = sum(ms for _, ms in events)
        wall = inside * 1.02 + len(events) * 0.8e-3 + 50e-3
        observations.append(Observation(work, events, None, wall, work.model))
    fitted = fit(observations, "synthetic")
    assert (fitted.tile_m, fitted.tile_n) == (7, 16)
    gemm, true_gemm = fitted.ops["gemm/fp32"], truth.ops["gemm/fp32"]
    assert gemm.unit_s == pytest.approx(true_gemm.unit_s, rel=0.05)
    assert gemm.weight_byte_s == pytest.approx(true_gemm.weight_byte_s, rel=0.15)
    for key in ("binary/fp32", "transpose/fp32"):  # per element: units and bytes move together here
        item = next(i for i in observations[0].work.items if f"{i.category}/{i.precision}" == key)
        assert fitted.item_seconds(item) == pytest.approx(truth.item_seconds(item), rel=0.05), key
    assert fitted.dispatch_s["fp32"] == pytest.approx(0.8e-6, rel=0.3)
    held_out = _synthetic_model(rng, 25)
    assert fitted.predict(held_out).total_ms == pytest.approx(truth.predict(held_out).total_ms, rel=0.03)


@pytest.mark.unit
def test_calibration_round_trips(tmp_path):
    model = _synthetic_truth()
    model.save(tmp_path / "c.json")
    loaded = CostModel.load(tmp_path / "c.json")
    work = _synthetic_model(random.Random(1), 5)
    assert loaded.predict(work).total_ms == pytest.approx(model.predict(work).total_ms, rel=1e-9)


@pytest.mark.unit
def test_ops_outside_the_delegate_cost_portable_time_and_delegate_calls():
    model = _synthetic_truth()
    model.ops["portable/fp32"] = OpCost(1e-9, 0.0, 0.0, 1e-6, "truth")
    gemm = WorkItem("gemm", "fp32", 64 * 64 * 64, 3 * 64 * 64 * 4, "s", "linear", (1, 64, 64, 64), 64 * 64 * 4)
    outside = WorkItem("portable", "fp32", 4096, 2 * 4096 * 4, "s", "cumsum")
    inside = model.predict(ModelWork("one", (1,), "fp32", [gemm, gemm, gemm]))
    after = [dataclasses.replace(gemm, partition=k) for k in (1, 2)]  # behind one and two outside steps
    split = model.predict(ModelWork("split", (1,), "fp32", [gemm, outside, after[0], outside, after[1]]))
    assert (inside.partitions, inside.outside_ops, split.partitions, split.outside_ops) == (1, 0, 3, 2)
    portable_ms = 2 * model.item_seconds(outside) * 1e3 * (1 + model.unprofiled["fp32"])
    assert split.outside_ms == pytest.approx(portable_ms)
    assert split.basis["portable/fp32"] == "truth"  # its own line, never XNNPACK's data movement
    # two more items dispatched, two more delegate calls entered
    assert split.total_ms - inside.total_ms == pytest.approx(
        portable_ms + 2 * model.dispatch_s["fp32"] * 1e3 + 2 * 2.0e-6 * 1e3)
    with pytest.raises(Exception, match="portable/int8"):  # no silent fallback to a movement rate
        CostModel("bare", {"movement/fp32": OpCost(0, 1e-9, 0, 0, "x")}).predict(
            ModelWork("m", (1,), "fp32", [WorkItem("portable", "int8", 10, 10, "s", "x")]))


@pytest.mark.unit
def test_the_replay_knows_the_ops_xnnpack_takes():
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS

    from edgevit.backends.executorch.xnnpack_replay import XNNPACK_EDGE_OPS

    assert XNNPACK_EDGE_OPS == {config.target_name for config in ALL_PARTITIONER_CONFIGS}


@pytest.mark.integration
def test_predicted_delegate_calls_and_ops_outside_match_the_lowering_and_its_profile(tmp_path, monkeypatch):
    """cumsum, LayerNorm and a token mean stay outside XNNPACK: the replay must say how many and where the
    delegated graph splits, as the real lowering (manifest) and its ETDump (profile) show."""
    from pathlib import Path

    from edgevit.backends import get_backend
    from edgevit.estimate import model_work
    from edgevit.estimate.observe import observation_from_profile

    monkeypatch.chdir(Path(__file__).parent)  # `user_models:...` resolves like a user's package in the cwd
    model = "user_models:build_partly_outside"
    assert main(["compile", model, "--device", "host", "--backend", "executorch", "--precision", "fp32",
                 "--input-shape", "1,3,32,32", "--num-verify", "2", "-o", str(tmp_path)]) == 0
    folder = next(tmp_path.glob("*-host"))
    ops = json.loads((folder / "manifest.json").read_text())["ops"]
    work = model_work(model, "fp32", (1, 3, 32, 32), None, get_backend("executorch").cost_replay())
    assert (work.partitions(), work.outside()) == (ops["delegate_calls"], ops["non_delegated_ops"]) == (4, 3)
    assert main(["profile", str(folder), "--runs", "5", "--warmup", "1", "--json"]) == 0
    profile_path = next((folder / "profiles").glob("*.json"))
    assert len(json.loads(profile_path.read_text())["delegate_calls"]) == 4
    observation = observation_from_profile(profile_path)
    portable = [ms for kind, ms in observation.events if kind == "portable"]
    assert len(portable) == 3 and all(ms > 0 for ms in portable)  # paired one to one with the work items


# ------------------------------------------------------------------------ a real .pte, end to end

@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """shvit_micro compiled for host (fp32), profiled here with `edgevit profile`, calibrated from it."""
    from edgevit.compile import CompileOptions, compile_model

    root = tmp_path_factory.mktemp("estimate")
    result = compile_model(CompileOptions(model="shvit_micro", device="host", backend="executorch",
                                          precision="fp32", output_root=root, num_verify=2))
    assert main(["profile", str(result.out_dir), "--runs", "30", "--warmup", "5", "--json"]) == 0
    calibration = root / "cal" / "host.json"
    assert main(["calibrate", str(root), "--device", "host", "-o", str(calibration)]) == 0
    profile = json.loads(next((result.out_dir / "profiles").glob("*.json")).read_text())
    return root, calibration, profile


@pytest.mark.integration
@pytest.mark.slow
def test_graph_walk_matches_the_operators_xnnpack_ran(profiled):
    _, calibration, _ = profiled
    report = json.loads(calibration.read_text())["fit_report"]
    assert report["skipped"] == {}, report["skipped"]  # every kind: as many work items as ETDump events
    assert report["aligned_ops"] > 100


@pytest.mark.integration
@pytest.mark.slow
def test_calibrated_estimate_lands_near_the_measured_time(profiled, capsys):
    _, calibration, profile = profiled
    capsys.readouterr()
    assert main(["estimate", "shvit_micro", "--device", "host", "--precision", "fp32",
                 "--calibration", str(calibration), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    measured = profile["wall_ms"]["median"]
    assert result["total_ms"] == pytest.approx(measured, rel=0.35)
    assert result["calibration_file"] == str(calibration)
    assert {s["name"] for s in result["stages"]} >= {"patch_embed", "stages.0", "head"}
    assert sum(s["ms"] for s in result["stages"]) < result["total_ms"]
    assert all(k["basis"].startswith("calibrated") or "pooled" in k["basis"] for k in result["kinds"])


@pytest.mark.integration
def test_uncalibrated_estimate_from_derived_peaks(capsys):
    assert main(["estimate", "shvit_micro", "--device", "rpi5", "--precision", "int8",
                 "--calibration-dir", "/nonexistent-calibrations", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["figures"] == "uncalibrated: profile derived peaks"
    assert result["calibration_file"] is None
    kinds = {k["kind"] for k in result["kinds"]}
    assert "gemm/int8" in kinds and "softmax/fp32" in kinds  # softmax stays float inside an int8 model
    # int8 on an A76 (76.8 GMAC/s peak) must be predicted faster than fp32 (19.2)
    assert main(["estimate", "shvit_micro", "--device", "rpi5", "--precision", "fp32",
                 "--calibration-dir", "/nonexistent-calibrations", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_ms"] > result["total_ms"]


# ------------------------------------------------------------------------------------- bad input

def _error_text(capsys) -> str:
    err = capsys.readouterr().err
    return " ".join(err[err.index("error:"):].split()) if "error:" in err else ""


# What the message must name (not its wording): the wrong name or value, the file or option involved.
@pytest.mark.parametrize("args, expected", [
    (["estimate", "shvit_s9", "--device", "pixel8"], ["'shvit_s9'"]),
    (["estimate", "shvit_micro", "--device", "pixel9"], ["'pixel9'"]),
    (["estimate", "shvit_micro", "--device", "pixel8", "--precision", "int4"], ["'int4'", "int8"]),
    # no `compute` figures in the profile, and no calibration file where it looked
    (["estimate", "shvit_micro", "--device", "iphone15-pro"],
     ["iphone15-pro", "compute", "/nonexistent-calibrations/iphone15-pro.json"]),
    (["estimate", "shvit_micro", "--device", "pixel8", "--measure-peaks"], ["--measure-peaks", "host", "'pixel8'"]),
    (["estimate", "shvit_micro", "--device", "pixel8", "--input-shape", "1,3,64"], ["1,3,64"]),
    (["calibrate", "/nonexistent-profiles", "--device", "host"], ["/nonexistent-profiles"]),
])
@pytest.mark.unit
def test_bad_input_is_a_clear_error(args, expected, capsys):
    assert main([*args, "--calibration-dir", "/nonexistent-calibrations"] if args[0] == "estimate" else args) == 2
    text = _error_text(capsys)
    for fragment in expected:
        assert fragment in text, (fragment, text)


@pytest.mark.unit
def test_bad_calibration_files(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    assert main(["estimate", "shvit_micro", "--device", "pixel8", "--calibration", str(corrupt)]) == 2
    assert str(corrupt) in _error_text(capsys)
    other = tmp_path / "other.json"
    _synthetic_truth().save(other)
    assert main(["estimate", "shvit_micro", "--device", "pixel8", "--calibration", str(other)]) == 2
    text = _error_text(capsys)
    assert str(other) in text and "'synthetic'" in text and "'pixel8'" in text  # whose it is, whose was asked
    assert main(["estimate", "shvit_micro", "--device", "pixel8", "--calibration", str(tmp_path / "none.json")]) == 2
    assert str(tmp_path / "none.json") in _error_text(capsys)
    assert main(["calibrate", str(tmp_path), "--device", "host"]) == 2
    text = _error_text(capsys)
    assert "'host'" in text and str(tmp_path) in text  # the device, and where it looked for its profiles
