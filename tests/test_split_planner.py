"""Split planner (`edgevit split plan`): the DP equals trying every cut, "don't split" when the link costs more
than it saves, memory budgets, link profiles as data, and the CLI's plan.json and errors. Hand-made unit lists:
no export, no runtime."""
import json
import random
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from edgevit.cli import main
from edgevit.devices import BUILTIN_PROFILE_DIR, get_device, load_profiles
from edgevit.errors import DoesNotFitError, EdgevitError, UnknownNameError
from edgevit.split import planner
from edgevit.split.links import LINK_DIR, LinkProfileError, get_link, load_link_file, load_links
from edgevit.split.planner import (
    DeviceCosts,
    best_by_trying_every_cut,
    build_plan,
    device_costs,
    search,
)

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Unit:  # the interface of edgevit.split.graph.Unit
    name: str
    out_shape: tuple
    out_bytes: int
    macs: int
    param_bytes: int


@dataclass
class Graph:  # the interface of edgevit.split.graph.SplitGraph
    model: str
    input_shape: tuple
    units: list
    input_bytes: int


MB = 2**20


def _units(n, rng, out_bytes=None, param_bytes=None):
    return [Unit(f"stages.{i // 2}.blocks.{i % 2}", (1, 8, 4, 4),
                 out_bytes if out_bytes is not None else rng.randint(1_000, 4_000_000), rng.randint(1, 10**8),
                 param_bytes if param_bytes is not None else rng.randint(0, 40 * MB)) for i in range(n)]


def _costs(names, unit_ms, budgets=None, call_ms=0.0):
    return [DeviceCosts(name, list(ms), (budgets or {}).get(name, 1e9), "peak", call_ms=call_ms, backend="executorch")
            for name, ms in zip(names, unit_ms)]


# ------------------------------------------------------------------------------------------ DP vs brute force

@pytest.mark.parametrize("objective", ["latency", "throughput"])
@pytest.mark.parametrize("order", ["given", "search"])
def test_dp_equals_trying_every_cut_on_random_unit_lists(objective, order):
    rng = random.Random(hash((objective, order)) & 0xFFFF)
    link = get_link("wifi5")
    for trial in range(60):
        n, k = rng.randint(1, 9), rng.randint(1, 3)
        units = _units(n, rng)
        names = [rng.choice(["a", "b", "c"]) for _ in range(k)]
        speed = {"a": 1.0, "b": rng.uniform(0.2, 3), "c": rng.uniform(0.2, 3)}
        base = [rng.uniform(0.1, 30) for _ in range(n)]
        unit_ms = [[t * speed[name] for t in base] for name in names]
        weights = sum(u.param_bytes for u in units) / MB
        budgets = {nm: rng.uniform(0.2, 1.2) * weights + 10 for nm in "abc"}  # often too small for one device
        costs = _costs(names, unit_ms, budgets, call_ms=rng.uniform(0, 2))
        dtype = rng.choice(["fp32", "fp16", "int8"])
        dp = search(units, 150_528, costs, link, objective, dtype, "fp32", order)
        brute = best_by_trying_every_cut(units, 150_528, costs, link, objective, dtype, "fp32", order)
        assert (dp is None) == (brute is None), trial
        if dp is None:
            continue
        assert dp.value(objective) == pytest.approx(brute.value(objective), rel=1e-9, abs=1e-9), trial
        for s in dp.stages:  # memory is respected
            assert s.memory_mb <= costs[s.device].budget_mb
        assert [s.first for s in dp.stages][0] == 0 and dp.stages[-1].last == n - 1
        assert all(a.last + 1 == b.first for a, b in zip(dp.stages, dp.stages[1:]))  # contiguous
        if order == "given":
            assert [s.device for s in dp.stages] == sorted({s.device for s in dp.stages})
        for m in (2, 3):  # the best split with at least m stages, too
            a = search(units, 150_528, costs, link, objective, dtype, "fp32", order, min_stages=m)
            b = best_by_trying_every_cut(units, 150_528, costs, link, objective, dtype, "fp32", order, min_stages=m)
            assert (a is None) == (b is None)
            if a is not None:
                assert a.value(objective) == pytest.approx(b.value(objective), rel=1e-9, abs=1e-9)


def test_search_order_can_beat_the_given_order():
    """EdgeShard-style: with the fast device listed last, letting the planner order them helps throughput."""
    rng = random.Random(1)
    units = _units(6, rng, out_bytes=1000, param_bytes=0)
    costs = _costs(["slow", "fast"], [[10.0] * 6, [1.0] * 6])
    link = get_link("gbe")
    given = search(units, 1000, costs, link, "latency", order="given")
    searched = search(units, 1000, costs, link, "latency", order="search")
    assert searched.value("latency") <= given.value("latency")
    assert [costs[s.device].name for s in searched.stages] == ["fast"]


# ------------------------------------------------------------------------------------------------ verdicts

def _graph(n=8, out_bytes=1000, param_bytes=1 * MB, model="efficientformer_l1"):
    units = [Unit(f"stages.{i}", (1, 64, 28, 28), out_bytes, 10**8, param_bytes) for i in range(n)]
    return Graph(model, (1, 3, 224, 224), units, 602_112)


def test_dont_split_when_wifi5_moves_big_tensors():
    g = _graph(out_bytes=3 * MB)   # 3 MB boundaries: ~63 ms each over wifi5
    costs = _costs(["rpi5", "rpi5b"], [[5.0] * 8, [5.0] * 8])
    for objective in ("latency", "throughput"):
        plan = build_plan(g, costs, get_link("wifi5"), objective)
        assert plan["verdict"].startswith("don't split: "), plan["verdict"]
        assert "wifi5" in plan["verdict"]
        assert len(plan["stages"]) == 1 and plan["transfers"] == []
        assert plan["best_split"] is not None and plan["best_split"]["throughput_ips"] < plan["predicted"][
            "throughput_ips"]
        assert plan["single_device"]["best"]["latency_ms"] == pytest.approx(40.0)


def test_split_when_compute_dominates():
    g = _graph(out_bytes=4000)     # small boundaries, slow devices: a pipeline of two doubles the throughput
    costs = _costs(["rpi5", "rpi5b"], [[50.0] * 8, [50.0] * 8])
    plan = build_plan(g, costs, get_link("gbe"), "throughput")
    assert plan["verdict"] == "split"
    assert [s["device"] for s in plan["stages"]] == ["rpi5", "rpi5b"]
    assert [len(s["units"]) for s in plan["stages"]] == [4, 4]
    assert plan["predicted"]["throughput_ips"] == pytest.approx(1000 / 200, rel=1e-6)
    assert plan["transfers"][0]["bytes"] == 4000
    assert plan["transfers"][0]["predicted_ms"] == pytest.approx(4000 * 8 / 941e6 * 1e3 + 0.3, abs=1e-6)
    # one image alone is not faster split: for latency, one device wins
    assert build_plan(g, costs, get_link("gbe"), "latency")["verdict"].startswith("don't split")


def test_boundary_dtype_scales_transfer_bytes():
    g = _graph(out_bytes=4000)
    costs = _costs(["a", "b"], [[50.0] * 8, [50.0] * 8])
    for dtype, nbytes in (("fp32", 4000), ("fp16", 2000), ("int8", 1000)):
        plan = build_plan(g, costs, get_link("gbe"), "throughput", boundary_dtype=dtype)
        assert plan["transfers"][0]["bytes"] == nbytes


def test_plan_json_schema_and_stable_id():
    g = _graph(out_bytes=4000)
    costs = _costs(["rpi5", "pixel8"], [[50.0] * 8, [20.0] * 8])
    plan = build_plan(g, costs, get_link("wifi6"), "throughput", precision="int8")
    for key in ("plan_version", "plan_id", "model", "input_shape", "precision", "objective", "boundary_dtype",
                "devices", "link", "units", "stages", "transfers", "predicted", "single_device", "best_split",
                "verdict", "notes"):
        assert key in plan, key
    assert plan["plan_version"] == 1 and len(plan["plan_id"]) == 16
    assert {"device", "backend", "first_unit", "last_unit", "units", "predicted_ms", "memory_mb", "basis"} <= set(
        plan["stages"][0])
    assert {"bytes", "predicted_ms"} <= set(plan["transfers"][0])
    assert {"latency_ms", "throughput_ips", "bottleneck"} <= set(plan["predicted"])
    assert plan["units"][0]["out_bytes"] == 4000
    json.dumps(plan)  # serialisable
    again = build_plan(g, costs, get_link("wifi6"), "throughput", precision="int8")
    assert again["plan_id"] == plan["plan_id"]
    assert build_plan(g, costs, get_link("wifi5"), "throughput", precision="int8")["plan_id"] != plan["plan_id"]


# --------------------------------------------------------------------------------------------------- memory

def test_small_device_gets_fewer_units():
    g = _graph(n=8, out_bytes=4000, param_bytes=10 * MB)     # 10 MB of fp32 weights per unit
    costs = _costs(["tiny", "big"], [[50.0] * 8, [50.0] * 8], budgets={"tiny": 25, "big": 1000})
    plan = build_plan(g, costs, get_link("gbe"), "throughput", precision="fp32")
    tiny = [s for s in plan["stages"] if s["device"] == "tiny"]
    assert tiny and len(tiny[0]["units"]) == 2                  # 2 x 10 MB + activations fit 25 MB, 3 do not
    for s in plan["stages"]:
        assert s["memory_mb"] <= s["budget_mb"]
    # int8 weights are a quarter: the small device takes more
    plan8 = build_plan(g, costs, get_link("gbe"), "throughput", precision="int8")
    assert len([s for s in plan8["stages"] if s["device"] == "tiny"][0]["units"]) == 4


def test_nothing_fits_is_an_error_saying_by_how_much():
    g = _graph(n=4, param_bytes=100 * MB)
    costs = _costs(["a", "b"], [[1.0] * 4, [1.0] * 4], budgets={"a": 50, "b": 60})
    with pytest.raises(DoesNotFitError, match=r"needs 10\d\.\d MB, 4\d\.\d MB over the largest budget \(60 MB\)"):
        build_plan(g, costs, get_link("gbe"), "latency", precision="fp32")
    g = _graph(n=4, param_bytes=40 * MB)
    with pytest.raises(DoesNotFitError, match=r"weights need 160\.0 MB, 50\.0 MB over all budgets together"):
        build_plan(g, costs, get_link("gbe"), "latency", precision="fp32")


# ---------------------------------------------------------------------------------------------- link profiles

def test_builtin_links_validate_and_device_loader_ignores_them():
    links = load_links()
    assert {"wifi5", "wifi6", "gbe", "usb3", "loopback"} <= set(links)
    for link in links.values():
        assert link.sources and link.bandwidth_mbps > 0
        if link.phy_mbps:
            assert link.bandwidth_mbps < link.phy_mbps   # achieved, not the PHY rate
    assert LINK_DIR == BUILTIN_PROFILE_DIR / "links"
    assert not set(links) & set(load_profiles())          # load_profiles globs the folder itself only
    assert get_link("gbe").transfer_ms(941e6 / 8) == pytest.approx(1000 + 0.3)


def _write_link(folder: Path, **changes) -> Path:
    data = yaml.safe_load((LINK_DIR / "gbe.yaml").read_text())
    data.update(name="mylink", **changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("changes, expected", [
    ({"bandwidth_mbps": -5}, "field 'bandwidth_mbps': Input should be greater than 0 (got -5)"),
    ({"bandwidth_mbps": "fast"}, "field 'bandwidth_mbps'"),
    ({"speed": 3}, "field 'speed': Extra inputs are not permitted"),
    ({"basis": "guessed"}, "field 'basis'"),
    ({"basis": "derived", "formula": None}, "needs a `formula`"),
    ({"bandwidth_mbps": 1200}, "exceeds the PHY rate"),
    ({"sources": []}, "field 'sources'"),
])
def test_broken_link_profile_names_file_and_field(tmp_path, changes, expected):
    path = _write_link(tmp_path / "links", **changes)
    with pytest.raises(LinkProfileError) as e:
        load_link_file(path)
    assert str(path) in str(e.value) and expected in str(e.value)


def test_link_name_must_match_file_and_user_links_load_via_profiles_dir(tmp_path):
    path = _write_link(tmp_path / "links", bandwidth_mbps=100)
    assert get_link("mylink", [tmp_path]).bandwidth_mbps == 100
    path.rename(tmp_path / "links" / "other.yaml")
    with pytest.raises(LinkProfileError, match="field 'name' is 'mylink' but the file is named 'other.yaml'"):
        load_links([tmp_path])
    with pytest.raises(UnknownNameError, match="Unknown link 'wifi7'"):
        get_link("wifi7")


# ----------------------------------------------------------------------------------------------- stage costs

def test_estimate_stages_are_shared_among_units_by_macs():
    units = [Unit("stem", (1,), 1, 100, 0), Unit("stages.0.blocks.0", (1,), 1, 300, 0),
             Unit("stages.0.blocks.1", (1,), 1, 100, 0), Unit("head", (1,), 1, 0, 0)]
    ms, notes = planner._spread({"stem": 1.0, "stages.0": 4.0, "head": 0.5, "(graph input/output)": 0.55}, units)
    assert ms[1] == pytest.approx(3.0 * 1.1) and ms[2] == pytest.approx(1.0 * 1.1)
    assert sum(ms) == pytest.approx(6.05)
    assert "graph input/output" in notes[0]
    # the graph names a downsample unit by its stage ('stages.1'): the estimate's 'stages.1' is shared with the
    # stage's blocks; a profile's deeper paths go to the most specific unit that holds them
    units = [Unit("stages.1", (1,), 1, 100, 0), Unit("stages.1.blocks.0", (1,), 1, 300, 0)]
    assert planner._spread({"stages.1": 4.0}, units)[0] == pytest.approx([1.0, 3.0])
    assert planner._spread({"stages.1.downsample.conv": 1.0, "stages.1.blocks.0.mlp.fc1": 2.0}, units)[0] == [1.0, 2.0]


def test_costs_from_peak_measured_and_stored_profile(tmp_path):
    g = _graph(n=3)
    rpi5 = get_device("rpi5")
    peak = device_costs(g, rpi5, "int8", "peak")
    assert peak.basis == "peak" and peak.unit_ms[0] == pytest.approx(1e8 / 76.8e9 * 1e3)
    assert peak.backend == "executorch" and peak.budget_mb == 1024

    table = tmp_path / "times.json"
    table.write_text(json.dumps({"unit_ms": {u.name: 1.5 for u in g.units}, "call_ms": 0.2, "source": "bench"}))
    host = device_costs(g, get_device("host"), "int8", "peak", unit_times=table)
    assert host.basis == "measured" and host.unit_ms == [1.5] * 3 and host.stage_ms(0, 2) == pytest.approx(4.7)
    table.write_text(json.dumps({"stages.0": 1.0}))
    with pytest.raises(EdgevitError, match=r"no time for 2 unit\(s\): stages.1, stages.2"):
        device_costs(g, get_device("host"), "int8", unit_times=table)

    prof = tmp_path / "out" / "efficientformer_l1-rpi5" / "profiles" / "rpi5-1.json"
    prof.parent.mkdir(parents=True)
    prof.write_text(json.dumps({
        "profile_version": 1, "created": "2026-01-01T00:00:00Z",
        "artifact": {"model": "efficientformer_l1", "device": "rpi5", "precision": "int8",
                     "input_shape": [1, 3, 224, 224]},
        "wall_ms": {"median": 10.0},
        "ops": [{"module": "stages.0.mlp.fc1", "ms": 2.0}, {"module": "stages.1", "ms": 3.0},
                {"module": "stages.2.attn", "ms": 4.0}, {"module": None, "ms": 0.0}]}))
    stored = device_costs(g, rpi5, "int8", "profile", stored_profiles=[tmp_path / "out"])
    assert stored.basis == "profile" and stored.unit_ms == pytest.approx([2.0, 3.0, 4.0])
    assert stored.call_ms == pytest.approx(1.0) and str(prof) in stored.figures
    with pytest.raises(EdgevitError, match="no stored profile of efficientformer_l1 fp32 on rpi5"):
        device_costs(g, rpi5, "fp32", "profile", stored_profiles=[tmp_path / "out"])


def test_no_figures_at_all_says_what_to_do():
    g = _graph(n=2)
    with pytest.raises(EdgevitError, match="No stage cost for device 'iphone15-pro'"):
        device_costs(g, get_device("iphone15-pro"), "int8", "peak")


# ------------------------------------------------------------------------------------------------------ CLI

@pytest.fixture
def fake_graph(monkeypatch):
    """edgevit.split.graph.split_units replaced by a hand-made unit list (no export in the unit tier)."""
    calls = []

    def split_units(model, input_shape=None, num_classes=None, weights=None):
        calls.append(model)
        return _graph(n=6, out_bytes=200_000, param_bytes=2 * MB, model=model)
    monkeypatch.setitem(sys.modules, "edgevit.split.graph", types.SimpleNamespace(split_units=split_units))
    return calls


def test_cli_writes_plan_json_atomically(fake_graph, tmp_path, monkeypatch, capsys):
    writes = []
    real = planner.atomic_write_json
    monkeypatch.setattr(planner, "atomic_write_json", lambda path, obj: writes.append(path) or real(path, obj))
    out = tmp_path / "plans" / "plan.json"
    rc = main(["split", "plan", "efficientformer_l3", "--devices", "rpi5,rpi5,pixel8", "--link", "wifi5",
               "--objective", "throughput", "--costs", "peak", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert writes == [out]
    plan = json.loads(out.read_text())
    assert plan["model"] == "efficientformer_l3" and plan["objective"] == "throughput"
    assert [d["name"] for d in plan["devices"]] == ["rpi5", "rpi5", "pixel8"]
    assert all(s["basis"] == "peak" for s in plan["stages"])
    assert plan["verdict"] == "split" or plan["verdict"].startswith("don't split: ")
    assert sorted(p.name for p in out.parent.iterdir()) == ["plan.json"]    # no temporary left behind
    assert "verdict" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--devices", "rpi5,nosuchboard", "--link", "wifi5"], "Unknown device 'nosuchboard'"),
    (["--devices", "rpi5", "--link", "wifi9"], "Unknown link 'wifi9'"),
    (["--devices", ",", "--link", "wifi5"], "No devices to plan for"),
    (["--devices", "pixel8", "--link", "gbe", "--unit-times", "t.json"], "'host' is not among --devices"),
])
def test_cli_bad_input_exits_2_with_a_clear_message(fake_graph, tmp_path, capsys, args, message):
    out = tmp_path / "plan.json"
    rc = main(["split", "plan", "efficientformer_l1", *args, "--costs", "peak", "-o", str(out)])
    assert rc == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not out.exists() and fake_graph == []    # checked before the export


def test_cli_unknown_model_exits_2(fake_graph, tmp_path, capsys):
    rc = main(["split", "plan", "efficientformer_l9", "--devices", "rpi5", "--link", "gbe", "-o",
               str(tmp_path / "p.json")])
    assert rc == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Unknown model 'efficientformer_l9'" in err and "efficientformer_l1" in err
    assert fake_graph == []


def test_cli_model_that_does_not_fit_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "edgevit.split.graph", types.SimpleNamespace(
        split_units=lambda model, **kw: _graph(n=2, param_bytes=4000 * MB, model=model)))
    rc = main(["split", "plan", "efficientformer_l1", "--devices", "rpi5", "--link", "gbe", "--costs", "peak",
               "--precision", "fp32", "-o", str(tmp_path / "p.json")])
    assert rc == 2
    assert "over the largest budget" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "p.json").exists()


def test_auto_boundary_compresses_over_a_slow_link_and_not_over_a_fast_one():
    from edgevit.split.planner import choose_boundary

    g = _graph(out_bytes=2 * MB)   # 2 MB boundaries, 20 ms stages: wifi5 moves fp32 in ~45 ms, int8 in ~14 ms
    costs = _costs(["a", "b"], [[5.0] * 8, [5.0] * 8])
    slow, table = choose_boundary(g, costs, get_link("wifi5"), "throughput", "fp32", "given")
    assert slow["boundary_dtype"] in ("fp16", "int8") and slow["boundary_choice"]["chosen"] == slow["boundary_dtype"]
    assert table[slow["boundary_dtype"]]["throughput_ips"] > table["fp32"]["throughput_ips"] * 1.05
    assert slow["verdict"] == "split"            # compressed, the split pays; in fp32 one device would win
    fast, _ = choose_boundary(_graph(out_bytes=4000), costs, get_link("loopback"), "throughput", "fp32", "given")
    assert fast["boundary_dtype"] == "fp32"
