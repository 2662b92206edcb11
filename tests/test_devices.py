"""Device profiles: every built-in validates, broken ones name file and field, users can add their own."""
import shutil

import pytest
import yaml

from edgevit.devices import BUILTIN_PROFILE_DIR, ProfileError, get_device, list_devices, load_profiles
from edgevit.errors import UnknownNameError

pytestmark = pytest.mark.unit

EXPECTED = {"pixel8", "galaxy-s24", "iphone15-pro", "rpi5", "jetson-orin-nano", "host"}


def test_builtin_profiles_validate():
    profiles = load_profiles()
    assert EXPECTED <= set(profiles)
    for p in profiles.values():
        assert p.compile.preferred_backend in p.compile.backends
        assert p.cpu.cores >= 1 and p.memory.ram_gb > 0 and p.compile.model_memory_mb > 0
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
