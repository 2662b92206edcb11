"""`edgevit profile --via adb` end to end: the real adb client and server, an emulated phone on loopback that
speaks the adb wire protocol (tests/emulators/adbd.py), and a runner doing real work in ExecuTorch on it.

Each test module gets its own adb server port and HOME (adb writes ~/.android), and kills its servers at the end.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from emulators.adbd import A_VERSION_MIN, EmulatedAdbDevice

from edgevit.cli import main
from edgevit.compile import CompileOptions, compile_model
from edgevit.links.adb import AdbClient, AdbError
from edgevit.profiling.via.adb import big_cores

# CI installs the client (.ci/run), so there a missing adb is a failure, not a skip.
pytestmark = pytest.mark.skipif(shutil.which("adb") is None and not os.environ.get("CI"),
                                reason="the adb client is not installed (apt-get install adb)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _adb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["adb", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def adb_server(tmp_path_factory):
    """An isolated adb server (started by the first adb command) and HOME; killed afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        mp.setenv("ANDROID_ADB_SERVER_PORT", str(_free_port()))
        mp.delenv("ADB_SERVER_SOCKET", raising=False)
        try:
            yield
        finally:
            _adb("kill-server")


@pytest.fixture(scope="module")
def phone(adb_server, tmp_path_factory):
    """An emulated Pixel 8 (big.LITTLE 4+4+1, cpu8 fastest), attached with the real `adb connect`."""
    with EmulatedAdbDevice(tmp_path_factory.mktemp("pixel8-root")) as device:
        done = _adb("connect", device.address)
        assert f"connected to {device.address}" in done.stdout, done
        yield device


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    result = compile_model(CompileOptions(model="user_models:build_tiny", device="pixel8", backend="executorch",
                                          precision="fp32", input_shape="1,3,32,32", num_verify=2,
                                          output_root=tmp_path_factory.mktemp("out")))
    return result.out_dir


@pytest.fixture(scope="module")
def runner_script(tmp_path_factory) -> Path:
    """What the phone runs in place of executor_runner: edgevit's runner (same flags) in the real runtime."""
    path = tmp_path_factory.mktemp("runner") / "executor_runner"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m edgevit.backends.executorch.runner "$@"\n')
    path.chmod(0o755)
    return path


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


@pytest.mark.emulated
def test_profile_over_adb_end_to_end(phone, artifact, runner_script, capsys):
    code, out, err = _cli(capsys, "profile", str(artifact), "--via", "adb", "--serial-id", phone.address,
                          "--runner", str(runner_script), "--runs", "4", "--warmup", "1", "--json")
    assert code == 0, err
    report = json.loads(out)
    # real per-op rows from the ETDump the device wrote, mapped back to the model's modules
    assert report["wall_ms"]["runs"] == 4 and report["wall_ms"]["median"] > 0
    assert any(r["op_type"].startswith("Convolution") for r in report["ops"])
    assert sum(r["ms"] for r in report["ops"]) > 0
    assert {m["name"] for m in report["modules"]} >= {"features.0", "features.3", "head"}
    assert report["peak_memory_bytes"] > 0
    # what the device said about itself, and the pinning to its fastest core
    info = report["target"]["device_info"]
    assert (info["model"], info["device"], info["abi"]) == ("Pixel 8", "shiba", "arm64-v8a")
    assert info["cpu_max_khz"]["8"] == 2_910_000 and info["big_cores"] == [8] and info["cpu_mask"] == "0x100"
    assert report["target"]["serial"] == phone.address
    assert info["command"].startswith("taskset 100 /data/local/tmp/edgevit/executor_runner "
                                      "--model_path=/data/local/tmp/edgevit/model.pte")
    assert report["target"]["adb"].startswith("Version ")
    calls = phone.taskset_calls()
    assert calls and calls[-1]["mask"] == "0x100" and calls[-1]["cpus"] == [8]
    assert "--num_executions=5" in calls[-1]["argv"] and "--cpu_threads=1" in calls[-1]["argv"]
    # stored next to the artifact; the device keeps the runner, not the model or the ETDump
    stored = json.loads(Path(report["files"]["json"]).read_text())
    assert stored["ops"] == report["ops"] and Path(report["files"]["png"]).stat().st_size > 0
    assert Path(report["files"]["json"]).parent == artifact / "profiles"
    assert sorted(p.name for p in phone.host_path("/data/local/tmp/edgevit").iterdir()) == ["executor_runner"]


@pytest.mark.emulated
def test_shell_returns_the_exit_status(phone):
    client = AdbClient(phone.address)
    result = client.shell("echo to-stdout; echo to-stderr >&2; (exit 3)")
    assert result.returncode == 3 and result.output.split() == ["to-stdout", "to-stderr"]


@pytest.mark.emulated
def test_a_hanging_command_times_out_and_stops_on_the_device(phone):
    client = AdbClient(phone.address, timeout=1.5)
    with pytest.raises(AdbError) as e:
        client.shell("sleep 60")
    assert re.search(r"\b2 s\b", str(e.value))  # the time it gave the command (1.5 s, rounded)
    deadline = time.monotonic() + 60  # the killed client closes the stream; the device kills the command
    while time.monotonic() < deadline and phone.running():
        time.sleep(0.1)
    assert phone.running() == 0


@pytest.mark.emulated
def test_checksummed_protocol_push_pull_roundtrip(adb_server, tmp_path):
    """Protocol 0x01000000: the adb server and the device checksum every payload; a 3 MB file crosses
    several WRTE messages and 64 KiB sync DATA chunks each way."""
    payload = os.urandom(3 * 2**20 + 17)
    (tmp_path / "blob.bin").write_bytes(payload)
    with EmulatedAdbDevice(tmp_path / "root", version=A_VERSION_MIN, maxdata=4096) as device:
        assert "connected to" in _adb("connect", device.address).stdout
        client = AdbClient(device.address)
        client.push(tmp_path / "blob.bin", "/sdcard/blob.bin")
        client.pull("/sdcard/blob.bin", tmp_path / "back.bin")
        assert (tmp_path / "back.bin").read_bytes() == payload
        assert device.host_path("/sdcard/blob.bin").read_bytes() == payload
        with pytest.raises(AdbError) as e:
            client.push(tmp_path / "blob.bin", "/system/blob.bin")
        assert "/system/blob.bin" in str(e.value) and "Read-only file system" in str(e.value)  # the device's reason
        _adb("disconnect", device.address)
    assert not (device.state_dir / "events.log").exists()  # no protocol errors seen


@pytest.mark.unit
def test_big_cores_widen_to_the_thread_count():
    pixel8 = {**{c: 1_704_000 for c in range(4)}, **{c: 2_367_000 for c in range(4, 8)}, 8: 2_910_000}
    assert big_cores(pixel8, 1) == [8]
    assert big_cores(pixel8, 2) == [4, 5, 6, 7, 8]
    assert big_cores(pixel8, 9) == list(range(9))
    assert big_cores({0: 1_800_000, 1: 1_800_000}, 4) == [0, 1]  # fewer cores than threads: all of them


@pytest.mark.parametrize("case", ["wrong_serial", "runner_missing", "runner_not_executable",
                                  "runner_wrong_binary", "runner_not_here", "address_unreachable"])
@pytest.mark.emulated
def test_bad_device_side_input_is_one_clear_paragraph(phone, artifact, runner_script, capsys, tmp_path, case):
    # What the message must name (not its wording): the id, path, ABI or command the user has to act on.
    args = ["profile", str(artifact), "--via", "adb", "--serial-id", phone.address]
    if case == "wrong_serial":  # the wrong id, and the attached ones with their state
        args[-1], expected = "1A2B3C", ["'1A2B3C'", f"{phone.address} (device)", "--serial-id"]
    elif case == "runner_missing":  # no --runner: the default place on the device is empty
        expected = ["/data/local/tmp/executor_runner", "--runner"]
    elif case == "runner_not_executable":
        phone.host_path("/data/local/tmp/plain_file").write_text("#!/bin/sh\n")
        args += ["--runner", "/data/local/tmp/plain_file"]
        expected = ["/data/local/tmp/plain_file", "chmod 755"]
    elif case == "runner_wrong_binary":
        (tmp_path / "executor_runner").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(64))  # not a program this CPU runs
        args += ["--runner", str(tmp_path / "executor_runner")]
        expected = ["arm64-v8a"]  # the ABI the runner must be built for
    elif case == "runner_not_here":
        args += ["--runner", "build/executor_runner"]
        expected = ["build/executor_runner"]
    else:  # a HOST:PORT id where nothing listens: edgevit tries `adb connect` and says it failed
        address = f"127.0.0.1:{_free_port()}"
        args[-1], expected = address, [address, "adb tcpip 5555"]
    before = sorted((artifact / "profiles").glob("*"))
    code, _, err = _cli(capsys, *args)
    assert code == 2, err
    for text in expected:
        assert text in err
    assert "Traceback" not in err and sorted((artifact / "profiles").glob("*")) == before  # nothing written


@pytest.mark.emulated
def test_device_offline_says_how_to_reconnect(adb_server, artifact, capsys, tmp_path):
    with EmulatedAdbDevice(tmp_path / "root") as device:
        assert "connected to" in _adb("connect", device.address).stdout
    deadline = time.monotonic() + 60  # returns as soon as adb says so; 60 s only bounds a hang
    while time.monotonic() < deadline and f"{device.address}\toffline" not in _adb("devices").stdout:
        time.sleep(0.1)
    code, _, err = _cli(capsys, "profile", str(artifact), "--via", "adb", "--serial-id", device.address)
    _adb("disconnect", device.address)
    assert code == 2 and device.address in err and "offline" in err and "adb connect" in err  # id, state, remedy


@pytest.mark.emulated
def test_no_device_and_unreachable_server(artifact, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    # a fresh adb server that knows no device
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(_free_port()))
    try:
        code, _, err = _cli(capsys, "profile", str(artifact), "--via", "adb")
    finally:
        _adb("kill-server")
    assert code == 2 and "adb devices" in err and "USB debugging" in err  # what was asked, what to switch on
    # something on the server port that is not an adb server
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up_on_everyone():
        with contextlib.suppress(OSError):
            while True:
                listener.accept()[0].close()

    threading.Thread(target=hang_up_on_everyone, daemon=True).start()
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(listener.getsockname()[1]))
    code, _, err = _cli(capsys, "profile", str(artifact), "--via", "adb", "--serial-id", "1A2B3C")
    listener.close()
    assert code == 2 and "adb kill-server && adb start-server" in err
    # no adb client at all
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = _cli(capsys, "profile", str(artifact), "--via", "adb")
    assert code == 2 and "apt-get install adb" in err
