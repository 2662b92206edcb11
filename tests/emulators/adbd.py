"""An emulated Android device on loopback that speaks the real adb wire protocol (the phone's side of it).

The real ``adb`` client and server talk to it exactly as to a phone on Wi-Fi (``adb connect 127.0.0.1:PORT``):
the transport messages (CNXN/OPEN/OKAY/WRTE/CLSE, 24-byte little-endian header, payload checksum and
magic, maxdata negotiated in CNXN, one WRTE in flight per stream), the ``shell:`` service (raw v1: stdout and
stderr merged, no exit status; shell_v2 is not advertised) and the ``sync:`` service (STAT/LIST/SEND/RECV/
QUIT, v1 stat only: adb 29 sends STA2/LST2 only to a device advertising ``stat_v2``). Spec: AOSP
system/core/adb/{protocol.txt,SYNC.TXT,SERVICES.TXT}.

The device is a scratch folder (``root``). Shell commands run in the real /bin/sh with device paths
(/data, /sdcard, /system, /sys/devices/system/cpu) rewritten into ``root`` and ``root`` stripped from the
output again; sync paths map the same way. ``root`` holds what a phone's shell user can see: ``getprop``,
``/sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq`` for a big.LITTLE layout given to the constructor,
and a toybox-style ``taskset`` that maps the device's CPUs onto this machine's and logs every call.
Only /data/local/tmp and /sdcard are writable over sync, as on a phone.

Standalone: ``python tests/emulators/adbd.py --port 5560 --root /tmp/dev`` then ``adb connect 127.0.0.1:5560``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

A_CNXN, A_AUTH, A_OPEN, A_OKAY, A_CLSE, A_WRTE = (int.from_bytes(c, "little") for c in
                                                  (b"CNXN", b"AUTH", b"OPEN", b"OKAY", b"CLSE", b"WRTE"))
A_VERSION_MIN = 0x01000000            # checksummed payloads
A_VERSION_SKIP_CHECKSUM = 0x01000001  # what current adbd speaks: the checksum field is ignored
HEADER = struct.Struct("<6I")         # command, arg0, arg1, data_length, data_check, magic
SYNC_DATA_MAX = 64 * 1024
PIXEL8_CLUSTERS = ((4, 1_704_000), (4, 2_367_000), (1, 2_910_000))  # (cores, cpuinfo_max_freq kHz), little first
PIXEL8_PROPS = {"ro.product.model": "Pixel 8", "ro.product.device": "shiba", "ro.product.name": "shiba",
                "ro.product.manufacturer": "Google", "ro.product.cpu.abi": "arm64-v8a",
                "ro.product.cpu.abilist": "arm64-v8a", "ro.build.version.release": "14",
                "ro.build.version.sdk": "34", "ro.soc.model": "Tensor G3"}
DEVICE_DIRS = ("/data", "/sdcard", "/system", "/sys/devices/system/cpu")  # what lives in root
WRITABLE = ("/data/local/tmp", "/sdcard")


class ProtocolError(Exception):
    """A message that breaks the protocol: the connection is closed, as protocol.txt requires."""


def checksum(payload: bytes) -> int:
    return sum(payload) & 0xFFFFFFFF


def pack_message(command: int, arg0: int, arg1: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(command, arg0, arg1, len(payload), checksum(payload), command ^ 0xFFFFFFFF) + payload


class Stream:
    """One end of an adb stream: bytes in from WRTE messages, bytes out as WRTE, one in flight until OKAY."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int):
        self.conn, self.local_id, self.remote_id = conn, local_id, remote_id
        self._cond = threading.Condition()
        self._inbox = bytearray()
        self._can_write = True  # "An OPEN message also implies a READY message sent at the same time."
        self.closed = False
        self.closed_by_host = False

    # -- called by the connection's reader
    def feed(self, data: bytes) -> None:
        with self._cond:
            self._inbox += data
            self._cond.notify_all()

    def ready(self) -> None:
        with self._cond:
            self._can_write = True
            self._cond.notify_all()

    def remote_closed(self) -> None:
        with self._cond:
            self.closed = self.closed_by_host = True
            self._cond.notify_all()

    # -- called by services
    def read_some(self) -> bytes:
        with self._cond:
            self._cond.wait_for(lambda: self._inbox or self.closed)
            data, self._inbox = bytes(self._inbox), bytearray()
            return data

    def read_exactly(self, n: int) -> bytes:
        with self._cond:
            self._cond.wait_for(lambda: len(self._inbox) >= n or self.closed)
            if len(self._inbox) < n:
                raise EOFError("stream closed")
            data, self._inbox = bytes(self._inbox[:n]), self._inbox[n:]
            return data

    def write(self, data: bytes) -> None:
        for start in range(0, len(data), self.conn.maxdata):
            with self._cond:
                self._cond.wait_for(lambda: self._can_write or self.closed)
                if self.closed:
                    raise BrokenPipeError("stream closed by the host")
                self._can_write = False
            self.conn.send(A_WRTE, self.local_id, self.remote_id, data[start:start + self.conn.maxdata])

    def close(self) -> None:
        with self._cond:
            if self.closed:
                return
            self.closed = True
            self._cond.notify_all()
        self.conn.forget(self)
        self.conn.send(A_CLSE, self.local_id, self.remote_id)


class _Connection:
    """One transport (one TCP connection from an adb server): the message loop and its streams."""

    def __init__(self, device: EmulatedAdbDevice, sock: socket.socket):
        self.device, self.sock = device, sock
        self.version: int | None = None   # negotiated in CNXN
        self.maxdata = 4096                # until the peer's CNXN says more (protocol.txt)
        self.streams: dict[int, Stream] = {}
        self._send_lock = threading.Lock()

    def send(self, command: int, arg0: int, arg1: int, payload: bytes = b"") -> None:
        with self._send_lock:
            try:
                self.sock.sendall(pack_message(command, arg0, arg1, payload))
            except OSError:
                pass  # the reader notices the dead socket and closes everything

    def hang_up(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def forget(self, stream: Stream) -> None:
        self.streams.pop(stream.local_id, None)

    def _read_exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def _receive(self) -> tuple[int, int, int, bytes]:
        command, arg0, arg1, length, check, magic = HEADER.unpack(self._read_exactly(HEADER.size))
        if magic != command ^ 0xFFFFFFFF:
            raise ProtocolError(f"bad magic {magic:#x} for command {command:#x}")
        if length > self.device.maxdata:
            raise ProtocolError(f"payload of {length} bytes exceeds maxdata {self.device.maxdata}")
        payload = self._read_exactly(length)
        if self.version is not None and self.version < A_VERSION_SKIP_CHECKSUM and checksum(payload) != check:
            raise ProtocolError("payload checksum mismatch")
        return command, arg0, arg1, payload

    def serve(self) -> None:
        try:
            while True:
                command, arg0, arg1, payload = self._receive()
                if command == A_CNXN:
                    self._connect(arg0, arg1)
                elif self.version is None:
                    continue  # "Any messages received before a CONNECT message MUST be ignored."
                elif command == A_OPEN:
                    self._open(arg0, payload.rstrip(b"\0").decode("utf-8", "replace"))
                elif command == A_OKAY:
                    if arg1 in self.streams:
                        self.streams[arg1].ready()
                elif command == A_WRTE:
                    if arg1 in self.streams:
                        self.streams[arg1].feed(payload)
                        self.send(A_OKAY, arg1, arg0)
                elif command == A_CLSE:
                    stream = self.streams.pop(arg1, None)
                    if stream is not None:
                        stream.remote_closed()
                elif command == A_AUTH:
                    continue  # we never send an AUTH token, so there is nothing to answer
                else:
                    raise ProtocolError(f"unknown command {command:#x}")
        except ProtocolError as e:
            self.device.log_event({"protocol_error": str(e)})
        except (EOFError, OSError):
            pass
        finally:
            for stream in list(self.streams.values()):
                stream.remote_closed()
            self.streams.clear()
            self.sock.close()
            self.device._connections.discard(self)

    def _connect(self, version: int, maxdata: int) -> None:
        if version < A_VERSION_MIN:
            raise ProtocolError(f"unknown protocol version {version:#x}")
        self.version = min(version, self.device.version)
        self.maxdata = min(maxdata, self.device.maxdata)
        self.send(A_CNXN, self.device.version, self.device.maxdata, self.device.banner().encode())

    def _open(self, remote_id: int, destination: str) -> None:
        service = self.device.service_for(destination)
        if service is None:
            self.send(A_CLSE, 0, remote_id)  # a failed OPEN
            return
        local_id = next(self.device.ids)
        stream = Stream(self, local_id, remote_id)
        self.streams[local_id] = stream
        self.send(A_OKAY, local_id, remote_id)
        threading.Thread(target=service, args=(stream,), daemon=True, name=f"adbd-{destination[:20]}").start()


class EmulatedAdbDevice:
    """A phone on 127.0.0.1:``port`` whose storage is ``root``. Use as a context manager."""

    def __init__(self, root: str | Path, *, port: int = 0, serial: str = "EDGEVIT0001",
                 props: dict | None = None, clusters=PIXEL8_CLUSTERS, version: int = A_VERSION_SKIP_CHECKSUM,
                 maxdata: int = 256 * 1024, features: tuple[str, ...] = ("fixed_push_mkdir",)):
        self.root = Path(root).resolve()
        self.port, self.serial, self.version, self.maxdata, self.features = port, serial, version, maxdata, features
        self.props = {**PIXEL8_PROPS, "ro.serialno": serial, **(props or {})}
        self.clusters = tuple(clusters)
        self.ids = itertools.count(1)
        self.commands: list[str] = []     # every shell command as the device received it
        self._listener: socket.socket | None = None
        self._procs: set[subprocess.Popen] = set()
        self._connections: set[_Connection] = set()
        self._rewrite = re.compile(r"(?<![\w.~$/-])(" + "|".join(map(re.escape, DEVICE_DIRS)) + r")(?![\w.-])")

    # ---------------------------------------------------------------- lifecycle
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def state_dir(self) -> Path:
        """The emulator's own notes (taskset log, events); not visible to the device's shell as a device path."""
        return self.root / ".adbd"

    def start(self) -> EmulatedAdbDevice:
        self._populate()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, daemon=True, name="adbd-accept").start()
        return self

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for conn in list(self._connections):
            conn.hang_up()  # the cable is pulled: the adb server sees the device go offline
        for proc in list(self._procs):
            _kill_group(proc)

    def __enter__(self) -> EmulatedAdbDevice:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        listener = self._listener
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # stopped
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            self._connections.add(conn)
            threading.Thread(target=conn.serve, daemon=True, name="adbd-conn").start()

    # ---------------------------------------------------------------- what the device is
    def banner(self) -> str:
        keys = ("ro.product.name", "ro.product.model", "ro.product.device")
        return "device::" + "".join(f"{k}={self.props[k]};" for k in keys) + "features=" + ",".join(self.features)

    def cpu_max_khz(self) -> list[int]:
        return [khz for count, khz in self.clusters for _ in range(count)]

    def running(self) -> int:
        """Shell commands still running on the device."""
        return sum(1 for proc in list(self._procs) if proc.poll() is None)

    def taskset_calls(self) -> list[dict]:
        log = self.state_dir / "taskset.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def log_event(self, event: dict) -> None:
        with open(self.state_dir / "events.log", "a") as f:
            f.write(json.dumps(event) + "\n")

    def _populate(self) -> None:
        for d in ("data/local/tmp", "sdcard", "system/bin", ".adbd"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "system/build.prop").write_text("".join(f"{k}={v}\n" for k, v in self.props.items()))
        cpu = self.root / "sys/devices/system/cpu"
        freqs = self.cpu_max_khz()
        for i, khz in enumerate(freqs):
            (cpu / f"cpu{i}/cpufreq").mkdir(parents=True, exist_ok=True)
            (cpu / f"cpu{i}/cpufreq/cpuinfo_max_freq").write_text(f"{khz}\n")
        for name in ("possible", "present", "online"):
            (cpu / name).write_text(f"0-{len(freqs) - 1}\n")
        sh = self.root / "system/bin/sh"
        if not sh.exists():
            sh.symlink_to("/bin/sh")
        _write_exe(self.root / "system/bin/getprop", _GETPROP.replace("@PROPS@", str(self.root / "system/build.prop")))
        _write_exe(self.root / "system/bin/taskset", _TASKSET.replace("@PYTHON@", sys.executable)
                   .replace("@CPUS@", str(len(freqs))).replace("@LOG@", str(self.state_dir / "taskset.log")))

    # ---------------------------------------------------------------- paths
    def host_path(self, device_path: str) -> Path:
        """Where a device path lives in ``root`` (``..`` cannot climb out)."""
        return self.root / _normalize(device_path).lstrip("/")

    def to_host_text(self, command: str) -> str:
        return self._rewrite.sub(lambda m: str(self.root) + m.group(1), command)

    def to_device_bytes(self, data: bytes) -> bytes:
        return data.replace(str(self.root).encode(), b"")

    @staticmethod
    def _writable(device_path: str) -> bool:
        path = _normalize(device_path)
        return any(path == w or path.startswith(w + "/") for w in WRITABLE)

    # ---------------------------------------------------------------- services
    def service_for(self, destination: str):
        if destination.startswith("shell:"):
            return lambda stream: self._shell(stream, destination[len("shell:"):])
        if destination.startswith("exec:"):
            return lambda stream: self._shell(stream, destination[len("exec:"):])
        if destination == "sync:":
            return self._sync
        return None  # shell,v2 / reboot / tcpip / ...: this device does not offer them

    def _shell(self, stream: Stream, command: str) -> None:
        self.commands.append(command)
        env = {**os.environ, "PATH": f"{self.root}/system/bin:{os.environ.get('PATH', '/usr/bin:/bin')}",
               "HOME": str(self.root / "data/local/tmp"), "TMPDIR": str(self.root / "data/local/tmp"),
               "ANDROID_DATA": str(self.root / "data")}
        argv = ["/bin/sh", "-c", self.to_host_text(command)] if command else ["/bin/sh"]
        proc = subprocess.Popen(argv, cwd=self.root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self._procs.add(proc)

        def pump_stdin() -> None:
            while data := stream.read_some():
                try:
                    proc.stdin.write(data)
                    proc.stdin.flush()
                except OSError:
                    break
            try:
                proc.stdin.close()
            except OSError:
                pass
            if stream.closed_by_host and proc.poll() is None:
                _kill_group(proc)  # the host went away (adb killed, timeout): stop the command, like adbd

        threading.Thread(target=pump_stdin, daemon=True).start()
        try:
            while chunk := os.read(proc.stdout.fileno(), stream.conn.maxdata):
                stream.write(self.to_device_bytes(chunk))
        except BrokenPipeError:
            _kill_group(proc)
        proc.wait()
        self._procs.discard(proc)
        proc.stdout.close()
        stream.close()

    def _sync(self, stream: Stream) -> None:
        try:
            while True:
                head = stream.read_exactly(8)
                ident, length = head[:4], int.from_bytes(head[4:], "little")
                if ident == b"QUIT":
                    break
                if ident not in (b"STAT", b"LIST", b"SEND", b"RECV") or length > 1024:
                    self._sync_fail(stream, f"invalid sync request {ident!r} ({length} bytes)")
                    break
                path = stream.read_exactly(length).decode("utf-8", "replace")
                {b"STAT": self._sync_stat, b"LIST": self._sync_list, b"SEND": self._sync_send,
                 b"RECV": self._sync_recv}[ident](stream, path)
        except (EOFError, BrokenPipeError):
            pass
        stream.close()

    @staticmethod
    def _sync_fail(stream: Stream, message: str) -> None:
        data = message.encode()
        stream.write(b"FAIL" + struct.pack("<I", len(data)) + data)

    def _sync_stat(self, stream: Stream, path: str) -> None:
        try:
            st = os.lstat(self.host_path(path))
            fields = (st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime))
        except OSError:
            fields = (0, 0, 0)  # v1 cannot say why; all zeros means "does not exist"
        stream.write(b"STAT" + struct.pack("<3I", *fields))

    def _sync_list(self, stream: Stream, path: str) -> None:
        folder = self.host_path(path)
        try:
            names = [".", ".."] + sorted(os.listdir(folder))
        except OSError:
            names = []
        out = bytearray()
        for name in names:
            try:
                st = os.lstat(folder / name)
            except OSError:
                continue
            raw = name.encode()
            out += b"DENT" + struct.pack("<4I", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(raw)) + raw
        stream.write(bytes(out) + b"DONE" + bytes(16))  # DONE has the dent's size

    def _sync_send(self, stream: Stream, path_and_mode: str) -> None:
        path, _, mode_text = path_and_mode.rpartition(",")
        target = self.host_path(path)
        error, tmp = None, None
        if not self._writable(path):
            reason = "Read-only file system" if _normalize(path).startswith("/system") else "Permission denied"
            error = f"couldn't create file: {reason}"
        else:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".adbd-push-")
                os.close(fd)
            except OSError as e:
                error = f"secure_mkdirs() failed: {e.strerror}"
        mtime = 0
        with open(tmp or os.devnull, "wb") as f:
            while True:  # read the whole transfer even after an error, so the stream stays in step
                head = stream.read_exactly(8)
                ident, length = head[:4], int.from_bytes(head[4:], "little")
                if ident == b"DONE":
                    mtime = length
                    break
                if ident != b"DATA" or length > SYNC_DATA_MAX:
                    error = error or f"invalid data message {ident!r} ({length} bytes)"
                    if ident != b"DATA":
                        break
                f.write(stream.read_exactly(length))
        if error is None:
            try:
                os.chmod(tmp, int(mode_text or "0644") & 0o777)
                os.utime(tmp, (mtime, mtime))
                os.replace(tmp, target)
                tmp = None
            except (OSError, ValueError) as e:
                error = f"couldn't write file: {getattr(e, 'strerror', None) or e}"
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if error:
            self._sync_fail(stream, error)
        else:
            stream.write(b"OKAY" + bytes(4))

    def _sync_recv(self, stream: Stream, path: str) -> None:
        try:
            f = open(self.host_path(path), "rb")
        except OSError as e:
            self._sync_fail(stream, e.strerror or str(e))
            return
        with f:
            while chunk := f.read(SYNC_DATA_MAX):
                stream.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        stream.write(b"DONE" + bytes(4))


def _normalize(device_path: str) -> str:
    return os.path.normpath("/" + device_path.lstrip("/"))  # "//x" would survive normpath


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


_GETPROP = """#!/bin/sh
# getprop [NAME [DEFAULT]]: this emulated device's system properties (build.prop format: name=value).
if [ $# -eq 0 ]; then
  sed -e 's/^\\([^=]*\\)=\\(.*\\)$/[\\1]: [\\2]/' "@PROPS@"
else
  awk -v k="$1" -v d="$2" 'index($0, k "=") == 1 { print substr($0, length(k) + 2); found = 1; exit }
                           END { if (!found) print d }' "@PROPS@"
fi
"""

_TASKSET = '''#!@PYTHON@
"""taskset [-a] MASK COMMAND [ARGS...] (toybox's syntax, MASK in hex) on the emulated device.

The device has @CPUS@ CPUs; device CPU i runs on this machine's allowed CPU number i modulo their count, so a
big-core mask really narrows the process. Every call is logged (JSON lines) for tests to check.
"""
import json, os, sys

args = sys.argv[1:]
while args and args[0].startswith("-"):
    if "p" in args.pop(0):
        sys.exit("taskset: -p is not emulated")
if len(args) < 2:
    sys.exit("usage: taskset [-a] MASK COMMAND [ARGS...]")
try:
    mask = int(args[0], 16)
except ValueError:
    sys.exit(f"taskset: bad mask '{args[0]}'")
cpus = [i for i in range(@CPUS@) if mask >> i & 1]
if not cpus:
    sys.exit("taskset: sched_setaffinity: Invalid argument")
host = sorted(os.sched_getaffinity(0))
mapped = sorted({host[i % len(host)] for i in cpus})
with open("@LOG@", "a") as log:
    log.write(json.dumps({"mask": hex(mask), "cpus": cpus, "host_cpus": mapped, "argv": args[1:]}) + "\\n")
os.sched_setaffinity(0, mapped)
try:
    os.execvp(args[1], args[1:])
except OSError as e:
    print(f"taskset: {args[1]}: {e.strerror}", file=sys.stderr)
    sys.exit(127 if isinstance(e, FileNotFoundError) else 126)  # toybox's xexec codes
'''


def _parse_clusters(text: str) -> tuple[tuple[int, int], ...]:
    """``4x1704000,4x2367000,1x2910000`` -> ((4, 1704000), ...): cores x cpuinfo_max_freq (kHz), little first."""
    return tuple((int(n), int(khz)) for n, khz in (part.split("x") for part in text.split(",")))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="An emulated Android device for the real adb client.")
    p.add_argument("--port", type=int, default=5560)
    p.add_argument("--root", required=True, help="scratch folder that stands for the device's storage")
    p.add_argument("--serial", default="EDGEVIT0001")
    p.add_argument("--model", default=PIXEL8_PROPS["ro.product.model"], help="ro.product.model")
    p.add_argument("--clusters", default="4x1704000,4x2367000,1x2910000", help="cores x max kHz, little first")
    p.add_argument("--checksummed", action="store_true", help="speak protocol 0x01000000 (payload checksums on)")
    args = p.parse_args(argv)
    device = EmulatedAdbDevice(args.root, port=args.port, serial=args.serial, props={"ro.product.model": args.model},
                               clusters=_parse_clusters(args.clusters),
                               version=A_VERSION_MIN if args.checksummed else A_VERSION_SKIP_CHECKSUM).start()
    print(f"emulated device {args.model!r} at {device.address} (root {device.root}); "
          f"run: adb connect {device.address}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        device.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
