"""``--via adb``: profile a .pte on an Android phone with ExecuTorch's ``executor_runner``.

Steps, each one adb call: ask the device what it is (model, ABI, every CPU's ``cpuinfo_max_freq``), put the
runner and the artifact in /data/local/tmp/edgevit/, run ``taskset MASK runner --model_path ...
--etdump_path ... --num_executions N --cpu_threads T`` pinned to the big cores, pull the ETDump. The runner is
ExecuTorch's ``executor_runner`` built with the event tracer (docs/profiling-on-android.md); ``--runner``
names it here (pushed every time) or on the device (an absolute device path). Without ``--runner`` it is
expected at /data/local/tmp/executor_runner, where ExecuTorch's own Android instructions put it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ...devices.adb import AdbClient, AdbError, quote
from ...errors import EdgevitError
from . import DeviceRun, Target, register_target

__all__ = ["AdbTarget", "big_cores", "DEVICE_DIR", "DEFAULT_RUNNER"]

DEVICE_DIR = "/data/local/tmp/edgevit"
DEFAULT_RUNNER = "/data/local/tmp/executor_runner"
_PROPS = ("ro.product.model", "ro.product.device", "ro.product.manufacturer", "ro.product.cpu.abi",
          "ro.build.version.release", "ro.build.version.sdk")
# One shell call: properties, then each CPU's top clock (what big.LITTLE pinning needs), then taskset's presence.
_PROBE = ("for p in " + " ".join(_PROPS) + "; do echo \"prop $p=$(getprop $p)\"; done; "
          "(cd /sys/devices/system/cpu && for c in cpu[0-9]*; do "
          "echo \"freq ${c#cpu} $(cat $c/cpufreq/cpuinfo_max_freq 2>/dev/null)\"; done); "
          "command -v taskset >/dev/null && echo 'taskset yes'; true")


def big_cores(max_khz: dict[int, int], threads: int) -> list[int]:
    """The fastest cluster (CPUs sharing the top cpuinfo_max_freq), widened by the next-fastest cluster(s)
    until it has ``threads`` cores: a runtime thread never lands on a core slower than it needs."""
    chosen: list[int] = []
    for level in sorted(set(max_khz.values()), reverse=True):
        chosen += sorted(cpu for cpu, khz in max_khz.items() if khz == level)
        if len(chosen) >= threads:
            break
    return sorted(chosen)


@register_target
class AdbTarget(Target):
    """A phone reached by the adb client: ``serial_id`` as in ``adb devices`` (None: the only one attached)."""

    name = "adb"

    def __init__(self, serial_id: str | None = None, runner: str | Path | None = None, timeout: float = 900.0):
        self.serial_id, self.runner, self.timeout = serial_id, runner, timeout
        self._serial: str | None = None

    def run(self, artifact: Path, *, runs: int, warmup: int, threads: int, progress) -> DeviceRun:
        artifact = Path(artifact)
        if artifact.suffix != ".pte":
            raise EdgevitError(f"--via adb runs ExecuTorch programs (.pte) with executor_runner; {artifact.name} is "
                               "a LiteRT model. Profile it with --via local, or compile with --backend executorch.")
        with progress.stage("reaching the device over adb"):
            client = AdbClient(self.serial_id)
            self._serial = client.serial
            info = self._probe(client, threads)
        runner = self._install_runner(client, progress)
        remote_pte, remote_etdump = f"{DEVICE_DIR}/{artifact.name}", f"{DEVICE_DIR}/{artifact.stem}.etdump"
        with progress.stage(f"pushing {artifact.name} to {client.serial}"):
            client.check_shell(f"mkdir -p {DEVICE_DIR} && rm -f {quote(remote_etdump)}", "prepare " + DEVICE_DIR)
            client.push(artifact, remote_pte)
        command = quote(runner, f"--model_path={remote_pte}", f"--etdump_path={remote_etdump}",
                        f"--num_executions={warmup + runs}", f"--cpu_threads={threads}")
        if info["cpu_mask"]:
            command = f"taskset {info['cpu_mask'][2:]} {command}"  # toybox wants the mask in hex, no 0x
        where = f"CPUs {','.join(map(str, info['big_cores']))}" if info["cpu_mask"] else "unpinned"
        with progress.stage(f"running on {info.get('model') or client.serial} ({where}, {threads} thread(s), "
                            f"{warmup} warm-up + {runs} timed)"):
            result = client.shell(f"cd {DEVICE_DIR} && {command}", timeout=self.timeout)
        log = f"$ {command}\n{result.output}"
        self._check_exit(result.returncode, result.output, runner, info)
        with progress.stage("pulling the ETDump"), tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model.etdump"
            try:
                client.pull(remote_etdump, local)
            except AdbError:
                raise EdgevitError(f"The runner finished but wrote no ETDump at {remote_etdump}. It must be "
                                   "executor_runner built with -DEXECUTORCH_ENABLE_EVENT_TRACER=ON and "
                                   "-DEXECUTORCH_BUILD_DEVTOOLS=ON (docs/profiling-on-android.md).") from None
            etdump = local.read_bytes()
        client.shell(f"rm -f {quote(remote_pte)} {quote(remote_etdump)}")  # leave the runner for the next profile
        from ..runner import parse_result_line

        record = parse_result_line(result.output) or {}  # edgevit's runner says more; executor_runner does not
        return DeviceRun(etdump=etdump, times_ms=record.get("times_ms", [])[warmup:],
                         peak_memory_bytes=record.get("peak_memory_bytes"),  # what the model adds
                         device_info={**info, "threads": threads, "runner": runner, "command": command},
                         log=log[-4000:])

    def identify(self) -> dict:
        client = AdbClient(self.serial_id)
        return self._probe(client, threads=1)

    def describe(self) -> dict:
        return {"via": self.name, "serial": self._serial or self.serial_id, "adb": AdbClient.version()}

    # ------------------------------------------------------------------ steps
    def _probe(self, client: AdbClient, threads: int) -> dict:
        out = client.check_shell(_PROBE, "read the device's properties and CPU clocks")
        props, max_khz, has_taskset = {}, {}, False
        for line in out.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "prop" and "=" in rest:
                key, value = rest.split("=", 1)
                props[key] = value.strip()
            elif kind == "freq" and len(rest.split()) == 2 and all(x.isdigit() for x in rest.split()):
                cpu, khz = map(int, rest.split())
                max_khz[cpu] = khz
            elif line.strip() == "taskset yes":
                has_taskset = True
        cores = big_cores(max_khz, threads) if max_khz and has_taskset else []
        return {"serial": client.serial, "model": props.get("ro.product.model"),
                "device": props.get("ro.product.device"), "manufacturer": props.get("ro.product.manufacturer"),
                "abi": props.get("ro.product.cpu.abi"), "android": props.get("ro.build.version.release"),
                "sdk": props.get("ro.build.version.sdk"),
                "cpu_max_khz": {str(c): k for c, k in sorted(max_khz.items())},
                "big_cores": cores, "cpu_mask": hex(sum(1 << c for c in cores)) if cores else None,
                "pinning": "taskset to the fastest cores" if cores else
                           ("none: no taskset on the device" if max_khz else "none: cpufreq is not readable")}

    def _install_runner(self, client: AdbClient, progress) -> str:
        if self.runner is not None and Path(self.runner).is_file():
            remote = f"{DEVICE_DIR}/{Path(self.runner).name}"
            with progress.stage(f"pushing the runner {Path(self.runner).name}"):
                client.check_shell(f"mkdir -p {DEVICE_DIR}", "create " + DEVICE_DIR)
                client.push(Path(self.runner), remote)
                client.check_shell(f"chmod 755 {quote(remote)}", "make the runner executable")
            return remote
        remote = str(self.runner) if self.runner is not None else DEFAULT_RUNNER
        if not remote.startswith("/"):
            raise EdgevitError(f"--runner {remote}: no such file here. Give the executor_runner binary you built "
                               "(docs/profiling-on-android.md), or an absolute path on the device.")
        state = client.check_shell(f"if [ -x {quote(remote)} ]; then echo ok; elif [ -e {quote(remote)} ]; "
                                   "then echo noexec; else echo missing; fi", "look for the runner").strip()
        if state == "missing":
            raise EdgevitError(f"No runner on {client.serial} at {remote}. Build ExecuTorch's executor_runner for "
                               "Android with the event tracer on (docs/profiling-on-android.md) and pass it with "
                               "--runner ./executor_runner; edgevit pushes it to the device.")
        if state == "noexec":
            raise EdgevitError(f"The runner {remote} on {client.serial} is not executable. Run "
                               f"`adb -s {client.serial} shell chmod 755 {remote}`, or pass the local binary with "
                               "--runner to push it again.")
        return remote

    @staticmethod
    def _check_exit(code: int, output: str, runner: str, info: dict) -> None:
        tail = " ".join(line.strip() for line in output.strip().splitlines()[-3:]) or "no output"
        if code in (126, 127):
            raise EdgevitError(f"The device could not execute the runner {runner} (exit {code}: {tail}). Is it built "
                               f"for this device's ABI ({info.get('abi') or 'unknown'}) and for Android (NDK)? See "
                               "docs/profiling-on-android.md.")
        if "etdump_path" in output and "unknown command line flag" in output:  # gflags' words
            raise EdgevitError(f"The runner {runner} has no --etdump_path: it was built without the event tracer. "
                               "Rebuild it with -DEXECUTORCH_BUILD_DEVTOOLS=ON -DEXECUTORCH_ENABLE_EVENT_TRACER=ON "
                               "(docs/profiling-on-android.md).")
        if code != 0:
            raise EdgevitError(f"The runner failed on the device (exit {code}): {tail}. If the program does not load, "
                               "the runner may be older than the ExecuTorch that compiled it, or lack XNNPACK; "
                               "rebuild it (docs/profiling-on-android.md).")
