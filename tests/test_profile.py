"""`edgevit profile --via local`: real artifacts run in the real runtimes, ETDump parsed by ExecuTorch's Inspector."""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from edgevit.backends.executorch.etdump import parse_etdump
from edgevit.backends.executorch.runner import run_pte
from edgevit.cli import main
from edgevit.compile import CompileOptions, compile_model
from edgevit.errors import EdgevitError
from edgevit.profiling.profile import ProfileOptions, check_device, profile_artifact
from edgevit.profiling.report import write_profile

TESTS = Path(__file__).parent
SHAPE = "1,3,256,256"  # big enough that XNNPACK's whole-microsecond op times add up to the execution time


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """TinyConvNet (tests/user_models.py) compiled for host three ways."""
    root = tmp_path_factory.mktemp("artifacts")
    folders = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(TESTS)  # `user_models:...` resolves from the current directory
        for backend, precision in (("executorch", "fp32"), ("executorch", "int8"), ("litert", "int8")):
            result = compile_model(CompileOptions(
                model="user_models:build_tiny", device="host", backend=backend, precision=precision,
                input_shape=SHAPE, num_calib=4, num_verify=2, output_root=root / f"{backend}-{precision}"))
            folders[f"{backend}-{precision}"] = result.out_dir
    return folders


_PROFILES: dict[Path, dict] = {}


def _profile(folder: Path) -> dict:
    """One local profile per artifact per session (each is a fresh runtime process)."""
    if folder not in _PROFILES:
        _PROFILES[folder] = profile_artifact(ProfileOptions(artifact_dir=folder, via="local", runs=8, warmup=2,
                                                            threads=1))
    return _PROFILES[folder]


@pytest.mark.parametrize("key", ["executorch-fp32", "executorch-int8"])
@pytest.mark.integration
def test_pte_profile_has_real_per_op_numbers(artifacts, key):
    folder = artifacts[key]
    assert (folder / "etrecord.bin").stat().st_size > 0  # written at compile time, next to model.pte
    r = _profile(folder)
    wall = r["wall_ms"]
    assert wall["runs"] == 8 and len(r["warmup_times_ms"]) == 2  # warm-up executions dropped from the ETDump
    assert 0 < wall["min"] <= wall["median"] <= wall["p90"]
    # XNNPACK's own per-op events (medians) account for the execution (whole microseconds aside).
    assert r["ops_total_ms"] == pytest.approx(wall["median"], rel=0.2)
    (call,) = r["delegate_calls"]
    assert call["backend"] == "XnnpackBackend" and call["calls"] == 8
    assert call["median_ms"] == pytest.approx(wall["median"], rel=0.1)  # one delegate call is the whole model
    convs = [o for o in r["ops"] if o["op_type"].startswith("Convolution")]
    assert len(convs) == 2 and all(o["delegate"] == "XnnpackBackend" for o in convs)
    assert ("QC8" in convs[0]["op_type"]) == (key.endswith("int8"))  # int8 runs int8 kernels
    # Module grouping through the ETRecord: the two convolutions are features.0 and features.3.
    assert sorted(o["module"] for o in convs) == ["features.0", "features.3"]
    assert {o["module_type"] for o in convs} == {"torch.nn.modules.conv.Conv2d"}
    modules = {g["name"]: g for g in r["modules"]}
    assert {"features.0", "features.3", "head"} <= set(modules)
    assert modules["features.0"]["ms"] > 0 and modules["features.3"]["ms"] > 0
    assert r["load_ms"] > 0 and r["init_ms"] > 0 and r["peak_memory_bytes"] > 0
    assert r["artifact"]["device"] == "host" and r["host_versions"]["executorch"]
    # Files: JSON equal to what was returned, a markdown table, a PNG.
    files = {k: Path(v) for k, v in r["files"].items()}
    assert files["json"].parent == folder / "profiles" and files["json"].name.startswith("host-")
    assert json.loads(files["json"].read_text()) == json.loads(json.dumps(r))
    assert "| features.0 |" in files["md"].read_text()
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.integration
def test_tflite_profile_per_op_times_from_prefixes(artifacts):
    r = _profile(artifacts["litert-int8"])
    assert r["wall_ms"]["runs"] == 8 and r["timing_source"].startswith("wall clock")
    ops = {o["name"]: o for o in r["ops"]}
    convs = [o for o in r["ops"] if o["op_type"] == "CONV_2D"]
    assert len(convs) == 2 and sorted(o["module"] for o in convs) == ["features.0", "features.3"]
    # Prefix differences add up to the last prefix, the whole model, timed at another moment than the whole-model
    # runs: on a loaded machine the two medians can differ by tens of percent, so only the order of magnitude is
    # checked here (a prefix bug, e.g. cumulative instead of differential times, is off by the op count, ~10x).
    assert 0.25 < r["ops_total_ms"] / r["wall_ms"]["median"] < 4
    assert all(o["ms"] > 0 for o in convs)
    assert all(ops[n]["ms"] == 0.0 for n in ops if n.startswith("PAD"))  # folded into the convolution
    assert r["load_ms"] > 0 and r["peak_memory_bytes"] > 0 and Path(r["files"]["png"]).is_file()


@pytest.mark.integration
def test_profiles_are_never_overwritten(artifacts, tmp_path):
    """Two profiles in the same second: the second gets -2; the first file is untouched."""
    folder = tmp_path / "profiles"
    folder.mkdir()
    report = _profile(artifacts["executorch-fp32"])
    first = write_profile(folder, "host", 1_800_000_000.0, dict(report))
    before = Path(first["json"]).read_bytes()
    second = write_profile(folder, "host", 1_800_000_000.0, dict(report))
    assert Path(first["json"]).name == "host-20270115T080000Z.json"
    assert Path(second["json"]).name == "host-20270115T080000Z-2.json"
    assert Path(first["json"]).read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"host-20270115T080000Z{s}.{e}" for s in ("", "-2") for e in ("json", "md", "png"))


@pytest.mark.integration
def test_corrupt_or_empty_etdump_is_a_clear_error(artifacts):
    run = run_pte((artifacts["executorch-fp32"] / "model.pte").read_bytes(), runs=2, warmup=0, threads=1)
    good = parse_etdump(run.etdump)
    assert len(good.times_ms) == 2 and statistics.median(good.times_ms) > 0
    for data in (b"", b"not an etdump at all", run.etdump[: len(run.etdump) // 3]):  # empty, junk, truncated
        with pytest.raises(EdgevitError) as info:
            parse_etdump(data, source="phone.etdump")
        assert "phone.etdump" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(EdgevitError) as info:
        parse_etdump(run.etdump, warmup=2)  # nothing left to time
    assert re.search(r"\b2\b", str(info.value)) and "--warmup" in str(info.value)  # executions held, warm-up asked


@pytest.mark.unit
def test_not_an_artifact_folder(tmp_path, capsys):
    (tmp_path / "model.pte").write_bytes(b"x")
    assert main(["profile", str(tmp_path), "--via", "local"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert str(tmp_path) in err and "manifest.json" in err  # the folder, and the file it lacks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pte"]  # nothing written
    assert main(["profile", str(tmp_path / "missing")]) == 2
    assert str(tmp_path / "missing") in " ".join(capsys.readouterr().err.split())


@pytest.mark.unit
def test_artifact_for_another_device():
    manifest = {"device": {"name": "pixel8", "display_name": "Google Pixel 8"}}
    assert check_device(manifest, {}, force=False) is None  # this machine says nothing: allowed
    assert check_device(manifest, {"model": "Pixel 8"}, force=False) is None
    assert check_device(manifest, {"profile": "pixel8"}, force=False) is None
    with pytest.raises(EdgevitError) as e:
        check_device(manifest, {"profile": "rpi5"}, force=False)
    assert "'pixel8'" in str(e.value) and "'rpi5'" in str(e.value) and "--force" in str(e.value)
    with pytest.raises(EdgevitError) as e:
        check_device(manifest, {"model": "SM-S921B"}, force=False)
    assert "'SM-S921B'" in str(e.value)
    assert "anyway" in check_device(manifest, {"profile": "rpi5"}, force=True)
