"""tools/: every benchmark script's command line (its --help lists every option it declares; every invocation
the README, docs/ and its own docstring show is one its parser accepts), and bench_accuracy's cheap real mode
(--merge: earlier runs' JSON into one report) run as a user runs it, in a fresh process.

The benchmarks themselves take minutes to hours (they train, compile and time every model), so their
measuring paths are exercised by the tests of the library code they call, not here."""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = sorted((REPO / "tools").glob("*.py"))
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_LOADED: dict[Path, object] = {}


def _tool_id(tool: Path) -> str:
    return tool.stem


def _load(tool: Path, monkeypatch):
    """The tool as a module (once per session), without running it; sys.path changes it makes are undone."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    if tool not in _LOADED:
        spec = importlib.util.spec_from_file_location(f"edgevit_tool_{tool.stem}", tool)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _LOADED[tool] = module
    return _LOADED[tool]


def _declared_options(tool: Path) -> list[str]:
    """Every option string the tool passes to add_argument (read from its source, not from argparse)."""
    options = []
    for node in ast.walk(ast.parse(tool.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            options += [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")]
    return options


def _documented_invocations(tool: Path) -> list[tuple[str, list[str]]]:
    """(where, argv) for every `python tools/NAME.py ...` in the README, docs/ and the tool's own docstring."""
    found = []
    sources = [(path.relative_to(REPO).as_posix(), path.read_text()) for path in DOCS]
    sources.append((f"{tool.relative_to(REPO).as_posix()} docstring", ast.get_docstring(ast.parse(tool.read_text()))
                    or ""))
    for where, text in sources:
        for match in re.finditer(rf"python3? tools/{re.escape(tool.name)}([^\n`]*)", text):
            words = shlex.split(match.group(1), comments=True)
            for i, word in enumerate(words):
                if word in ("&&", "||", "|", ";"):  # another command follows
                    words = words[:i]
                    break
            # "[--out DIR]" in usage lines: the optional part, given
            found.append((where, [w.strip("[]") for w in words if w.strip("[]")]))
    return found


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace):
        super().__init__("parsed")
        self.namespace = namespace


@pytest.mark.unit
@pytest.mark.parametrize("tool", TOOLS, ids=_tool_id)
def test_help_lists_every_option(tool, monkeypatch, capsys):
    module = _load(tool, monkeypatch)
    options = _declared_options(tool)
    assert options, f"{tool.name} declares no options"
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage:")
    missing = [option for option in options if not re.search(rf"(^|[\s,\[]){re.escape(option)}\b", help_text)]
    assert not missing, f"{tool.name} --help does not list {missing}"


@pytest.mark.unit
@pytest.mark.parametrize("tool", TOOLS, ids=_tool_id)
def test_documented_invocations_parse(tool, monkeypatch, capsys):
    """Every command line the docs show is one the tool's parser accepts (parsed only, nothing runs)."""
    module = _load(tool, monkeypatch)
    invocations = _documented_invocations(tool)
    assert any(where.endswith("docstring") for where, _ in invocations), f"{tool.name}'s docstring shows no usage"
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(parse(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    for where, argv in invocations:
        try:
            module.main(argv)
        except _Parsed as parsed:
            assert isinstance(parsed.namespace, argparse.Namespace)
        except SystemExit as e:  # argparse's usage error: exit 2 and the reason on stderr
            pytest.fail(f"{where}: `python tools/{tool.name} {shlex.join(argv)}` is refused: "
                        f"{capsys.readouterr().err.strip()} (exit {e.code})")
        else:
            pytest.fail(f"{tool.name}'s main() returned without parsing its arguments")


def _accuracy_run(rows: list[dict], seconds: float) -> dict:
    return {"rows": rows, "settings": {"datasets": rows[0]["dataset"], "epochs": 8}, "all_targets_met": True,
            "seconds": seconds}


def _accuracy_row(dataset: str, model: str, top1: float, targets_met: bool) -> dict:
    """A row as bench_accuracy's bench_model writes it (the fields --merge reads: table, chart, targets)."""
    columns = {"fp32": top1, "plain_int8": top1 - 0.2, "edgevit_int8_pte": top1, "edgevit_int8_tflite": top1 - 0.4,
               "w8a8": top1, "w6a6": top1 - 1.0, "w4a8": top1 - 1.5}
    targets = {"edgevit_int8_within_0.5_of_fp32": True, "edgevit_int8_not_below_plain": True,
               "w6a6_within_2_of_fp32": targets_met}
    return {"model": model, "dataset": dataset, **columns, "targets": targets, "seconds": {"plain_int8": 1.0}}


@pytest.mark.integration
def test_bench_accuracy_merges_earlier_runs(tmp_path):
    digits = _accuracy_run([_accuracy_row("digits", "shvit_micro", 96.0, True),
                            _accuracy_row("digits", "tiny_vit_micro", 98.0, True)], 100.0)
    shapes = _accuracy_run([_accuracy_row("shapes", "shvit_micro", 40.0, False)], 50.5)
    inputs = []
    for name, run in (("digits", digits), ("shapes", shapes)):
        inputs.append(tmp_path / f"{name}.json")
        inputs[-1].write_text(json.dumps(run))
    out = tmp_path / "merged"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "bench_accuracy.py"), "--merge", *map(str, inputs),
                           "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "bench_accuracy.json").read_text())
    assert summary["rows"] == digits["rows"] + shapes["rows"]
    assert summary["merged_from"] == [str(p) for p in inputs]
    assert summary["settings"] == [digits["settings"], shapes["settings"]]
    assert summary["seconds"] == 150.5
    assert summary["all_targets_met"] is False  # shapes' W6A6 missed its target
    assert (out / "bench_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "tiny_vit_micro" in proc.stdout and "96.00" in proc.stdout  # the table, on stdout
    assert sorted(p.name for p in out.iterdir()) == ["bench_accuracy.json", "bench_accuracy.png"]


@pytest.mark.unit
@pytest.mark.parametrize("model", ["tiny_vit_micro", "efficientformerv2_micro"])
def test_bench_floor_program_has_the_models_gemm_macs(model, monkeypatch):
    """The floor program holds the deploy form's GEMM/conv ops at their shapes: linears, depthwise and dense
    convs, activation x activation matmuls, and exactly the model's MACs (FlopCounterMode, edgevit's counter)."""
    import torch

    from edgevit.models import prepare_model

    floor = _load(REPO / "tools" / "bench_floor.py", monkeypatch)
    torch.manual_seed(0)
    prepared = prepare_model(model)
    ops = floor.trace_gemm_ops(prepared.deployed, prepared.example)
    program = floor.FloorProgram(ops)
    inputs = program.example_inputs()
    macs = floor.count_macs(prepared.deployed, (prepared.example,))
    assert floor.count_macs(program, inputs) == macs == sum(op.macs for op in ops)
    assert {op.kind for op in ops} == {"linear", "conv", "matmul"}
    convs = [op for op in ops if op.kind == "conv"]
    assert any(op.groups == op.a_shape[1] > 1 for op in convs), "no depthwise conv traced"
    model_convs = [m for m in prepared.deployed.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == len(model_convs)
    assert sorted(op.b_shape for op in convs) == sorted(tuple(m.weight.shape) for m in model_convs)
    outputs = program(*inputs)  # one output per op: nothing to elide
    assert len(outputs) == len(ops)
    assert all(tuple(o.shape[-1:]) == (op.b_shape[0] if op.kind != "matmul" else op.b_shape[-1],)
               for o, op in zip(outputs, ops) if op.kind != "conv")


@pytest.mark.unit
@pytest.mark.parametrize("argv, reason", [(["--threads", "0"], "distinct counts >= 1"),
                                          (["--threads", "2", "2"], "distinct counts >= 1"),
                                          (["--models", "no_such_model"], "no_such_model")])
def test_bench_threads_refuses_bad_input_before_compiling(argv, reason, monkeypatch, capsys):
    """Bad input: exit 2 and what is wrong, before any model is compiled or worker started."""
    threads = _load(REPO / "tools" / "bench_threads.py", monkeypatch)
    monkeypatch.setattr(threads, "bench_model", lambda *a, **k: pytest.fail("compiled despite bad input"))
    assert threads.main(argv) == 2
    assert reason in capsys.readouterr().out
