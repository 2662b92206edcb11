"""A fake remote PYNQ board (a Kria KV260 by default) on loopback, speaking PYNQ's own remote device gRPC API.

PYNQ 4.0's ``pynq.pl_server.remote_device.RemoteDevice`` (``Overlay(..., device=RemoteDevice(...))``, or
``$PYNQ_REMOTE_DEVICES``) drives a board running the PYNQ.remote image over gRPC, port 7967, service
``remote_device.RemoteDevice``. The server here is built from the installed pynq package's own service
definitions (``pynq.remote.remote_device_pb2_grpc``: pynq 4.0.0 ships no ``.proto`` files, only this code, which
runs on protobuf 7 / grpcio 1.85), so client and fake cannot disagree on the wire format.

What the client does when loading an Overlay, and what this board answers (pynq 4.0.0 remote_device.py):
- connect: ``existsfile``/``readfile`` of ``/proc/version`` (the architecture) and
  ``/proc/device-tree/chosen/pynq_board`` (the board name);
- the ``.hwh`` is parsed on the client and never sent; the ``.bit`` is converted on the client to the ``.bin``
  fpga_manager loads (header dropped, 32-bit words byte-swapped: ``bit2bin``);
- ``readfile`` of ``/sys/class/fpga_manager/fpga0/{state,flags}``; ``set_bitstream_attrs(binfile_name, partial)``;
  ``existsfile /lib/firmware/NAME.bin`` and, if absent, ``writefile`` of it (client stream, 2 MB chunks);
- ``writefile`` ``/sys/class/fpga_manager/fpga0/flags`` (``0`` = full) then ``.../firmware`` (the .bin's name):
  that write programs the PL. Like Linux's fpga_manager it fails with EINVAL when the image has no sync word
  (zynq-fpga.c: "Invalid bitstream, could not find a sync word") or carries another device's IDCODE, and with
  ENOENT when /lib/firmware has no such file; the board's Python server turns the OSError into gRPC UNKNOWN
  ("Exception calling application: ..."), which is what the client sees from a real board.

The board keeps every file written (``files``) and logs every call (``calls``); tests wait on ``wait_for``
(an event set by the server thread when a call arrives), never on sleeps. The Mmio service is served too
(Overlay.download() sets the PL clocks through CRL_APB), over a register file that starts at the PS's reset values
the clock code reads; the buffer and GPIO services answer UNIMPLEMENTED (loading an overlay does not use them).

Standalone: ``python tests/emulators/pynq_board.py --port 7967`` then
``edgevit flash design.bit --device kv260 --host 127.0.0.1``.
"""
from __future__ import annotations

import argparse
import errno
import os
import threading
import warnings
from concurrent import futures

import grpc

with warnings.catch_warnings():   # pynqutils imports pkg_resources (deprecated) on the way in
    warnings.simplefilter("ignore")
    from pynq.remote import mmio_pb2, mmio_pb2_grpc
    from pynq.remote import remote_device_pb2 as pb
    from pynq.remote import remote_device_pb2_grpc as pb_grpc

SYNC_WORD = 0xAA995566          # UG570 "Configuration Packets": the word that starts configuration
IDCODE_WRITE = 0x30018001       # Type 1 packet: write 1 word to the IDCODE register (address 0x0C)
FPGA0 = "/sys/class/fpga_manager/fpga0/"
# The PS registers Overlay.download() touches to set the PL clocks (UG1087 register reference): CRL_APB's IOPLL at
# FBDIV 90, DIV2 (33.333 MHz PS_REF_CLK x 90 / 2 = 1500 MHz, the IOPLL rate of ZynqMP designs) and the PL0..3 dividers.
CRL_APB, CRF_APB = 0xFF5E0000, 0xFD1A0000
PS_RESET_VALUES = {CRL_APB + 0x20: (90 << 8) | (1 << 16)}
KV260_PROC_VERSION = ("Linux version 5.15.0-1027-xilinx-zynqmp (buildd@bos02-arm64-020) "
                      "(aarch64-linux-gnu-gcc-11 (Ubuntu 11.3.0-1ubuntu1~22.04) 11.3.0) #31-Ubuntu SMP\n")


def _words_le(image: bytes) -> list[int]:
    """The .bin fpga_manager gets is the .bit's big-endian words byte-swapped: read it as little-endian words."""
    n = len(image) // 4
    return list(memoryview(image[:n * 4]).cast("I")) if n else []


class FakePynqBoard(pb_grpc.RemoteDeviceServicer):
    """A PYNQ.remote board: ``with FakePynqBoard(idcode=...) as board: board.port``."""

    def __init__(self, idcode: int, board_name: str = "KV260", part: str = "xck26", host: str = "127.0.0.1",
                 port: int = 0):
        self.idcode, self.board_name, self.part = idcode, board_name, part
        self.files: dict[str, bytes] = {
            "/proc/version": KV260_PROC_VERSION.encode(),
            "/proc/device-tree/chosen/pynq_board": board_name.encode() + b"\x00",
            FPGA0 + "state": b"operating\n",
            FPGA0 + "flags": b"0\n",
            FPGA0 + "name": b"Xilinx ZynqMP FPGA Manager\n",
        }
        self.loaded: str | None = None        # the .bin the PL was last programmed with
        self.bitstream_attrs: dict | None = None
        self.calls: list[tuple[str, str]] = []   # (method, path or argument)
        self._cond = threading.Condition()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_RemoteDeviceServicer_to_server(self, self._server)
        self.registers = dict(PS_RESET_VALUES)      # physical address -> 32-bit word (/dev/mem on the board)
        self._maps: dict[str, tuple[int, int]] = {}
        mmio_pb2_grpc.add_MmioServicer_to_server(_Mmio(self), self._server)
        self.host = host
        self.port = self._server.add_insecure_port(f"{host}:{port}")

    # --- lifecycle / test hooks -----------------------------------------------------------------------------------
    def __enter__(self) -> FakePynqBoard:
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop(grace=None)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _log(self, method: str, arg: str) -> None:
        with self._cond:
            self.calls.append((method, arg))
            self._cond.notify_all()

    def wait_for(self, method: str, arg: str | None = None, timeout: float = 30) -> bool:
        """Block until the board has received a ``method`` call (with ``arg``, if given)."""
        def seen():
            return any(m == method and (arg is None or a == arg) for m, a in self.calls)
        with self._cond:
            return self._cond.wait_for(seen, timeout)

    # --- the RemoteDevice service ---------------------------------------------------------------------------------
    def existsfile(self, request, context):
        self._log("existsfile", request.file_path)
        path = request.file_path.rstrip("/")
        exists = path in self.files or any(p.startswith(path + "/") for p in self.files)
        return pb.ExistsFileResponse(exists=exists)

    def readfile(self, request, context):
        self._log("readfile", request.file_path)
        if request.file_path not in self.files:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", request.file_path)
        data = self.files[request.file_path]
        for i in range(0, max(len(data), 1), 1 << 20):
            yield pb.ReadFileResponse(data=data[i:i + (1 << 20)])

    def writefile(self, request_iterator, context):
        path, chunks = None, []
        for req in request_iterator:
            path = path or req.file_path
            chunks.append(req.data)
        data = b"".join(chunks)
        self._log("writefile", path or "")
        if path == FPGA0 + "firmware":
            self._program(data.decode().strip())
        elif path is not None:
            self.files[path] = data
        return pb.WriteFileResponse()

    def set_bitstream_attrs(self, request, context):
        self._log("set_bitstream_attrs", request.binfile_name)
        self.bitstream_attrs = {"binfile_name": request.binfile_name, "partial": request.partial}
        return pb.SetBitstreamAttrsResponse(status=True)

    def shutdown(self, request, context):
        self._log("shutdown", "")
        return pb.ShutdownResponse(status=True)

    # --- the PL ---------------------------------------------------------------------------------------------------
    def _program(self, name: str) -> None:
        """fpga_manager: load /lib/firmware/NAME into the PL, refusing what the device would refuse."""
        image = self.files.get("/lib/firmware/" + name)
        if image is None:
            self.files[FPGA0 + "state"] = b"firmware request error\n"
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/lib/firmware/" + name)
        words = _words_le(image)
        if SYNC_WORD not in words:
            self.files[FPGA0 + "state"] = b"write init error\n"
            raise OSError(errno.EINVAL, "Invalid argument (fpga_manager: Invalid bitstream, could not find a sync "
                                        "word)")
        after = words[words.index(SYNC_WORD):]
        if IDCODE_WRITE in after[:-1]:
            found = after[after.index(IDCODE_WRITE) + 1]
            if found != self.idcode:
                self.files[FPGA0 + "state"] = b"write error\n"
                raise OSError(errno.EINVAL, f"Invalid argument (configuration IDCODE error: bitstream for IDCODE "
                                            f"0x{found:08x}, this {self.part} is 0x{self.idcode:08x})")
        self.loaded = name
        self.files[FPGA0 + "state"] = b"operating\n"


class _Mmio(mmio_pb2_grpc.MmioServicer):
    """/dev/mem on the board: get_mmio maps [base, base+length), read/write 32-bit words inside it."""

    def __init__(self, board: FakePynqBoard):
        self.board = board

    def get_mmio(self, request, context):
        self.board._log("get_mmio", hex(request.base_addr))
        mmio_id = str(len(self.board._maps))
        self.board._maps[mmio_id] = (request.base_addr, request.length)
        return mmio_pb2.GetMmioResponse(status=True, mmio_id=mmio_id)

    def _addr(self, mmio_id: str, offset: int, length: int) -> int:
        base, size = self.board._maps[mmio_id]
        if offset + length > size:
            raise OSError(errno.EFAULT, f"offset {offset:#x}+{length} outside the {size:#x}-byte map at {base:#x}")
        return base + offset

    def read(self, request, context):
        addr = self._addr(request.mmio_id, request.offset, request.length)
        self.board._log("mmio.read", hex(addr))
        words = [self.board.registers.get(addr + 4 * i, 0) for i in range(max(request.length // 4, 1))]
        if request.word_order == "big":
            words.reverse()
        return mmio_pb2.ReadResponse(status=True, data=sum(w << (32 * i) for i, w in enumerate(words)))

    def write(self, request, context):
        addr = self._addr(request.mmio_id, request.offset, len(request.data))
        self.board._log("mmio.write", hex(addr))
        for i in range(0, len(request.data), 4):
            self.board.registers[addr + i] = int.from_bytes(request.data[i:i + 4], "little")
        return mmio_pb2.WriteResponse(status=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7967)
    ap.add_argument("--idcode", type=lambda s: int(s, 0), default=0x04720093,
                    help="the IDCODE this board answers to (stand-in; see the tests)")
    args = ap.parse_args()
    with FakePynqBoard(args.idcode, host=args.host, port=args.port) as board:
        print(f"fake PYNQ board {board.board_name} on {board.address} (pid {os.getpid()})", flush=True)
        board._server.wait_for_termination()


if __name__ == "__main__":
    main()
