"""`edgevit rtl build` (the open-flow linear unit into a bitstream) and `edgevit flash` (load one onto a board)."""
from __future__ import annotations

from pathlib import Path

import click

from ._group import cli
from ._ui import out, print_json, progress_display


@cli.group("rtl")
def rtl_group() -> None:
    """The linear unit as RTL (Amaranth): build a bitstream with the open flow (Yosys + nextpnr)."""


@rtl_group.command("build")
@click.option("--device", required=True, help="An open-flow board: ulx3s (ECP5) or icebreaker (iCE40).")
@click.option("--pe", help="PE array ROWSxCOLS (tokens x outputs per cycle). Default: 4x8 ulx3s, 1x2 icebreaker.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Folder to write (replaced atomically). Default: out/rtl-DEVICE.")
@click.option("--seed", default=1, show_default=True, type=int, help="nextpnr's placement seed.")
@click.option("--profiles", "profile_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Extra device profile folders.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def rtl_build_cmd(device: str, pe: str | None, output: Path | None, seed: int, profile_dirs: tuple[Path, ...],
                  as_json: bool) -> None:
    """Synthesise, place and route the UART linear unit for a board; writes the bitstream and manifest.json."""
    from ..rtl.build import BuildOptions, build_bitstream

    output = output or Path("out") / f"rtl-{device}"
    with progress_display(enabled=not as_json) as progress:
        folder, manifest = build_bitstream(BuildOptions(device, output, pe, seed, list(profile_dirs)), progress)
    if as_json:
        return print_json(manifest)
    util = ", ".join(f"{k} {v['used']}/{v['available']}" for k, v in manifest["utilisation"].items())
    fmax = ", ".join(f"{v['achieved_mhz']:g} MHz (target {v['constraint_mhz']:g})" for v in manifest["fmax"].values())
    out.print(f"{manifest['device']['name']} {manifest['design']['pe']}: {util}; Fmax {fmax}; "
              f"{manifest['times_s']['total_s']:g} s -> {folder / manifest['artifact']['file']}")


@cli.command("flash")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--device", required=True, help="The board (a device profile of kind fpga).")
@click.option("--cable", help="openFPGALoader cable (default: the board's own).")
@click.option("--host", help="PYNQ boards: the board's HOST[:PORT] (PYNQ.remote, port 7967; default: the first "
                             "of $PYNQ_REMOTE_DEVICES).")
@click.option("--profiles", "profile_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Extra device profile folders.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
def flash_cmd(file: Path, device: str, cable: str | None, host: str | None, profile_dirs: tuple[Path, ...],
              as_json: bool) -> None:
    """Load bitstream FILE onto a board, after checking it was built for the board's part."""
    from ..links.flash import flash

    result = flash(file, device, cable, list(profile_dirs), host=host)
    if as_json:
        return print_json(result)
    out.print(f"loaded {result['file']} ({result['part']}) onto {result['device']}"
              + (f" at {result['host']}: PL {result['board']['fpga_manager_state']}, {result['times_s']['total']:g} s"
                 if "host" in result else ""))
