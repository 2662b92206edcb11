"""`edgevit flash --device kv260 --host ...`: PYNQ's own Overlay over its remote device API (real pynq 4.0.0 client,
real gRPC) against a fake remote KV260 (tests/emulators/pynq_board.py) that keeps what it is sent and programs its
"PL" only with an image for its own device."""
import json
import os
import socket
import sys
import warnings
from pathlib import Path

import pytest

try:
    with warnings.catch_warnings():      # pynqutils imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        import pynq  # noqa: F401
except ImportError:
    if os.environ.get("CI"):
        pytest.fail("pynq is required in CI (pip install --no-deps pynq==4.0.0 pynqmetadata==0.2.0 pynqutils==0.1.3)",
                    pytrace=False)
    pytest.skip("needs pynq (pip install --no-deps pynq==4.0.0 pynqmetadata==0.2.0 pynqutils==0.1.3)",
                allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent / "emulators"))
from pynq_board import CRL_APB, FPGA0, FakePynqBoard  # noqa: E402

from edgevit.cli import main  # noqa: E402
from edgevit.links.pynq import PYNQ_PORT, PynqLinkError, parse_host  # noqa: E402

# The fake KV260 answers to this IDCODE. A stand-in: the K26's JTAG IDCODE is published neither in DS987 nor in
# openFPGALoader 0.10's --list-fpga. The "other device" is xczu9eg (ZCU102), 0x04738093 in that list.
BOARD_IDCODE = 0x04720093
XCZU9EG_IDCODE = 0x04738093
SYNC, IDCODE_WRITE, NOOP = 0xAA995566, 0x30018001, 0x20000000


def _bitstream(part: bytes, idcode: int, payload: int = 0) -> bytes:
    """A Vivado-format .bit: header fields a (design), b (part), c (date), d (time) with 16-bit lengths, then e (32-bit
    length) holding configuration words: dummy pad, bus-width detect, sync word, the IDCODE write, NOOPs."""
    words = [0xFFFFFFFF] * 8 + [0x000000BB, 0x11220044, 0xFFFFFFFF, 0xFFFFFFFF, SYNC, NOOP, IDCODE_WRITE, idcode,
                                payload, NOOP, NOOP]
    body = b"".join(w.to_bytes(4, "big") for w in words)
    fields = ((b"a", b"design;UserID=0XFFFFFFFF;Version=2022.1"), (b"b", part), (b"c", b"2024/01/01"),
              (b"d", b"00:00:00"))
    head = b"\x00\x09\x0f\xf0\x0f\xf0\x0f\xf0\x0f\xf0\x00\x00\x01" + b"".join(
        k + (len(v) + 1).to_bytes(2, "big") + v + b"\x00" for k, v in fields)
    return head + b"e" + len(body).to_bytes(4, "big") + body


def _hwh() -> str:
    """The smallest hardware handoff pynqmetadata accepts for a ZynqMP design: the PS with its four PL clock
    settings (PL0 enabled, 1500 MHz IOPLL / 15 = 100 MHz)."""
    params = []
    for i in range(4):
        on = i == 0
        params += [f'<PARAMETER NAME="PSU__FPGA_PL{i}_ENABLE" VALUE="{int(on)}"/>',
                   f'<PARAMETER NAME="PSU__CRL_APB__PL{i}_REF_CTRL__ACT_FREQMHZ" VALUE="{99.999 if on else 100}"/>',
                   f'<PARAMETER NAME="PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR0" VALUE="{15 if on else 4}"/>',
                   f'<PARAMETER NAME="PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR1" VALUE="1"/>',
                   f'<PARAMETER NAME="PSU__CRL_APB__PL{i}_REF_CTRL__SRCSEL" VALUE="IOPLL"/>']
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no" ?>
<EDKSYSTEM EDWVERSION="1.2" TIMESTAMP="Mon Jan  1 00:00:00 2024" VIVADOVERSION="2022.1">
  <SYSTEMINFO ARCH="zynquplus" BOARD="xilinx.com:kv260_som:part0:1.4" DEVICE="xck26" NAME="design"
              PACKAGE="sfvc784" SPEEDGRADE="-2LV"/>
  <EXTERNALPORTS/>
  <EXTERNALINTERFACES/>
  <MODULES>
    <MODULE COREREVISION="0" FULLNAME="/zynq_ultra_ps_e_0" HWVERSION="3.4" INSTANCE="zynq_ultra_ps_e_0"
            IPTYPE="PERIPHERAL" IS_ENABLE="1" MODCLASS="PROCESSOR" MODTYPE="zynq_ultra_ps_e"
            VLNV="xilinx.com:ip:zynq_ultra_ps_e:3.4">
      <PARAMETERS>{"".join(params)}</PARAMETERS>
      <PORTS/>
      <BUSINTERFACES/>
    </MODULE>
  </MODULES>
</EDKSYSTEM>
"""


def _design(folder: Path, part=b"xck26-sfvc784-2LV-c", idcode=BOARD_IDCODE, payload=0, hwh=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    bit = folder / "design.bit"
    bit.write_bytes(_bitstream(part, idcode, payload))
    if hwh:
        (folder / "design.hwh").write_text(_hwh())
    return bit


def _fpga_image(bit: bytes) -> bytes:
    """The .bit's `e` section with each 32-bit word byte-swapped: what fpga_manager is given."""
    n = int.from_bytes(bit[bit.index(b"e", bit.index(b"00:00:00")) + 1:][:4], "big")
    body = bit[-n:]
    return b"".join(body[i:i + 4][::-1] for i in range(0, n, 4))


@pytest.fixture
def board():
    with FakePynqBoard(BOARD_IDCODE) as b:
        yield b


def _flash(bit: Path, *extra: str) -> int:
    return main(["flash", str(bit), "--device", "kv260", *extra])


@pytest.mark.emulated
def test_flash_loads_the_overlay_and_the_board_holds_the_image(board, tmp_path, capsys):
    bit = _design(tmp_path / "a")
    assert _flash(bit, "--host", board.address, "--json") == 0
    assert board.wait_for("writefile", FPGA0 + "firmware")
    result = json.loads(capsys.readouterr().out)
    assert board.files["/lib/firmware/design.bin"] == _fpga_image(bit.read_bytes())
    assert board.loaded == "design.bin"
    assert board.bitstream_attrs == {"binfile_name": "design.bin", "partial": False}
    assert board.files[FPGA0 + "flags"] == b"0"                      # a full bitstream
    pl0 = board.registers[CRL_APB + 0xC0]                            # PL0_REF_CTRL: set from the .hwh
    assert pl0 >> 24 & 1 and (pl0 >> 8 & 0x3F) * (pl0 >> 16 & 0x3F) == 15
    assert result["part"] == "xck26-sfvc784-2LV-c" and result["host"] == board.address
    assert result["board"] == {"name": "KV260", "arch": "aarch64", "fpga_manager_state": "operating"}
    assert result["pl_clocks_mhz"] == {"fclk0": 99.999} and result["ip"] == ["zynq_ultra_ps_e_0"]
    assert result["hwh"].endswith("design.hwh") and result["times_s"]["total"] > 0

    # a rebuilt design of the same name replaces the board's image (bare PYNQ would reuse the old .bin)
    bit2 = _design(tmp_path / "b", payload=0x12345678)
    assert _flash(bit2, "--host", board.address) == 0
    assert board.files["/lib/firmware/design.bin"] == _fpga_image(bit2.read_bytes()) != _fpga_image(bit.read_bytes())
    assert "onto kv260 at " + board.address in capsys.readouterr().out


@pytest.mark.emulated
def test_wrong_part_is_refused_before_the_board_is_contacted(board, tmp_path, capsys):
    bit = _design(tmp_path, part=b"xczu9eg-ffvb1156-2-e", idcode=XCZU9EG_IDCODE)
    assert _flash(bit, "--host", board.address) == 2
    err = capsys.readouterr().err
    assert "xczu9eg-ffvb1156-2-e" in err and "xck26-sfvc784-2LV-c" in err
    assert board.calls == [] and not any(p.startswith("/lib/firmware") for p in board.files)


@pytest.mark.emulated
def test_missing_or_unreadable_hwh_is_refused_before_any_connection(board, tmp_path, capsys):
    bit = _design(tmp_path, hwh=False)
    assert _flash(bit, "--host", board.address) == 2
    assert "design.hwh is missing" in capsys.readouterr().err
    (tmp_path / "design.hwh").write_text(_hwh().replace("PSU__FPGA_PL0_ENABLE", "PSU__X"))   # a PL clock lost
    assert _flash(bit, "--host", board.address) == 2
    assert "design.hwh is not a hardware handoff PYNQ can read (ParameterNotFound" in capsys.readouterr().err
    assert board.calls == []


@pytest.mark.emulated
def test_the_board_refuses_an_image_for_another_device(board, tmp_path, capsys):
    # the header claims xck26 (so edgevit's check passes) but the configuration data is xczu9eg's:
    # the board's configuration engine rejects the IDCODE, fpga_manager's write fails, the client sees it
    bit = _design(tmp_path, idcode=XCZU9EG_IDCODE)
    assert _flash(bit, "--host", board.address) == 2
    assert board.wait_for("writefile", FPGA0 + "firmware")
    err = capsys.readouterr().err
    assert "refused design.bit" in err and "0x04738093" in err and board.address in err
    assert board.loaded is None and board.files[FPGA0 + "state"] == b"write error\n"


@pytest.mark.emulated
def test_unreachable_board_and_no_host(tmp_path, capsys, monkeypatch):
    with socket.socket() as s:                      # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bit = _design(tmp_path)
    assert _flash(bit, "--host", f"127.0.0.1:{port}") == 2
    assert f"No PYNQ board answers at 127.0.0.1:{port}" in capsys.readouterr().err
    monkeypatch.delenv("PYNQ_REMOTE_DEVICES", raising=False)
    assert _flash(bit) == 2
    assert "--host HOST[:PORT]" in capsys.readouterr().err


@pytest.mark.unit
def test_host_parsing_follows_pynq_conventions(monkeypatch):
    assert parse_host("192.168.2.99") == ("192.168.2.99", PYNQ_PORT)
    assert parse_host("board.local:5000") == ("board.local", 5000)
    monkeypatch.setenv("PYNQ_REMOTE_DEVICES", " 10.0.0.7 , 10.0.0.8")
    assert parse_host(None) == ("10.0.0.7", PYNQ_PORT)
    with pytest.raises(PynqLinkError, match="not HOST"):
        parse_host("board:99999")
