"""`edgevit bench` on a tiny model: every backend x precision row, timed, verified, charted."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from edgevit.backends import get_backend
from edgevit.cli import main
from edgevit.devices import get_device
from edgevit.profiling.bench import BenchRow, pick_fastest

TESTS = Path(__file__).parent


@pytest.mark.integration
@pytest.mark.slow
def test_bench_json_has_every_row(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(TESTS)
    threads_before = torch.get_num_threads()
    code = main(["bench", "user_models:build_tiny", "--device", "host", "--input-shape", "1,3,32,32",
                 "--threads", "1,2", "--rounds", "5", "--num-calib", "4", "-o", str(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert torch.get_num_threads() == threads_before  # torch's process-wide count is put back
    report = json.loads(captured.out)
    backends = get_device("host").compile.backends
    expected = {("torch", "fp32")} | {(b, p) for b in backends for p in get_backend(b).precisions}
    for threads in (1, 2):
        rows = {(r["backend"], r["precision"]) for r in report["rows"] if r["threads"] == threads}
        assert rows == expected
    for r in report["rows"]:
        assert r["error"] is None, r
        assert r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"]
        if r["backend"] != "torch":
            assert r["size_bytes"] > 0 and r["passed"] and r["cosine"] > 0.98
            assert r["peak_memory_bytes"] is not None
    assert report["auto_choice"]["1"] in {f"{b}/{p}" for b, p in expected if b != "torch"}
    saved = json.loads(Path(report["files"]["json"]).read_text())
    assert saved["rows"] == report["rows"]
    with Image.open(report["files"]["png"]) as chart:
        assert chart.size[0] > 400 and chart.size[1] > 300


@pytest.mark.unit
def test_auto_rule_takes_fastest_verified():
    rows = [BenchRow("torch", "fp32", 1, median_ms=0.5),
            BenchRow("executorch", "int8", 1, median_ms=1.0, passed=False),
            BenchRow("executorch", "fp32", 1, median_ms=2.0, passed=True),
            BenchRow("litert", "fp32", 1, median_ms=1.5, passed=True),
            BenchRow("litert", "int8", 1, error="conversion failed")]
    assert pick_fastest(rows).label == "litert/fp32"
    assert pick_fastest(rows[:2]) is None


@pytest.mark.unit
def test_bench_rejects_backend_device_lacks(capsys):
    code = main(["bench", "shvit_s1", "--device", "iphone15-pro", "--backend", "litert", "-o", "/tmp/unused"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "'iphone15-pro'" in err and "'litert'" in err
