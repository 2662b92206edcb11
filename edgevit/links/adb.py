"""The real ``adb`` client, driven through subprocess: list devices, push, pull, shell with an exit code.

Every failure a user can cause (no adb, no device, a wrong serial id, an offline or unauthorized device,
an adb server that does not answer, a push that the device refuses, a command that hangs) becomes an
:class:`EdgevitError` that says what to do. The server is whatever ``adb`` itself uses: ``ANDROID_ADB_SERVER_PORT``
/ ``ADB_SERVER_SOCKET`` in the environment pick another one, as for any adb command.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import EdgevitError

__all__ = ["AdbError", "AdbClient", "ShellResult", "list_devices", "quote"]

# adb 29's `shell` (protocol v1) does not return the command's exit status: we print it after the output.
_RC_MARK = "__edgevit_rc="
_UNREACHABLE = ("cannot connect to daemon", "failed to check server version", "protocol fault",
                "failed to start daemon", "cannot start server")


class AdbError(EdgevitError):
    """adb missing, no or wrong device, or a transfer/command that failed on the device."""


@dataclass
class ShellResult:
    returncode: int
    output: str  # stdout and stderr together: adb's v1 shell merges them on the device


def _adb_path() -> str:
    path = shutil.which("adb")
    if path is None:
        raise AdbError("The adb client is not installed (no `adb` on PATH). Install it with `apt-get install adb` "
                       "(Debian/Ubuntu) or Android's platform-tools, then check `adb devices` lists your phone.")
    return path


def _run(args: list[str], *, timeout: float, what: str) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run([_adb_path(), *args], capture_output=True, text=True, errors="replace",
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AdbError(f"adb took longer than {timeout:.0f} s to {what} and was stopped. Check the USB/Wi-Fi link "
                       "and that the device is awake (`adb devices`); raise the timeout for slow runs.") from None
    message = (done.stdout + done.stderr).strip()
    if done.returncode != 0 and any(s in message for s in _UNREACHABLE):
        raise AdbError(f"The adb server does not answer ({_last_line(message)}). Restart it with "
                       "`adb kill-server && adb start-server`; if ANDROID_ADB_SERVER_PORT or ADB_SERVER_SOCKET is "
                       "set, check it points at a running adb server.")
    return done


def _last_line(text: str) -> str:
    """adb's own complaint in its output (adb 29 prints sync errors on stdout), else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("* ")]
    errors = [line.removeprefix("adb: ") for line in lines if line.startswith(("adb: error:", "error:"))]
    return (errors or lines or ["no message"])[-1]


def list_devices(timeout: float = 30.0) -> list[tuple[str, str]]:
    """(serial, state) for every device the adb server knows: state is device, offline, unauthorized, ..."""
    done = _run(["devices"], timeout=timeout, what="list devices")
    if done.returncode != 0:
        raise AdbError(f"`adb devices` failed ({_last_line(done.stdout + done.stderr)}).")
    found = []
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("List of devices"):
            found.append((parts[0], parts[1]))
    return found


_STATE_HELP = {
    "unauthorized": "unlock the phone and accept the 'Allow USB debugging?' prompt (or `adb kill-server` and "
                    "reconnect to see it again)",
    "offline": "reconnect the cable (or `adb disconnect` then `adb connect HOST:PORT` for Wi-Fi) and wait "
               "until `adb devices` says 'device'",
    "no permissions": "add a udev rule for the phone's vendor id (see `adb devices` output) or run the adb "
                      "server as a user in the plugdev group",
}


class AdbClient:
    """One device over adb. ``serial=None`` takes the only attached device; a HOST:PORT serial is connected."""

    def __init__(self, serial: str | None = None, *, timeout: float = 120.0):
        self.timeout = timeout
        self.serial = self._select(serial)

    def _select(self, serial: str | None) -> str:
        devices = list_devices()
        if serial is not None and serial not in dict(devices) and re.fullmatch(r"[\w.-]+:\d+", serial):
            self._connect(serial)  # a phone on Wi-Fi (or an emulator) reached by address
            devices = list_devices()
        attached = ", ".join(f"{s} ({state})" for s, state in devices) or "none"
        if serial is None:
            if not devices:
                raise AdbError("No Android device is attached: `adb devices` lists none. Plug the phone in with USB "
                               "debugging on (Settings > Developer options), or `adb connect HOST:PORT` for Wi-Fi.")
            if len(devices) > 1:
                raise AdbError(f"Several devices are attached ({attached}); choose one with --serial-id.")
            serial = devices[0][0]
        states = dict(devices)
        if serial not in states:
            raise AdbError(f"No attached device has serial id '{serial}'. Attached: {attached}. "
                           "Pass one of those to --serial-id (see `adb devices`).")
        if states[serial] != "device":
            help_text = _STATE_HELP.get(states[serial], "check `adb devices` until it says 'device'")
            raise AdbError(f"Device {serial} is {states[serial]}: {help_text}.")
        return serial

    def _connect(self, address: str) -> None:
        done = _run(["connect", address], timeout=self.timeout, what=f"connect to {address}")
        text = (done.stdout + done.stderr).strip()
        if done.returncode != 0 or not re.search(r"\b(already )?connected to\b", text):
            raise AdbError(f"adb could not connect to {address} ({_last_line(text)}). Check the address and that "
                           "the device listens for adb there (`adb tcpip 5555` on the phone, same network).")

    def _adb(self, args: list[str], what: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        return _run(["-s", self.serial, *args], timeout=timeout or self.timeout, what=what)

    def shell(self, command: str, *, timeout: float | None = None) -> ShellResult:
        """Run ``command`` in the device's shell; its exit status comes back in a trailing marker line."""
        done = self._adb(["shell", f"{command}; printf '\\n{_RC_MARK}%d\\n' $?"], f"run `{command}`", timeout)
        output, mark, rest = done.stdout.replace("\r\n", "\n").rpartition("\n" + _RC_MARK)
        if not mark:
            raise AdbError(f"The device did not finish `{command}` ({_last_line(done.stdout + done.stderr)}). "
                           f"Is {self.serial} still attached? See `adb devices`.")
        return ShellResult(int(rest.split()[0]), output)

    def check_shell(self, command: str, what: str, *, timeout: float | None = None) -> str:
        result = self.shell(command, timeout=timeout)
        if result.returncode != 0:
            raise AdbError(f"Could not {what} on {self.serial}: `{command}` exited {result.returncode} "
                           f"({_last_line(result.output)}).")
        return result.output

    def push(self, local: Path, remote: str, *, timeout: float | None = None) -> None:
        local = Path(local)
        if not local.is_file():
            raise AdbError(f"Cannot push {local}: no such file here.")
        done = self._adb(["push", str(local), remote], f"push {local.name}", timeout)
        if done.returncode != 0:
            reason = _last_line(done.stdout + done.stderr)
            raise AdbError(f"Pushing {local} to {self.serial}:{remote} failed ({reason}). Check the "
                           "device has free space (`adb shell df /data/local/tmp`) and the folder is writable "
                           "(/data/local/tmp is, for the shell user).")

    def pull(self, remote: str, local: Path, *, timeout: float | None = None) -> None:
        done = self._adb(["pull", remote, str(local)], f"pull {remote}", timeout)
        if done.returncode != 0:
            raise AdbError(f"Pulling {self.serial}:{remote} failed ({_last_line(done.stdout + done.stderr)}).")

    @staticmethod
    def version() -> str:
        """The client's version line, e.g. 'Version 29.0.6-debian'."""
        lines = _run(["version"], timeout=30, what="report its version").stdout.splitlines()
        return next((line.strip() for line in lines if line.startswith("Version")), lines[0] if lines else "unknown")


def quote(*args: str) -> str:
    """A command line for the device's shell (mksh/toybox follow POSIX quoting)."""
    return " ".join(shlex.quote(str(a)) for a in args)
