"""`edgevit agent`: the board side of `edgevit profile --via serial` (Linux boards)."""
from __future__ import annotations

import os
from pathlib import Path

import click

from ._group import cli
from ._ui import err, profiles_option


def _default_workdir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgevit" / "agent"


@cli.command("agent")
@click.option("--serial", "port", required=True, help="The line to the host, e.g. /dev/ttyS0 or /dev/ttyGS0.")
@click.option("--baud", default=921600, show_default=True, type=int, help="Line speed; the same as the host's.")
@click.option("--device", default="host", show_default=True,
              help="The device profile name this board reports; the host refuses artifacts built for another.")
@click.option("--workdir", type=click.Path(path_type=Path), default=None,
              help="Where uploads are kept (resumable, keyed by sha256). Default: ~/.cache/edgevit/agent.")
@click.option("--once", is_flag=True, help="Exit after the first session ends (the host's BYE).")
@click.option("--max-payload", default=4096, show_default=True, type=int,
              help="Largest frame payload accepted (a microcontroller's would be smaller).")
@profiles_option
def agent_cmd(port: str, baud: int, device: str, workdir: Path | None, once: bool, max_payload: int,
              profile_dirs: tuple[Path, ...]) -> None:
    """Answer profile requests from a host on a serial line: store the artifact, run it, send the ETDump."""
    from .._io import ensure_writable_dir
    from ..devices import get_device
    from ..links.serial import open_port
    from ..links.serial.agent import Agent

    get_device(device, list(profile_dirs))  # an unknown name is an error here, not a refusal on the host
    workdir = workdir or _default_workdir()
    ensure_writable_dir(workdir, "the agent's folder", "choose another with --workdir")
    with open_port(port, baud) as ser:
        agent = Agent(ser, device=device, workdir=workdir, max_payload=max_payload,
                      log=lambda text: err.print(f"agent: {text}", highlight=False, soft_wrap=True))
        err.print(f"edgevit agent: device '{device}' listening on {port} at {baud} baud; uploads in {workdir}",
                  highlight=False, soft_wrap=True)
        agent.serve(once=once)
