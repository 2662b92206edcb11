"""`edgevit worker`: host split-inference stages for a coordinator (`edgevit split run`)."""
from __future__ import annotations

import click

from ._group import cli


@cli.command("worker")
@click.option("--listen", default="0.0.0.0:7070", show_default=True,
              help="host:port to serve on (port 0: any free port; the address is printed).")
@click.option("--device", "-d", default="host", show_default=True,
              help="The device profile this worker runs as (recorded in the run report).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1), help="Runtime threads per stage.")
def worker_cmd(listen: str, device: str, threads: int) -> None:
    """Serve pipeline stages over gRPC until interrupted (the coordinator loads the stage artifacts)."""
    from ..split.worker import serve

    def ready(address: str) -> None:
        print(f"edgevit worker listening on {address}", flush=True)

    serve(listen, device, threads, ready)
