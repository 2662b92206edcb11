"""`edgevit flash`: load a bitstream onto a board, after checking the file and that it was built for the board's part.

JTAG / USB boards go through openFPGALoader (``openFPGALoader -b BOARD [-c CABLE] FILE``); its failures (no cable,
no board on the cable) become one-paragraph errors. Boards whose profile says PYNQ load an ``Overlay``
(``.bit`` + ``.hwh``) with PYNQ's own remote device API (``links/pynq.py``, ``--host`` or ``$PYNQ_REMOTE_DEVICES``);
the ``.hwh`` and the part are checked before any connection.

The part check reads the bitstream itself: an ECP5 ``.bit`` from ecppack starts with a ``Part: LFE5U-85F-...``
comment and carries the device IDCODE in its VERIFY_ID command; a Xilinx ``.bit`` has the part in its header's
``b`` field. A file that names no part (an iCE40 ``.bin``) is checked against the ``manifest.json`` beside it
(``edgevit rtl build`` writes one).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..devices import DeviceProfile, get_device
from ..errors import EdgevitError

__all__ = ["FlashError", "BitstreamInfo", "read_bitstream_part", "parts_match", "flash", "ECP5_IDCODES"]


class FlashError(EdgevitError):
    """No file, a file for another part, no cable, no board, or a board this command cannot load."""


# Lattice ECP5 JTAG IDCODEs (ECP5 family data sheet; openFPGALoader --list-fpga)
ECP5_IDCODES = {0x21111043: "LFE5U-12F", 0x41111043: "LFE5U-25F", 0x41112043: "LFE5U-45F", 0x41113043: "LFE5U-85F",
                0x01112043: "LFE5UM-45F", 0x01113043: "LFE5UM-85F", 0x01111043: "LFE5UM-25F",
                0x81112043: "LFE5UM5G-45F", 0x81113043: "LFE5UM5G-85F", 0x81111043: "LFE5UM5G-25F"}


@dataclass(frozen=True)
class BitstreamInfo:
    part: str | None          # as the file (or its manifest) names it
    source: str               # where the part came from
    idcode: int | None = None


def _ecp5(data: bytes) -> BitstreamInfo | None:
    if not data.startswith(b"\xff\x00"):
        return None
    end = data.find(b"\xff\xff\xff\xbd\xb3")     # comment block, then the preamble
    if end < 0:
        return None
    comments = [c.decode("ascii", "replace") for c in data[2:end].split(b"\x00") if c]
    part = next((c.split(":", 1)[1].strip() for c in comments if c.startswith("Part:")), None)
    idcode = None
    m = re.search(rb"\xe2\x00\x00\x00(....)", data[end:end + 64], re.S)   # VERIFY_ID
    if m:
        idcode = int.from_bytes(m[1], "big")
        part = part or ECP5_IDCODES.get(idcode)
    if part is None and idcode is None:
        return None
    return BitstreamInfo(part, "ECP5 bitstream header", idcode)


def _xilinx(data: bytes) -> BitstreamInfo | None:
    # 00 09 <9 bytes> 00 01 'a' <len16> design-name ; 'b' <len16> part ; 'c' date ; 'd' time ; 'e' <len32> data
    if not data.startswith(b"\x00\x09\x0f\xf0"):
        return None
    i = 2 + 9 + 2
    fields = {}
    while i < len(data) and len(fields) < 4:
        key = chr(data[i])
        if key not in "abcd":
            break
        n = int.from_bytes(data[i + 1:i + 3], "big")
        fields[key] = data[i + 3:i + 3 + n].rstrip(b"\x00").decode("ascii", "replace")
        i += 3 + n
    if "b" not in fields:
        return None
    return BitstreamInfo(fields["b"], "Xilinx bitstream header (design " + fields.get("a", "?") + ")")


def read_bitstream_part(path: Path) -> BitstreamInfo:
    """The part a bitstream was built for, from the file itself or the edgevit manifest beside it."""
    with open(path, "rb") as f:
        head = f.read(4096)
    for reader in (_ecp5, _xilinx):
        info = reader(head)
        if info is not None:
            return info
    manifest = path.parent / "manifest.json"
    if manifest.exists():
        try:
            data = json.loads(manifest.read_text())
            if data.get("artifact", {}).get("file") == path.name:
                return BitstreamInfo(data["device"]["part"], f"{manifest} (the file itself names no part)")
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return BitstreamInfo(None, "nothing: the file names no part and no edgevit manifest.json describes it")


def _family_part(part: str) -> str:
    """The device, without speed grade / package / temperature: LFE5U-85F-6BG381C and LFE5U-85F-6CABGA381 ->
    LFE5U-85F; xczu9eg-ffvb1156-2-e and xczu9eg -> XCZU9EG; iCE40UP5K-SG48I -> ICE40UP5K."""
    p = part.strip().upper()
    m = re.match(r"(LFE5U[M5G]*-\d+F)", p)
    if m:
        return m[1]
    return re.split(r"[-_]", p)[0]


def parts_match(bitstream_part: str, board_part: str) -> bool:
    return _family_part(bitstream_part) == _family_part(board_part)


_FAILURES = [  # (openFPGALoader output, what it means for the user)
    (re.compile(r"unable to open ftdi device|device not found|No cable found|cannot find", re.I),
     "no cable: openFPGALoader found no {cable} USB adapter. Plug the board in (check `lsusb`), give its cable "
     "with --cable, or check USB permissions (udev rules)."),
    (re.compile(r"no device found|JTAG init failed|found 0 devices|IDCODE.*0x0+\b", re.I),
     "no board: the cable answered but no FPGA is on its JTAG chain. Check power and the JTAG connection."),
    (re.compile(r"mismatch|not supported|unknown device", re.I),
     "the FPGA on the cable is not the one the bitstream is for (or openFPGALoader does not know it)."),
]


def flash(path: str | Path, device: str, cable: str | None = None, profile_dirs: list[Path] | None = None,
          loader: str = "openFPGALoader", timeout: float = 300, host: str | None = None) -> dict:
    """Check ``path`` and load it onto ``device``; returns what was done. Raises :class:`FlashError`.

    ``host`` (``HOST[:PORT]``) is the PYNQ board's address, for boards whose profile says PYNQ."""
    profile: DeviceProfile = get_device(device, profile_dirs)
    if profile.kind != "fpga" or profile.fpga is None:
        raise FlashError(f"Device '{profile.name}' is a {profile.kind}, not an FPGA board; `edgevit flash` loads "
                         "bitstreams onto FPGA boards (see `edgevit devices`).")
    board = profile.fpga
    path = Path(path).expanduser()
    if not path.exists():
        raise FlashError(f"Bitstream {path} does not exist; build one (e.g. `edgevit rtl build --device "
                         f"{profile.name}`) or give the right path.")
    if not path.is_file():
        raise FlashError(f"{path} is a folder, not a bitstream file.")
    info = read_bitstream_part(path)
    if info.part is None:
        raise FlashError(f"Cannot tell which part {path} was built for ({info.source}); refusing to load it onto "
                         f"{profile.name} ({board.part}).")
    if not parts_match(info.part, board.part):
        raise FlashError(f"{path} was built for {info.part} (from {info.source}), but {profile.name} has "
                         f"{board.part}; it would not load (or would load into the wrong device). Rebuild for "
                         f"{profile.name}.")
    if board.pynq:
        return _flash_pynq(path, profile, info, host)
    if board.openfpgaloader_board is None:
        raise FlashError(f"{profile.name} has no openFPGALoader board name in its profile and does not run PYNQ: "
                         "edgevit cannot load it.")
    exe = shutil.which(loader)
    if exe is None:
        raise FlashError(f"{loader} is not installed (apt-get install openfpgaloader).")
    argv = [exe, "-b", board.openfpgaloader_board, *(["-c", cable] if cable else []), str(path)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FlashError(f"{loader} did not finish in {timeout:g} s: {' '.join(argv)}") from None
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        for pattern, meaning in _FAILURES:
            if pattern.search(output):
                msg = meaning.format(cable=cable or f"{board.openfpgaloader_board} board's default")
                break
        else:
            msg = f"{loader} failed (exit {proc.returncode})."
        last = output.splitlines()[-1] if output else "(no output)"
        raise FlashError(f"Cannot load {path.name} onto {profile.name}: {msg} {loader} said: {last}")
    return {"device": profile.name, "file": str(path), "part": info.part, "loader": " ".join(argv),
            "output": output.splitlines()[-5:]}


def _flash_pynq(path: Path, profile: DeviceProfile, info: BitstreamInfo, host: str | None) -> dict:
    from .pynq import PynqLinkError, load_overlay

    hwh = path.with_suffix(".hwh")
    if not hwh.exists():
        raise FlashError(f"{profile.name} runs PYNQ, whose Overlay needs the hardware handoff file beside the "
                         f"bitstream: {hwh} is missing (Vivado writes it with the .bit; copy both).")
    if path.suffix != ".bit":
        raise FlashError(f"{profile.name} runs PYNQ: give the Vivado .bit (with its .hwh), not {path.name}.")
    try:
        result = load_overlay(path, host)
    except PynqLinkError as e:
        raise FlashError(str(e)) from None
    return {"device": profile.name, "file": str(path), "hwh": str(hwh), "part": info.part,
            "loader": f"pynq {result['pynq']} Overlay over the PYNQ remote device API at {result['host']}", **result}
