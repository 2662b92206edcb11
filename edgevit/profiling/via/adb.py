"""``--via adb``: profile an artifact on an Android phone with its backend's native runner.

Steps, each one adb call: ask the device what it is (model, ABI, every CPU's ``cpuinfo_max_freq``), put the
runner and the artifact in /data/local/tmp/edgevit/, run the runner's command (``Backend.native_runner``;
for a .pte ExecuTorch's ``executor_runner --model_path ... --etdump_path ... --num_executions N
--cpu_threads T``) under ``taskset MASK`` on the big cores, pull the profile file it wrote. ``--runner``
names the runner here (pushed every time) or on the device (an absolute device path); without it, the
runner's default device path (for executor_runner /data/local/tmp/executor_runner, where ExecuTorch's own
Android instructions put it).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ...backends import Backend, NativeRunner
from ...backends._process import parse_result_line
from ...errors import EdgevitError
from ...links.adb import AdbClient, AdbError, quote
from . import DeviceRun, Target, register_target

__all__ = ["AdbTarget", "big_cores", "DEVICE_DIR"]

DEVICE_DIR = "/data/local/tmp/edgevit"
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

    def run(self, artifact: Path, backend: Backend, *, runs: int, warmup: int, threads: int,
            progress) -> DeviceRun:
        artifact = Path(artifact)
        native = backend.native_runner
        if native is None:
            raise EdgevitError(f"--via adb runs an artifact with its runtime's native runner on the phone; "
                               f"{backend.name} ({artifact.name}) has none in edgevit. Profile it with --via local, "
                               "or compile with a backend that has one (--backend executorch).")
        with progress.stage("reaching the device over adb"):
            client = AdbClient(self.serial_id)
            self._serial = client.serial
            info = self._probe(client, threads)
        runner = self._install_runner(client, native, progress)
        remote_artifact = f"{DEVICE_DIR}/{artifact.name}"
        remote_result = f"{DEVICE_DIR}/{artifact.stem}{native.result_suffix}"
        with progress.stage(f"pushing {artifact.name} to {client.serial}"):
            client.check_shell(f"mkdir -p {DEVICE_DIR} && rm -f {quote(remote_result)}", "prepare " + DEVICE_DIR)
            client.push(artifact, remote_artifact)
        command = quote(*native.command(runner, remote_artifact, remote_result, warmup + runs, threads))
        if info["cpu_mask"]:
            command = f"taskset {info['cpu_mask'][2:]} {command}"  # toybox wants the mask in hex, no 0x
        where = f"CPUs {','.join(map(str, info['big_cores']))}" if info["cpu_mask"] else "unpinned"
        with progress.stage(f"running on {info.get('model') or client.serial} ({where}, {threads} thread(s), "
                            f"{warmup} warm-up + {runs} timed)"):
            result = client.shell(f"cd {DEVICE_DIR} && {command}", timeout=self.timeout)
        log = f"$ {command}\n{result.output}"
        failure = native.explain_failure(result.returncode, result.output, runner, info)
        if failure:
            raise EdgevitError(failure)
        with progress.stage(f"pulling the profile ({Path(remote_result).name})"), \
                tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(remote_result).name
            try:
                client.pull(remote_result, local)
            except AdbError:
                raise EdgevitError(native.missing_result(remote_result)) from None
            profile_file = local.read_bytes()
        # leave the runner for the next profile
        client.shell(f"rm -f {quote(remote_artifact)} {quote(remote_result)}")
        record = parse_result_line(result.output) or {}  # edgevit's runner says more; executor_runner does not
        return DeviceRun(etdump=profile_file, times_ms=record.get("times_ms", [])[warmup:],
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

    def _install_runner(self, client: AdbClient, native: NativeRunner, progress) -> str:
        if self.runner is not None and Path(self.runner).is_file():
            remote = f"{DEVICE_DIR}/{Path(self.runner).name}"
            with progress.stage(f"pushing the runner {Path(self.runner).name}"):
                client.check_shell(f"mkdir -p {DEVICE_DIR}", "create " + DEVICE_DIR)
                client.push(Path(self.runner), remote)
                client.check_shell(f"chmod 755 {quote(remote)}", "make the runner executable")
            return remote
        remote = str(self.runner) if self.runner is not None else native.default_path
        if not remote.startswith("/"):
            raise EdgevitError(f"--runner {remote}: no such file here. Give the {native.name} binary you built "
                               f"({native.build_doc}), or an absolute path on the device.")
        state = client.check_shell(f"if [ -x {quote(remote)} ]; then echo ok; elif [ -e {quote(remote)} ]; "
                                   "then echo noexec; else echo missing; fi", "look for the runner").strip()
        if state == "missing":
            raise EdgevitError(f"No runner on {client.serial} at {remote}. Build {native.name} for Android "
                               f"({native.build_doc}) and pass it with --runner ./{native.name}; edgevit pushes "
                               "it to the device.")
        if state == "noexec":
            raise EdgevitError(f"The runner {remote} on {client.serial} is not executable. Run "
                               f"`adb -s {client.serial} shell chmod 755 {remote}`, or pass the local binary with "
                               "--runner to push it again.")
        return remote
