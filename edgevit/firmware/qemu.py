"""An emulated board: ``qemu-system-arm`` running an agent ELF, its UART0 on a TCP socket.

QEMU runs with ``-icount shift=0``: the virtual clock advances exactly 1 ns per guest instruction, so the
board's timer (SysTick at the machine's SYSCLK) measures instructions (firmware/boards/cmsdk/cmsdk_board.c has
the derivation). The UART is ``-serial tcp:127.0.0.1:PORT,server=on,wait=on``: QEMU prints that it waits for a
connection (the event we wait on: no sleeps), the guest starts once we connect, and we send HELLO until INFO
comes back. Later clients (``socket://127.0.0.1:PORT`` for pyserial) reconnect to the same listening socket.
"""
from __future__ import annotations

import binascii
import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import time
import zlib
from pathlib import Path

from .. import serial_protocol as sp
from ..errors import EdgevitError
from .build import BOARDS

__all__ = ["QemuBoard", "QemuError", "free_port", "probe_hello"]


class QemuError(EdgevitError):
    """QEMU is missing, did not start, or the firmware on it does not answer."""


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's choice); QemuBoard retries if it is taken since."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _frame(msg: sp.Msg, seq: int, payload: bytes) -> bytes:
    header = sp.HEADER_LAYOUT.pack(sp.SOF, sp.MIN_VERSION, msg, seq, len(payload))
    header += struct.pack("<H", binascii.crc_hqx(header, 0xFFFF))
    return header + payload + struct.pack("<I", zlib.crc32(header + payload))


def probe_hello(sock: socket.socket, *, timeout: float = 30.0, retry_s: float = 1.0) -> dict:
    """Send HELLO on a connected socket until an INFO answers (re-sent unchanged, as the protocol's host does);
    returns INFO's JSON. A minimal host: edgevit.links sits above this layer."""
    seq = int.from_bytes(os.urandom(2), "little")
    hello = _frame(sp.Msg.HELLO, seq, sp.LAYOUTS[sp.Msg.HELLO].pack(sp.MIN_VERSION, sp.PROTOCOL_VERSION, 4096))
    deadline, buf = time.monotonic() + timeout, bytearray()
    while time.monotonic() < deadline:
        sock.sendall(hello)
        resend_at = time.monotonic() + retry_s
        while time.monotonic() < resend_at:
            ready, _, _ = select.select([sock], [], [], max(0.0, resend_at - time.monotonic()))
            if not ready:
                break
            data = sock.recv(4096)
            if not data:
                raise QemuError("The emulated board's UART closed the connection during HELLO.")
            buf += data
            start = buf.find(sp.SOF)
            while start >= 0 and len(buf) - start >= sp.HEADER_SIZE:
                _, _, type_, got_seq, length = sp.HEADER_LAYOUT.unpack_from(buf, start)
                end = start + sp.HEADER_SIZE + length + sp.TRAILER_SIZE
                if len(buf) < end:
                    break
                body = bytes(buf[start + sp.HEADER_SIZE:end - sp.TRAILER_SIZE])
                ok = struct.unpack_from("<I", buf, end - 4)[0] == zlib.crc32(bytes(buf[start:end - 4]))
                if ok and got_seq == seq and type_ == sp.Msg.INFO:
                    return json.loads(body[sp.LAYOUTS[sp.Msg.INFO].size:].decode())
                if ok and got_seq == seq and type_ == sp.Msg.ERROR:
                    raise QemuError(f"The emulated board refused HELLO: {body[2:].decode(errors='replace')}")
                del buf[:start + 2]
                start = buf.find(sp.SOF)
    raise QemuError(f"The emulated board did not answer HELLO within {timeout:.0f} s; the firmware may have "
                    "crashed at boot (run QEMU by hand with -d guest_errors to see).")


class QemuBoard:
    """``with QemuBoard(elf, "mps2-an386") as board: board.port`` -> ``socket://127.0.0.1:PORT``, HELLO answered."""

    def __init__(self, elf: str | Path, board: str, *, boot_timeout: float = 60.0):
        if board not in BOARDS or BOARDS[board].machine is None:
            raise QemuError(f"'{board}' is not an emulated board; choose one of "
                            f"{', '.join(b for b, s in BOARDS.items() if s.machine)}.")
        self.elf, self.board, self.boot_timeout = Path(elf), BOARDS[board], boot_timeout
        if not self.elf.is_file():
            raise QemuError(f"No firmware at {self.elf}; build it first (edgevit.firmware.build_agent).")
        self.qemu = shutil.which("qemu-system-arm")
        if self.qemu is None:
            raise QemuError("qemu-system-arm is not on PATH; install it (Debian/Ubuntu: "
                            "`sudo apt-get install qemu-system-arm`).")
        self.proc: subprocess.Popen | None = None
        self.tcp_port = 0
        self.info: dict = {}

    @property
    def port(self) -> str:
        return f"socket://127.0.0.1:{self.tcp_port}"

    def command(self, tcp_port: int) -> list[str]:
        return [self.qemu, "-M", self.board.machine, "-nographic", "-monitor", "none", "-icount", "shift=0",
                "-kernel", str(self.elf), "-serial", f"tcp:127.0.0.1:{tcp_port},server=on,wait=on"]

    def start(self) -> QemuBoard:
        for _ in range(5):      # a port taken between free_port() and QEMU's bind: pick another
            self.tcp_port = free_port()
            self.proc = subprocess.Popen(self.command(self.tcp_port), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
            line = self._wait_for_listening()
            if line is not None:
                break
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            self.proc.wait()
            if "Address already in use" not in err:
                raise QemuError(f"QEMU ({self.board.machine}) did not start: {err.strip()[-600:]}")
        else:
            raise QemuError("QEMU could not bind a free TCP port for the UART after 5 tries.")
        try:
            with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=self.boot_timeout) as sock:
                self.info = probe_hello(sock, timeout=self.boot_timeout)
        except (OSError, QemuError):
            self.stop()
            raise
        return self

    def _wait_for_listening(self) -> str | None:
        """QEMU's own "waiting for connection" line on stderr; None if it exited first."""
        buf = b""
        deadline = time.monotonic() + self.boot_timeout
        fd = self.proc.stderr.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            buf += chunk
            if re.search(rb"waiting for connection", buf):
                return buf.decode(errors="replace")
        self.stop()
        raise QemuError(f"QEMU did not open its UART socket within {self.boot_timeout:.0f} s.")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()

    def __enter__(self) -> QemuBoard:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
