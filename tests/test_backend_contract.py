"""The backend contract, from the outside: every registered backend lowers, loads, verifies and profiles a
micro model; and a backend defined only in tests/ (``torchscript_backend``) goes through ``compile``,
``bench``, ``profile --via local`` and ``estimate`` without a line changed in edgevit."""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import torch

from edgevit.backends import get_backend, list_backends
from edgevit.cli import main
from edgevit.compile import compare_outputs
from edgevit.errors import EdgevitError
from edgevit.models import prepare_model
from edgevit.progress import SilentProgress

TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture
def torchscript_plugin(monkeypatch):
    """$EDGEVIT_BACKENDS names the test backend; child processes (bench's memory probe) inherit it."""
    monkeypatch.setenv("EDGEVIT_BACKENDS", "torchscript_backend")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(str(TESTS))
    assert "torchscript" in list_backends()


def _write_profile(folder: Path, name: str, backends: list[str], by_family: str = "{}") -> None:
    """A desktop-like device profile whose compile.backends are ``backends`` (the first preferred)."""
    (folder / f"{name}.yaml").write_text(textwrap.dedent(f"""\
        name: {name}
        display_name: A test box ({', '.join(backends)})
        kind: desktop
        os: Linux
        soc: any
        cpu: {{clusters: [{{core: any, count: 2}}]}}
        memory: {{ram_gb: 4}}
        compile:
          backends: [{', '.join(backends)}]
          preferred_backend: {backends[0]}
          preferred_by_family: {by_family}
          default_precision: fp32
          threads: 1
          model_memory_mb: 512
        """))


@pytest.fixture
def ts_profiles(tmp_path) -> Path:
    """The one line a new backend needs in a device profile: its name under compile.backends."""
    folder = tmp_path / "profiles"
    folder.mkdir()
    _write_profile(folder, "ts-box", ["torchscript"])
    return folder


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("name", ["executorch", "litert"])
def test_every_builtin_backend_lowers_loads_verifies_and_profiles(name, tmp_path):
    backend = get_backend(name)
    model = prepare_model("shvit_micro")
    lowered = backend.lower(model.deployed, model.example, "fp32", None, SilentProgress())
    assert lowered.suffix == backend.suffix and lowered.data
    x = torch.randn(model.example.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        agreement = compare_outputs(model.reference(x), backend.load(lowered.data)(x))
    assert agreement.sqnr_db > 60
    artifact = tmp_path / f"model{backend.suffix}"
    artifact.write_bytes(lowered.data)
    for name_, blob in lowered.sidecars.items():
        (tmp_path / name_).write_bytes(blob)
    run = backend.profile_here(artifact, runs=3, warmup=1, threads=1)
    parsed = backend.parse_profile(run, artifact, warmup=1)
    assert len(parsed.times_ms) == 3 and all(t > 0 for t in parsed.times_ms)
    assert parsed.rows and all({"name", "op_type", "ms"} <= set(r) for r in parsed.rows)


@pytest.mark.integration
@pytest.mark.slow
def test_a_backend_defined_in_tests_runs_every_command(torchscript_plugin, ts_profiles, tmp_path, capsys):
    out = tmp_path / "out"
    profiles = ["--profiles", str(ts_profiles)]
    assert main(["compile", "shvit_micro", "--device", "ts-box", *profiles, "-o", str(out), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    folder = out / "shvit_micro-ts-box"
    assert manifest["backend"]["name"] == "torchscript" and manifest["artifact"]["file"] == "model.ts"
    assert manifest["verification"]["passed"] and manifest["verification"]["sqnr_db"] > 60
    assert (folder / "model.ts").is_file() and (folder / "report.md").is_file()

    assert main(["profile", str(folder), "--runs", "3", "--warmup", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["artifact"]["backend"] == "torchscript" and report["wall_ms"]["runs"] == 3
    assert any(r["op_type"] == "aten::linear" or r["op_type"] == "aten::conv2d" for r in report["ops"])
    assert Path(report["files"]["json"]).is_file()

    assert main(["bench", "shvit_micro", "--device", "ts-box", *profiles, "--rounds", "5",
                 "-o", str(tmp_path / "bench"), "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    row = next(r for r in bench["rows"] if r["backend"] == "torchscript")
    assert row["passed"] and row["median_ms"] > 0 and row["peak_memory_bytes"] is not None
    assert bench["auto_choice"] == {"1": "torchscript/fp32"}

    assert main(["estimate", "shvit_micro", "--device", "ts-box", *profiles]) == 2
    assert "no cost model" in capsys.readouterr().err
    with pytest.raises(EdgevitError, match="no cost model for backend 'torchscript'"):
        from edgevit.devices import get_device
        from edgevit.estimate import cost_backend
        cost_backend(get_device("ts-box", [ts_profiles]), "torchscript")


@pytest.mark.integration
def test_an_artifact_changed_since_compile_is_refused_before_it_runs(torchscript_plugin, ts_profiles, tmp_path,
                                                                    capsys):
    out = tmp_path / "out"
    assert main(["compile", "shvit_micro", "--device", "ts-box", "--profiles", str(ts_profiles), "-o", str(out)]) == 0
    artifact = out / "shvit_micro-ts-box" / "model.ts"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["profile", str(artifact.parent), "--runs", "1"]) == 2
    assert "is not the file that was compiled" in capsys.readouterr().err
    assert not (artifact.parent / "profiles").exists() or not any((artifact.parent / "profiles").iterdir())


@pytest.mark.integration
def test_auto_falls_back_to_a_backend_that_passes_and_says_so(torchscript_plugin, tmp_path, capsys):
    """The device prefers a backend whose artifact fails verification: auto takes the next one that passes
    (recorded in the manifest); asked for by name, the failing backend is an error and nothing is written."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    _write_profile(profiles, "two-box", ["torchscript-noisy", "torchscript"])
    args = ["compile", "shvit_micro", "--device", "two-box", "--profiles", str(profiles), "--num-verify", "2"]
    assert main([*args, "--backend", "torchscript-noisy", "-o", str(tmp_path / "named")]) == 2
    assert "failed verification" in capsys.readouterr().err
    assert not (tmp_path / "named" / "shvit_micro-two-box").exists()

    assert main([*args, "-o", str(tmp_path / "auto"), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["backend"]["name"] == "torchscript" and manifest["verification"]["passed"]
    choice = manifest["backend_choice"]
    assert (choice["preferred"], choice["chosen"]) == ("torchscript-noisy", "torchscript")
    assert choice["failed"][0]["backend"] == "torchscript-noisy" and choice["failed"][0]["sqnr_db"] < 60


@pytest.mark.integration
def test_auto_takes_the_backend_measured_for_the_model_family(torchscript_plugin, tmp_path, capsys):
    """A per-family choice in the profile (what `edgevit bench` measured fastest) wins over preferred_backend for
    that family only, and the manifest says which rule chose; a choice naming an unlisted backend is refused."""
    from edgevit.devices import ProfileError, load_profiles

    profiles = tmp_path / "profiles"
    profiles.mkdir()
    _write_profile(profiles, "fam-box", ["torchscript-noisy", "torchscript"], by_family="{shvit: torchscript}")
    args = ["compile", "shvit_micro", "--device", "fam-box", "--profiles", str(profiles), "--num-verify", "2"]
    assert main([*args, "-o", str(tmp_path / "auto"), "--json"]) == 0
    choice = json.loads(capsys.readouterr().out)["backend_choice"]
    assert (choice["preferred"], choice["chosen"], choice["failed"]) == ("torchscript", "torchscript", [])
    assert choice["rule"] == "profile fam-box: preferred_by_family[shvit]"

    bad = tmp_path / "bad"
    bad.mkdir()
    _write_profile(bad, "odd-box", ["torchscript"], by_family="{shvit: litert}")
    with pytest.raises(ProfileError, match=r"preferred_by_family names backends the device does not list"):
        load_profiles([bad])


@pytest.mark.unit
def test_a_profile_naming_an_unregistered_backend_is_refused(tmp_path):
    from edgevit.devices import ProfileError, load_profiles

    (tmp_path / "odd.yaml").write_text(textwrap.dedent("""\
        name: odd
        display_name: Odd
        kind: board
        os: Linux
        soc: any
        cpu: {clusters: [{core: any, count: 1}]}
        memory: {ram_gb: 1}
        compile: {backends: [tensorrt], preferred_backend: tensorrt, threads: 1, model_memory_mb: 64}
        """))
    with pytest.raises(ProfileError, match="tensorrt"):
        load_profiles([tmp_path])


@pytest.mark.unit
def test_a_plugin_that_cannot_be_imported_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("EDGEVIT_BACKENDS", "no_such_backend_module")
    with pytest.raises(EdgevitError, match="no_such_backend_module"):
        list_backends()
