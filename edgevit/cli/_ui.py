"""What every command shares: the consoles, progress display, JSON output and common options."""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from ..progress import SilentProgress, StageProgress

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


class RichProgress(StageProgress):
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
        with contextlib.redirect_stdout(sys.stderr):
            yield SilentProgress()
        return
    columns = [SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn()]
    with Progress(*columns, console=err, transient=False) as progress:
        yield RichProgress(progress)


def print_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2))


profiles_option = click.option("--profiles", "profile_dirs", multiple=True,
                                type=click.Path(path_type=Path),
                                help="Extra folder of device profile YAML files (repeatable).")


def int_list(ctx, param, value: str) -> list[int]:
    try:
        values = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise click.BadParameter(f"'{value}' is not a comma-separated list of positive integers (e.g. 1,2).")
    return values
