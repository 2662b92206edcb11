"""The ``edgevit`` command line. One function per command; each one is a thin shell around the library.

User mistakes (:class:`edgevit.errors.EdgevitError`) print one paragraph and exit 2; no tracebacks.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import EdgevitError

# Library chatter that says nothing to a user of the CLI (deprecations inside torch/executorch/torchao,
# torchao's probe of CUDA-only extension libraries).
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|executorch|torchao)\b.*")
for _noisy in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

# Piped output (CI logs, `| less`) gets room for the tables instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


class RichProgress:
    """StageProgress drawn with rich on stderr (stdout stays clean for --json)."""

    def __init__(self, progress: Progress):
        self._progress = progress

    @contextlib.contextmanager
    def stage(self, description: str, total: int | None = None):
        task = self._progress.add_task(description, total=total)
        yield lambda n=1: self._progress.advance(task, n)
        self._progress.update(task, completed=total if total is not None else 1, total=total or 1)


@contextlib.contextmanager
def progress_display(enabled: bool = True):
    """Rich progress on stderr; with ``enabled=False`` (--json) none, and stray library prints go to
    stderr too, so that stdout carries nothing but the JSON document."""
    if not enabled:
        from .compile import SilentProgress
        with contextlib.redirect_stdout(sys.stderr):
            yield SilentProgress()
        return
    columns = [SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn()]
    with Progress(*columns, console=err, transient=False) as progress:
        yield RichProgress(progress)


def _print_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgevit")
def cli() -> None:
    """edgevit: quantize, lower, verify and profile mobile vision transformers for edge devices."""


@cli.command("models")
@click.option("--family", help="Only this family (efficientformer, efficientformerv2, tiny_vit, shvit).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models_cmd(family: str | None, as_json: bool) -> None:
    """The model zoo: name, family, params, MACs, default resolution."""
    from .models import get_model_spec, list_models
    from .models._complexity import count_params_and_macs

    rows = []
    for name in list_models(family):
        spec = get_model_spec(name)
        params, macs = count_params_and_macs(name)
        rows.append({"name": name, "family": spec.family, "params": params, "macs": macs,
                     "resolution": spec.resolution, "classes": spec.num_classes, "paper": spec.paper})
    if family and not rows:
        raise EdgevitError(f"No models in family '{family}'.")
    if as_json:
        return _print_json(rows)
    table = Table(title="edgevit model zoo")
    for col in ("name", "family", "params (M)", "MACs (G)", "resolution", "classes"):
        table.add_column(col, justify="left" if col in ("name", "family") else "right")
    for r in rows:
        table.add_row(r["name"], r["family"], f"{r['params'] / 1e6:.2f}", f"{r['macs'] / 1e9:.3f}",
                      str(r["resolution"]), str(r["classes"]))
    out.print(table)


_profiles_option = click.option("--profiles", "profile_dirs", multiple=True,
                                type=click.Path(path_type=Path),
                                help="Extra folder of device profile YAML files (repeatable).")


@cli.command("devices")
@_profiles_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def devices_cmd(profile_dirs: tuple[Path, ...], as_json: bool) -> None:
    """The device profiles: SoC, CPU, GPU/NPU, memory, backends."""
    from .devices import load_profiles

    profiles = load_profiles(list(profile_dirs))
    if as_json:
        return _print_json([p.model_dump(mode="json") for p in profiles.values()])
    rows = [p.summary_row() for p in sorted(profiles.values(), key=lambda p: p.name)]
    table = Table(title="edgevit device profiles")
    for col in rows[0]:
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*r.values())
    out.print(table)


@cli.command("compile")
@click.argument("model")
@click.option("--device", "-d", required=True, help="Device profile name (see `edgevit devices`).")
@click.option("--backend", default="auto", show_default=True,
              help="executorch, litert, or auto (the device profile's preferred backend).")
@click.option("--precision", type=click.Choice(["int8", "int8-dynamic", "fp16", "fp32"]),
              help="Default: the device profile's default precision. int8-dynamic: LiteRT only.")
@click.option("--weights", type=click.Path(path_type=Path), help="Checkpoint (.safetensors/.pth/.bin) in timm layout.")
@click.option("--calib", type=click.Path(path_type=Path),
              help="Folder of calibration images (nested folders, any Pillow format). "
                   "Default: built-in synthetic 1/f-noise images (the manifest says so).")
@click.option("--num-calib", default=32, show_default=True, type=click.IntRange(1), help="Calibration images.")
@click.option("--num-verify", default=8, show_default=True, type=click.IntRange(1),
              help="Inputs the artifact is checked on against the fp32 eager model.")
@click.option("--input-shape", help="Static input N,C,H,W (required for a user module).")
@click.option("--num-classes", type=click.IntRange(1), help="Classifier size, if the checkpoint's differs.")
@click.option("-o", "--output", "output_root", default=Path("out"), show_default=True,
              type=click.Path(path_type=Path), help="Folder that receives MODEL-DEVICE/.")
@_profiles_option
@click.option("--min-sqnr", type=float, help="Verification threshold in dB (default per precision).")
@click.option("--min-cosine", type=float, help="Verification threshold (default per precision).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1),
              help="Runtime threads for verification on this machine.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead of a table.")
def compile_cmd(model: str, device: str, backend: str, precision: str | None, weights: Path | None,
                calib: Path | None, num_calib: int, num_verify: int, input_shape: str | None,
                num_classes: int | None, output_root: Path, profile_dirs: tuple[Path, ...],
                min_sqnr: float | None, min_cosine: float | None, threads: int, as_json: bool) -> None:
    """Quantize, lower and verify MODEL (a zoo name or package.module:builder) for a device."""
    from .compile import CompileOptions, compile_model

    opts = CompileOptions(model=model, device=device, backend=backend, precision=precision, weights=weights,
                          calib=calib, num_calib=num_calib, num_verify=num_verify, input_shape=input_shape,
                          num_classes=num_classes, output_root=output_root, profile_dirs=list(profile_dirs),
                          min_sqnr=min_sqnr, min_cosine=min_cosine, threads=threads)
    with progress_display(enabled=not as_json) as progress:
        result = compile_model(opts, progress)
    if as_json:
        return _print_json(result.manifest)
    _print_compile_summary(result)


def _print_compile_summary(result) -> None:
    m = result.manifest
    v, ops = m["verification"], m["ops"]
    table = Table(title=f"{m['model']['name']} → {m['device']['name']} ({m['backend']['name']}, {m['precision']})",
                  show_header=False)
    table.add_column(style="bold")
    table.add_column()
    cal = m["calibration"]
    rows = [
        ("artifact", f"{result.artifact}  ({m['artifact']['size_bytes'] / 2**20:.2f} MB)"),
        ("weights", m["weights"]["source"]),
        ("calibration", f"{cal['count']} × {cal['source']}" if cal else "none (float)"),
        ("SQNR / cosine", f"{v['sqnr_db']:.2f} dB / {v['cosine']:.5f}"),
        ("max abs / top-1 agree", f"{v['max_abs_error']:.4g} / {v['top1_agreement']:.0%} of {v['samples']}"),
        ("ops delegated", f"{ops['delegated_ops']} in {ops['delegate_calls']} calls; "
                          f"{ops['non_delegated_ops']} outside"),
        ("memory (est.)", f"{m['memory']['total_bytes'] / 2**20:.1f} MB of {m['memory']['budget_bytes'] / 2**20:.0f} MB"),
        ("compile time", f"{m['compile_seconds']} s"),
    ]
    for k, val in rows:
        table.add_row(k, val)
    out.print(table)
    out.print(f"manifest: {result.out_dir / 'manifest.json'}")


def _int_list(ctx, param, value: str) -> list[int]:
    try:
        values = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise click.BadParameter(f"'{value}' is not a comma-separated list of positive integers (e.g. 1,2).")
    return values


@cli.command("bench")
@click.argument("model")
@click.option("--device", "-d", default="host", show_default=True, help="Device profile (its backends are benchmarked).")
@click.option("--threads", default="1", show_default=True, callback=_int_list, help="Thread counts, e.g. 1,2.")
@click.option("--backend", "backends", multiple=True, help="Only this backend (repeatable).")
@click.option("--precision", "precisions", multiple=True, help="Only this precision (repeatable).")
@click.option("--rounds", default=20, show_default=True, type=click.IntRange(5), help="Timed round-robin rounds.")
@click.option("--input-shape", help="Static input N,C,H,W (required for a user module).")
@click.option("--num-calib", default=32, show_default=True, type=click.IntRange(1))
@click.option("--no-memory", is_flag=True, help="Skip the per-artifact peak-memory subprocesses.")
@click.option("-o", "--output", "output_root", default=Path("out/bench"), show_default=True,
              type=click.Path(path_type=Path))
@_profiles_option
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the table.")
def bench_cmd(model: str, device: str, threads: list[int], backends: tuple[str, ...], precisions: tuple[str, ...],
              rounds: int, input_shape: str | None, num_calib: int, no_memory: bool, output_root: Path,
              profile_dirs: tuple[Path, ...], as_json: bool) -> None:
    """Every backend x precision for MODEL, compiled, verified and timed side by side here."""
    from .profiling import BenchOptions, run_bench

    opts = BenchOptions(model=model, device=device, threads=threads, backends=list(backends) or None,
                        precisions=list(precisions) or None, rounds=rounds, input_shape=input_shape,
                        num_calib=num_calib, output_root=output_root, profile_dirs=list(profile_dirs),
                        measure_memory=not no_memory)
    with progress_display(enabled=not as_json) as progress:
        report = run_bench(opts, progress)
    if as_json:
        return _print_json(report)
    table = Table(title=f"{report['model']} on {report['device']} ({report['rounds']} round-robin rounds)")
    for col in ("backend/precision", "threads", "median ms", "p90 ms", "size MB", "peak mem MB", "SQNR dB",
                "cosine", "verified"):
        table.add_column(col, justify="left" if col == "backend/precision" else "right")
    for r in report["rows"]:
        def f(v, fmt):
            return format(v, fmt) if v is not None else "-"
        verified = "-" if r["passed"] is None else ("yes" if r["passed"] else "[red]no[/]")
        if r["error"]:
            verified = f"[red]{r['error'][:60]}…[/]"
        table.add_row(r["label"], str(r["threads"]), f(r["median_ms"], ".2f"), f(r["p90_ms"], ".2f"),
                      f(r["size_bytes"] and r["size_bytes"] / 2**20, ".2f"),
                      f(r["peak_memory_bytes"] and r["peak_memory_bytes"] / 2**20, ".1f"),
                      f(r["sqnr_db"], ".1f"), f(r["cosine"], ".5f"), verified)
    out.print(table)
    for t, label in report["auto_choice"].items():
        out.print(f"fastest verified artifact at {t} thread(s): [bold]{label or 'none'}[/]")
    out.print(f"report: {report['files']['json']}  chart: {report['files']['png']}")


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="edgevit", standalone_mode=False)
    except EdgevitError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return e.exit_code
    except click.exceptions.Abort:
        err.print("aborted")
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except KeyboardInterrupt:
        err.print("interrupted; nothing was written")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
