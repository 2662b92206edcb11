"""Load a ``.bit`` + ``.hwh`` onto a PYNQ board with PYNQ's own ``Overlay``, over PYNQ's remote device API.

Why this route (and not SSH): PYNQ 4.0 ships a client for boards running the PYNQ.remote image
(``pynq.pl_server.remote_device.RemoteDevice``, gRPC on port 7967, ``$PYNQ_REMOTE_DEVICES`` = comma-separated
board addresses). Using it means the board-side steps are PYNQ's, not ours: the ``.hwh`` is parsed here by
pynqmetadata (a broken one fails here, before the PL is touched), the ``.bit`` becomes the ``.bin``
fpga_manager loads (``bit2bin``), the PL clocks are set from the ``.hwh`` through the board's MMIO service, and
the board programs the PL by ``/sys/class/fpga_manager/fpga0/firmware``. pynq 4.0.0 pins numpy<2 and
grpcio==1.64 but its code runs on numpy 2 / grpcio 1.85 / protobuf 7, so it is installed without its
dependencies: ``pip install --no-deps pynq==4.0.0 pynqmetadata==0.2.0 pynqutils==0.1.3``.

Two deviations from a bare ``Overlay(...)``: PYNQ 4.0 uploads the ``.bin`` only when ``/lib/firmware`` has no
file of that name, so a rebuilt design with the same name would load the stale image: we write it first. And
``pynq.Clocks`` caches the first device's clock controller for the whole process, and pynq reuses its cached
metadata for a .bit it loaded before without reading the .hwh: we reset both per load.

Before any connection: the caller (flash.py) has checked the file, its part and that the ``.hwh`` exists; here
the ``.hwh`` is parsed as Overlay will parse it, and a plain TCP
connect with a short timeout turns "no board there" into one clear error instead of PYNQ's 5 s channel wait.
"""
from __future__ import annotations

import os
import socket
import time
import warnings
from pathlib import Path

from ..errors import EdgevitError

__all__ = ["PynqLinkError", "PYNQ_PORT", "parse_host", "load_overlay"]

PYNQ_PORT = 7967   # pynq.pl_server.remote_device.PYNQ_PORT
FIRMWARE = "/lib/firmware/"
FPGA_STATE = "/sys/class/fpga_manager/fpga0/state"


class PynqLinkError(EdgevitError):
    """No host, no board at the host, pynq not installed, or the board refused the bitstream."""


def parse_host(host: str | None) -> tuple[str, int]:
    """``HOST[:PORT]``, or the first of ``$PYNQ_REMOTE_DEVICES`` (PYNQ's own convention, port 7967)."""
    if not host:
        env = [h.strip() for h in os.environ.get("PYNQ_REMOTE_DEVICES", "").split(",") if h.strip()]
        if not env:
            raise PynqLinkError("No PYNQ board given: pass --host HOST[:PORT] (the board's address; PYNQ.remote "
                                f"listens on {PYNQ_PORT}) or set PYNQ_REMOTE_DEVICES=HOST as PYNQ does.")
        host = env[0]
    name, sep, port = host.rpartition(":")
    if not sep or "]" in port:          # no port (or a bare [IPv6])
        name, port = host, str(PYNQ_PORT)
    name = name.strip("[]")
    if not name or not port.isdigit() or not 0 < int(port) < 65536:
        raise PynqLinkError(f"--host {host!r} is not HOST[:PORT] (e.g. 192.168.2.99 or 192.168.2.99:{PYNQ_PORT}).")
    return name, int(port)


def _import_pynq():
    try:
        with warnings.catch_warnings():        # pynqutils imports the deprecated pkg_resources
            warnings.simplefilter("ignore")
            import pynq
            from pynq.pl_server import global_state, remote_device
    except ImportError as e:
        raise PynqLinkError(f"Loading a PYNQ board needs the pynq package ({e}). Install it without its pinned "
                            "dependencies: pip install --no-deps pynq==4.0.0 pynqmetadata==0.2.0 "
                            "pynqutils==0.1.3") from None
    return pynq, remote_device, global_state


def _bit_to_bin(bit: bytes) -> bytes:
    """What fpga_manager loads: the .bit's data section with each 32-bit word byte-swapped (pynq's bit2bin)."""
    from pynq.pl_server.embedded_device import bit2bin
    return bit2bin(bit)


def _read_hwh(hwh: Path):
    """Parse the .hwh the way Overlay will (pynqmetadata), here, before any connection."""
    from pynqmetadata.frontends import Metadata
    from pynqmetadata.views.runtime import RuntimeMetadataParser
    try:
        return RuntimeMetadataParser(Metadata(input=hwh))
    except Exception as e:   # noqa: BLE001 - pynqmetadata raises ParseError, KeyError, its own errors, ...
        raise PynqLinkError(f"{hwh} is not a hardware handoff PYNQ can read ({type(e).__name__}: {e}). Give the "
                            ".hwh Vivado wrote with this .bit.") from None


def load_overlay(bit: Path, host: str | None, connect_timeout: float = 5.0) -> dict:
    """Load ``bit`` (with the ``.hwh`` beside it) onto the PYNQ board at ``host``; returns what happened."""
    import grpc

    name, port = parse_host(host)        # no host: say so before importing pynq or touching the network
    where = f"{name}:{port}"
    pynq, remote_device, global_state = _import_pynq()
    _read_hwh(bit.with_suffix(".hwh"))
    t0 = time.perf_counter()
    try:
        socket.create_connection((name, port), timeout=connect_timeout).close()
    except OSError as e:
        raise PynqLinkError(f"No PYNQ board answers at {where} ({e.strerror or e}). Check the address, that the "
                            "board is on the network and runs the PYNQ.remote image (its gRPC server on "
                            f"port {PYNQ_PORT}).") from None
    bit = bit.resolve()
    try:
        device = remote_device.RemoteDevice(0, name, port)
        t_connect = time.perf_counter()
        # pynq.Clocks keeps the clock controller of the first device it saw (class state): drop it, so that a second
        # board in this process gets its PL clocks set on itself, not on the first one (Overlay sets Clocks.device)
        if "_real_instance" in vars(pynq.Clocks):
            del pynq.Clocks._real_instance
        # pynq reuses its last parsed metadata when the .bit's hash matches its (client-side) global state, without
        # reading the .hwh: clear it so every load parses the .hwh that ships with this .bit (RemoteDevice.download
        # clears it anyway, a step later)
        global_state.clear_global_state()
        # PYNQ would skip the upload if a same-named .bin is already there (possibly an older build)
        bin_name = bit.stem + ".bin"
        device.write_file(FIRMWARE + bin_name, _bit_to_bin(bit.read_bytes()))
        overlay = pynq.Overlay(str(bit), device=device)
        t_load = time.perf_counter()
        state = device.read_file(FPGA_STATE).decode(errors="replace").strip()
    except grpc.RpcError as e:
        detail = e.details() if hasattr(e, "details") else str(e)
        raise PynqLinkError(f"The PYNQ board at {where} refused {bit.name}: {detail}") from None
    except RuntimeError as e:        # pynq: no connection, metadata it cannot parse
        raise PynqLinkError(f"PYNQ could not load {bit.name} onto {where}: {e}") from None
    return {
        "host": where,
        "board": {"name": device.name, "arch": device.arch, "fpga_manager_state": state},
        "firmware": FIRMWARE + bin_name,
        "ip": sorted(overlay.ip_dict),
        "pl_clocks_mhz": {f"fclk{i}": c["frequency"] for i, c in overlay.clock_dict.items() if c["enable"]},
        "pynq": pynq.__version__,
        "times_s": {"connect": round(t_connect - t0, 3), "load": round(t_load - t_connect, 3),
                    "total": round(time.perf_counter() - t0, 3)},
    }
