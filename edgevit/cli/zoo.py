"""`edgevit models` and `edgevit devices`: what the zoo and the device profiles hold."""
from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from ..errors import EdgevitError
from ._group import cli
from ._ui import out, print_json, profiles_option


@cli.command("models")
@click.option("--family", help="Only this family (efficientformer, efficientformer_v2, tiny_vit, shvit).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models_cmd(family: str | None, as_json: bool) -> None:
    """The model zoo: name, family, params, MACs, default resolution."""
    from ..models import count_params_and_macs, get_family_spec, get_model_spec, list_models

    if family is not None:
        get_family_spec(family)  # an unknown family: UnknownNameError listing list_families()
    rows = []
    for name in list_models(family):
        spec = get_model_spec(name)
        params, macs = count_params_and_macs(name)
        rows.append({"name": name, "family": spec.family, "params": params, "macs": macs,
                     "resolution": spec.resolution, "classes": spec.num_classes, "paper": spec.paper})
    if family and not rows:
        raise EdgevitError(f"No models in family '{family}'.")
    if as_json:
        return print_json(rows)
    table = Table(title="edgevit model zoo")
    for col in ("name", "family", "params (M)", "MACs (G)", "resolution", "classes"):
        table.add_column(col, justify="left" if col in ("name", "family") else "right")
    for r in rows:
        table.add_row(r["name"], r["family"], f"{r['params'] / 1e6:.2f}", f"{r['macs'] / 1e9:.3f}",
                      str(r["resolution"]), str(r["classes"]))
    out.print(table)


@cli.command("devices")
@profiles_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def devices_cmd(profile_dirs: tuple[Path, ...], as_json: bool) -> None:
    """The device profiles: SoC, CPU, GPU/NPU, memory, backends."""
    from ..devices import load_profiles

    profiles = load_profiles(list(profile_dirs))
    if as_json:
        return print_json([p.model_dump(mode="json") for p in profiles.values()])
    rows = [p.summary_row() for p in sorted(profiles.values(), key=lambda p: p.name)]
    table = Table(title="edgevit device profiles")
    for col in rows[0]:
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*r.values())
    out.print(table)
