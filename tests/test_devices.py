"""Device profiles: every built-in validates, broken ones name file and field, users can add their own."""
import json
import shutil

import pytest
import yaml

from edgevit.devices import BUILTIN_PROFILE_DIR, ProfileError, get_device, list_devices, load_profiles
from edgevit.errors import UnknownNameError

pytestmark = pytest.mark.unit

FPGA_BOARDS = {"zcu102", "zcu104", "kv260"}
EXPECTED = {"pixel8", "galaxy-s24", "iphone15-pro", "rpi5", "jetson-orin-nano", "host"} | FPGA_BOARDS


def test_builtin_profiles_validate():
    profiles = load_profiles()
    assert EXPECTED <= set(profiles)
    for p in profiles.values():
        assert p.compile.preferred_backend in p.compile.backends or (p.kind == "fpga" and not p.compile.backends)
        assert (p.cpu is None or p.cpu.cores >= 1) and p.memory.ram_gb > 0 and p.compile.model_memory_mb > 0
    pixel8 = profiles["pixel8"]
    assert [c.ghz for c in pixel8.cpu.clusters] == [2.91, 2.37, 1.70]  # Tensor G3 clocks: Android Authority, 2023-10-03
    assert profiles["jetson-orin-nano"].memory.bandwidth_gbps == 102


def test_host_profile_reads_this_machine():
    import os
    host = get_device("host")
    assert host.cpu.cores == os.cpu_count()
    assert host.compile.threads == os.cpu_count()


def _copy_profile(tmp_path, name="pixel8", **changes):
    data = yaml.safe_load((BUILTIN_PROFILE_DIR / f"{name}.yaml").read_text())
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return data


def test_broken_profile_names_file_field_and_expectation(tmp_path):
    data = _copy_profile(tmp_path, compile__threads="many")
    data["name"] = "myphone"
    path = tmp_path / "myphone.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError) as e:
        load_profiles([tmp_path])
    msg = str(e.value)
    assert str(path) in msg and "compile.threads" in msg and "integer" in msg


def test_preferred_backend_must_be_supported(tmp_path):
    data = _copy_profile(tmp_path, compile__preferred_backend="litert", compile__backends=["executorch"])
    data["name"] = "odd"
    (tmp_path / "odd.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError) as e:
        load_profiles([tmp_path])
    assert str(tmp_path / "odd.yaml") in str(e.value)
    assert "preferred_backend" in str(e.value) and "'litert'" in str(e.value)


def test_user_profile_dir_adds_a_device(tmp_path):
    data = _copy_profile(tmp_path, compile__model_memory_mb=64)
    data["name"] = "tiny-board"
    (tmp_path / "tiny-board.yaml").write_text(yaml.safe_dump(data))
    assert "tiny-board" in list_devices([tmp_path])
    assert get_device("tiny-board", [tmp_path]).compile.model_memory_mb == 64


def test_file_name_and_profile_name_must_agree(tmp_path):
    shutil.copy(BUILTIN_PROFILE_DIR / "rpi5.yaml", tmp_path / "rpi6.yaml")
    with pytest.raises(ProfileError) as e:
        load_profiles([tmp_path])
    assert "'rpi5'" in str(e.value) and "rpi6.yaml" in str(e.value)  # the name inside, the file's name


def test_unknown_device_suggests_close_names():
    with pytest.raises(UnknownNameError) as e:
        get_device("pixel-8")
    assert e.value.name == "pixel-8" and e.value.close[0] == "pixel8"
    assert "'pixel-8'" in str(e.value) and "pixel8" in str(e.value)


# --- FPGA boards (kind: fpga) -----------------------------------------------------------------------------------


def test_fpga_boards_load_with_their_published_resources():
    profiles = load_profiles()
    fabric = {name: (p.fpga.part, p.fpga.dsp, p.fpga.bram36, p.fpga.uram, p.fpga.lut, p.fpga.ff)
              for name, p in profiles.items() if name in FPGA_BOARDS}
    assert fabric == {  # DS891 (ZU9EG, ZU7EV), DS987 (K26)
        "zcu102": ("xczu9eg-ffvb1156-2-e", 2520, 912, 0, 274080, 548160),
        "zcu104": ("xczu7ev-ffvc1156-2-e", 1728, 312, 96, 230400, 460800),
        "kv260": ("xck26-sfvc784-2LV-c", 1248, 144, 64, 117120, 234240),
    }
    for name in FPGA_BOARDS:
        p = profiles[name]
        assert p.compile.backends == ["hls"] and p.compile.preferred_backend == "hls"
        assert p.compile.default_precision == "fixed" and p.compile.delegate is None
        assert p.fpga.dsp_kind == "DSP48E2" and (p.fpga.bram36_kbits, p.fpga.uram_kbits) == (36, 288)
        assert p.compute is None and p.memory.bandwidth_gbps == p.fpga.ddr.gbps
    assert profiles["zcu102"].fpga.clock_mhz == 300  # Edge-MoE's build clock (vitis_hls.tcl, vivado.tcl)
    assert profiles["zcu102"].fpga.openfpgaloader_board == "zcu102"
    assert profiles["kv260"].fpga.pynq and profiles["kv260"].fpga.ddr.mts == 2400  # Kria-PYNQ; DS987
    # CPU devices keep the XNNPACK delegate and have no fpga section
    assert all(p.fpga is None and p.compile.delegate == "xnnpack" for p in profiles.values()
               if p.kind not in ("fpga", "mcu"))


def test_fpga_ddr_peak_is_bus_width_times_transfer_rate():
    for name in FPGA_BOARDS:
        ddr = get_device(name).fpga.ddr
        assert ddr.gbps == pytest.approx(ddr.bus_bits / 8 * ddr.mts / 1000, abs=0.01), name


def _fpga_profile(tmp_path, name="myboard", **changes):
    data = _copy_profile(tmp_path, "zcu102", **changes)
    data["name"] = name
    return data


def _load_one(tmp_path, data) -> str:
    """Write ``data`` as its own profile, load it, and return the ProfileError's message."""
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError) as e:
        load_profiles([tmp_path])
    assert str(path) in str(e.value)
    return str(e.value)


def test_fpga_section_is_required_for_kind_fpga(tmp_path):
    data = _fpga_profile(tmp_path)
    del data["fpga"]
    msg = _load_one(tmp_path, data)
    assert "field 'fpga'" in msg and "kind 'fpga' needs an `fpga:` section" in msg


def test_fpga_section_is_refused_for_other_kinds(tmp_path):
    data = _copy_profile(tmp_path, "rpi5")
    data["name"] = "rpi-with-fabric"
    data["fpga"] = yaml.safe_load((BUILTIN_PROFILE_DIR / "zcu102.yaml").read_text())["fpga"]
    msg = _load_one(tmp_path, data)
    assert "field 'fpga'" in msg and "belongs to kind 'fpga' only" in msg and "kind 'board'" in msg


def test_fpga_ddr_peak_that_disagrees_with_the_formula_is_refused(tmp_path):
    data = _fpga_profile(tmp_path, fpga__ddr__gbps=25.6)
    msg = _load_one(tmp_path, data)
    assert "fpga.ddr" in msg and "17.06" in msg


def test_fpga_ddr_peak_is_computed_when_left_out(tmp_path):
    data = _fpga_profile(tmp_path, "slowboard")
    del data["fpga"]["ddr"]["gbps"]
    data["fpga"]["ddr"]["mts"] = 1600
    (tmp_path / "slowboard.yaml").write_text(yaml.safe_dump(data))
    assert get_device("slowboard", [tmp_path]).fpga.ddr.gbps == 12.8  # 64/8 x 1600


def test_fpga_board_has_no_cpu_delegate(tmp_path):
    data = _fpga_profile(tmp_path, compile__delegate="xnnpack")
    msg = _load_one(tmp_path, data)
    assert "field 'compile'" in msg and "delegate 'xnnpack'" in msg


def test_devices_command_lists_the_fpga_boards(capsys):
    from edgevit.cli import main

    assert main(["devices"]) == 0
    table = capsys.readouterr().out
    for name, part in (("zcu102", "xczu9eg-ffvb1156-2-e"), ("zcu104", "xczu7ev-ffvc1156-2-e"),
                       ("kv260", "xck26-sfvc784-2LV-c")):
        assert name in table and part in table
    assert "2520 DSP" in table and "rpi5" in table and "Broadcom BCM2712" in table  # CPU rows unchanged
    assert main(["devices", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["kv260"]["fpga"]["uram"] == 64 and rows["zcu104"]["fpga"]["ddr"]["gbps"] == 17.06


OPEN_FLOW_BOARDS = {"ulx3s", "icebreaker"}


def test_open_flow_boards_have_no_ps_and_no_backend():
    """ULX3S (ECP5) and iCEBreaker (iCE40): no AXI/DDR, no model backend; `edgevit rtl build` targets them."""
    profiles = load_profiles()
    fabric = {name: (p.fpga.part, p.fpga.dsp, p.fpga.dsp_kind, p.fpga.bram36, p.fpga.bram36_kbits, p.fpga.uram,
                     p.fpga.lut, p.fpga.openfpgaloader_board)
              for name, p in profiles.items() if name in OPEN_FLOW_BOARDS}
    assert fabric == {  # ECP5 family data sheet (LFE5U-85), iCE40 UltraPlus data sheet (UP5K)
        "ulx3s": ("LFE5U-85F-6BG381C", 156, "MULT18X18D", 208, 18, 0, 83640, "ulx3s"),
        "icebreaker": ("iCE40UP5K-SG48I", 8, "SB_MAC16", 30, 4, 0, 5280, "ice40_generic"),
    }
    for name in OPEN_FLOW_BOARDS:
        p = profiles[name]
        assert p.fpga.axi is None and p.fpga.ddr is None and not p.fpga.pynq
        assert p.compile.backends == [] and p.compile.preferred_backend is None
    assert profiles["icebreaker"].cpu is None and profiles["ulx3s"].fpga.clock_mhz == 25


def test_hls_backend_needs_axi_and_ddr(tmp_path):
    data = _fpga_profile(tmp_path, fpga__axi=None)
    msg = _load_one(tmp_path, data)
    assert "backend 'hls'" in msg and "fpga.axi and fpga.ddr are required" in msg


def test_cpu_devices_need_a_cpu_and_a_backend(tmp_path):
    data = _copy_profile(tmp_path, "rpi5", cpu=None)
    data["name"] = "headless"
    assert "field 'cpu' is required for kind 'board'" in _load_one(tmp_path, data)
    data = _copy_profile(tmp_path, "rpi5", compile__backends=[], compile__preferred_backend=None)
    data["name"] = "nobackend"
    (tmp_path / "headless.yaml").unlink()
    assert "needs at least one backend" in _load_one(tmp_path, data)


# --- microcontrollers (kind: mcu) -------------------------------------------------------------------------------

MCU_BOARDS = {"corstone300", "stm32h743"}


def test_mcu_boards_load_with_their_published_memories():
    profiles = load_profiles()
    facts = {name: (p.mcu.core, p.mcu.clock_mhz, p.mcu.sram_kb, p.mcu.total_sram_kb, p.mcu.flash_kb, p.mcu.itcm_kb,
                    p.mcu.dtcm_kb, p.mcu.helium, p.mcu.firmware_board, p.mcu.qemu_machine)
             for name, p in profiles.items() if name in MCU_BOARDS}
    assert facts == {  # Arm AN547 / QEMU mps2-tz.c; ST DS12110 / RM0433 (AXI SRAM: the largest contiguous block)
        "corstone300": ("cortex-m55", 32, 4096, 7168, 8192, 512, 512, True, "mps3-an547", "mps3-an547"),
        "stm32h743": ("cortex-m7", 480, 512, 1060, 2048, 64, 128, False, "mps2-an500", "mps2-an500"),
    }
    for name in MCU_BOARDS:
        p = profiles[name]
        assert p.compile.backends == ["mcu"] and p.compile.preferred_backend == "mcu"
        assert p.compile.default_precision == "int8" and p.compile.delegate is None and p.fpga is None
        assert f"-mcpu={p.mcu.core}" in p.mcu.gcc_flags and p.sources
    assert "-mfpu=fpv5-d16" in profiles["stm32h743"].mcu.gcc_flags
    assert all(p.mcu is None for p in profiles.values() if p.kind != "mcu")


def test_mcu_section_is_required_for_kind_mcu_and_refused_elsewhere(tmp_path):
    data = _copy_profile(tmp_path, "corstone300")
    data["name"] = "bare-m55"
    del data["mcu"]
    msg = _load_one(tmp_path, data)
    assert "field 'mcu'" in msg and "kind 'mcu' needs an `mcu:` section" in msg
    (tmp_path / "bare-m55.yaml").unlink()
    data = _copy_profile(tmp_path, "rpi5")
    data["name"] = "rpi-with-mcu"
    data["mcu"] = yaml.safe_load((BUILTIN_PROFILE_DIR / "corstone300.yaml").read_text())["mcu"]
    msg = _load_one(tmp_path, data)
    assert "field 'mcu'" in msg and "belongs to kind 'mcu' only" in msg


def test_mcu_flags_must_build_for_its_core(tmp_path):
    data = _copy_profile(tmp_path, "stm32h743")
    data["name"] = "wrong-core"
    data["mcu"]["gcc_flags"] = ["-mcpu=cortex-m4", "-mfloat-abi=hard"]
    msg = _load_one(tmp_path, data)
    assert "field 'mcu'" in msg and "do not build for core cortex-m7" in msg


def test_devices_command_lists_the_mcu_boards(capsys):
    from edgevit.cli import main

    assert main(["devices"]) == 0
    table = capsys.readouterr().out
    assert "corstone300" in table and "stm32h743" in table and "cortex-m55 @ 32 MHz" in table
    assert "512 KB SRAM" in table and "2048 KB flash" in table and "zcu102" in table     # FPGA rows still there
    assert main(["devices", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["stm32h743"]["mcu"]["sram_kb"] == 512 and rows["corstone300"]["kind"] == "mcu"
