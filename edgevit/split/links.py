"""Network link profiles for split inference: achieved TCP throughput and round-trip time, as data.

``profiles/links/*.yaml`` (in a wheel: ``edgevit/_profiles/links/``), plus ``DIR/links/*.yaml`` of every
``--profiles DIR``. The bandwidth is what TCP *achieves* (iperf3 goodput), never the PHY rate, and every
figure names its source; ``basis`` says whether it was measured, published or derived (then ``formula``
says how). A broken file fails with its path, the field and what was expected.

A transfer of ``n`` bytes costs ``n * 8 / bandwidth + rtt`` (one message and its acknowledgement).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..devices import BUILTIN_PROFILE_DIR
from ..errors import EdgevitError, UnknownNameError

__all__ = ["LINK_DIR", "LinkProfile", "LinkProfileError", "get_link", "link_dirs", "list_links",
           "load_link_file", "load_links"]

LINK_DIR = BUILTIN_PROFILE_DIR / "links"


class LinkProfileError(EdgevitError):
    """A link profile file that cannot be read or does not follow the schema."""


class LinkProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    display_name: str
    bandwidth_mbps: float = Field(gt=0, description="achieved TCP throughput one way, Mbit/s (not the PHY rate)")
    rtt_ms: float = Field(ge=0, description="round-trip time of a small message, ms")
    basis: Literal["measured", "published", "derived"]
    formula: str | None = Field(default=None, description="how a derived figure was computed")
    phy_mbps: float | None = Field(default=None, gt=0, description="the link's nominal rate, for reference only")
    sources: list[str] = Field(min_length=1, description="where the figures come from")
    notes: str | None = None

    @model_validator(mode="after")
    def _derived_says_how(self) -> LinkProfile:
        if self.basis == "derived" and not self.formula:
            raise ValueError("basis 'derived' needs a `formula` saying how the figures were computed")
        if self.phy_mbps is not None and self.bandwidth_mbps > self.phy_mbps:
            raise ValueError(f"bandwidth_mbps {self.bandwidth_mbps:g} exceeds the PHY rate phy_mbps "
                             f"{self.phy_mbps:g}; give the achieved TCP throughput, not the nominal rate")
        return self

    def transfer_ms(self, nbytes: float) -> float:
        """Milliseconds to send ``nbytes`` over this link: serialisation at the achieved rate plus one RTT."""
        return nbytes * 8 / (self.bandwidth_mbps * 1e6) * 1e3 + self.rtt_ms

    def as_dict(self) -> dict:
        return self.model_dump()


def _format(path: Path, err: ValidationError) -> str:
    problems = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = e.get("input")
        problems.append(f"field '{field}': {e['msg']}" + ("" if isinstance(got, dict) else f" (got {got!r})"))
    return f"Link profile {path} is invalid: " + "; ".join(problems) + "."


def load_link_file(path: Path) -> LinkProfile:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise LinkProfileError(f"Cannot read link profile {path}: {e}") from None
    if not isinstance(data, dict):
        raise LinkProfileError(f"Link profile {path} must be a YAML mapping, got {type(data).__name__}.")
    try:
        link = LinkProfile.model_validate(data)
    except ValidationError as e:
        raise LinkProfileError(_format(path, e)) from None
    if link.name != path.stem:
        raise LinkProfileError(f"Link profile {path}: field 'name' is '{link.name}' but the file is named "
                               f"'{path.name}'; they must agree (expected name '{path.stem}').")
    return link


def link_dirs(profile_dirs: list[Path] | None = None) -> list[Path]:
    """The built-in link folder, then ``DIR/links`` of each ``--profiles DIR`` that has one."""
    extra = [Path(d).expanduser() / "links" for d in (profile_dirs or [])]
    return [LINK_DIR, *(d for d in extra if d.is_dir())]


def load_links(profile_dirs: list[Path] | None = None) -> dict[str, LinkProfile]:
    """All link profiles: built-in first, then each ``--profiles DIR``'s ``links/`` (a user file overrides)."""
    links: dict[str, LinkProfile] = {}
    for directory in link_dirs(profile_dirs):
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.y*ml")):
            link = load_link_file(path)
            links[link.name] = link
    return links


def list_links(profile_dirs: list[Path] | None = None) -> list[str]:
    return sorted(load_links(profile_dirs))


def get_link(name: str, profile_dirs: list[Path] | None = None) -> LinkProfile:
    links = load_links(profile_dirs)
    if name not in links:
        raise UnknownNameError("link", name, links)
    return links[name]
