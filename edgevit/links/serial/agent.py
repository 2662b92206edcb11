"""The board end of the serial protocol (``edgevit agent``): answers the host, stores uploads, runs them.

The agent only ever answers; it never starts an exchange. Uploads go to ``WORKDIR/uploads/SHA256.part``
and, once their sha256 checks out, to ``WORKDIR/artifacts/SHA256.pte|.tflite``, so a host that reconnects
(or an agent that restarted) resumes where the bytes stop. A RUN executes the artifact in the real
runtime exactly as ``edgevit profile --via local`` does on this machine (the artifact's backend's
``profile_here``: for a .pte a fresh process with ETDump on), while this loop keeps answering and sends
a BUSY heartbeat every second. The last answer is cached so a re-sent request is answered, not redone.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import serial

from ...backends import Backend, get_backend, list_backends
from ...devices import host_facts
from ...errors import EdgevitError
from .frames import MIN_MAX_PAYLOAD, Damaged, Frame, FrameDecoder, crc32, encode
from .messages import (
    MIN_VERSION,
    PROTOCOL_VERSION,
    ArtifactFormat,
    ErrorCode,
    FileId,
    Msg,
    ProtocolError,
    pack,
    pack_json,
    unpack,
)
from .port import PortError

__all__ = ["Agent", "agent_details"]


class _Refused(Exception):
    """A request the agent answers with ERROR (code + text)."""

    def __init__(self, code: ErrorCode, text: str):
        super().__init__(text)
        self.code = code


@dataclass
class _Upload:
    sha256: str
    size: int
    fmt: ArtifactFormat
    path: Path          # the .part file
    have: int


@dataclass
class _Run:
    key: tuple                      # (seq, type, payload CRC) of the RUN being served
    seq: int
    started: float
    last_beat: float
    thread: threading.Thread | None = None
    outcome: object = None          # a DeviceRun, or a _Refused


def _runnable() -> dict[ArtifactFormat, Backend]:
    """The protocol's artifact formats whose backend can run here (its runtime is installed)."""
    found = {}
    for name in list_backends():
        backend = get_backend(name)
        if backend.wire_format in ArtifactFormat._value2member_map_ and backend.available():
            found[ArtifactFormat(backend.wire_format)] = backend
    return found


def _versions() -> dict:
    found = {}
    for package in ("edgevit", *(p for b in _runnable().values() for p in b.runtime_packages)):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def _formats() -> list[str]:
    """The artifact suffixes whose runtime is installed here."""
    return [fmt.suffix for fmt in sorted(_runnable())]


def agent_details(device: str) -> dict:
    """INFO's JSON: who this agent is and what it can run."""
    runtimes = _versions()
    return {"device": device, "agent": f"edgevit {runtimes.pop('edgevit', '?')}", "runtime": runtimes,
            "formats": _formats(), "os": f"{platform.system()} {platform.release()}", "machine": platform.machine(),
            "hostname": platform.node()}


class Agent:
    """Serves one serial line until told to stop (``once``: after the first BYE)."""

    def __init__(self, ser: serial.Serial, *, device: str, workdir: Path, max_payload: int = 4096,
                 heartbeat_s: float = 1.0, run_timeout_s: float = 900.0, log: Callable[[str], None] = print):
        if not MIN_MAX_PAYLOAD <= max_payload <= 0xFFFF:
            raise EdgevitError(f"--max-payload must be between {MIN_MAX_PAYLOAD} and 65535 (got {max_payload}).")
        self.ser, self.device, self.log = ser, device, log
        self.workdir, self.max_payload = Path(workdir), max_payload
        self.heartbeat_s, self.run_timeout_s = heartbeat_s, run_timeout_s
        self.version, self.host_max_payload = MIN_VERSION, MIN_MAX_PAYLOAD
        self._decoder = FrameDecoder(max_payload)
        self._last_key: tuple | None = None
        self._last_answers: list[bytes] = []
        self._upload: _Upload | None = None
        self._run: _Run | None = None
        self._files: dict[int, bytes] = {}
        self._threads = 1
        self._bye = False
        for sub in ("uploads", "artifacts"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)

    # -- the loop ---------------------------------------------------------------------------------------
    def serve(self, once: bool = False) -> None:
        while not (once and self._bye and self._run is None):
            try:
                data = self.ser.read(self.ser.in_waiting or 1)  # waits at most the port's 50 ms timeout
            except (serial.SerialException, OSError) as e:
                raise PortError(f"The serial line {self.ser.port} failed: {e}. Restart `edgevit agent` once the "
                                "line is back.") from None
            for item in self._decoder.feed(data) if data else ():
                self._handle(item)
            self._tick_run()

    def _send(self, msg: Msg, seq: int, payload: bytes = b"") -> bytes:
        raw = encode(Frame(msg, seq, payload, self.version))
        self._write(raw)
        return raw

    def _write(self, raw: bytes) -> None:
        try:
            self.ser.write(raw)
        except serial.SerialTimeoutException:
            self.log("a write stalled and was dropped (is anyone on the other end?)")
        except (serial.SerialException, OSError) as e:
            raise PortError(f"The serial line {self.ser.port} failed: {e}.") from None

    def _handle(self, item: Frame | Damaged) -> None:
        if isinstance(item, Damaged):
            self.log(f"frame seq {item.seq} arrived damaged ({item.reason.name}); NAK")
            self._send(Msg.NAK, item.seq, pack(Msg.NAK, item.reason))
            return
        key = (item.seq, item.type, crc32(item.payload))
        if self._run is not None and (key == self._run.key or item.type == Msg.PING):
            self._beat(item.seq)  # the host re-sent its RUN, or asks if we are there: still running
            return
        if key == self._last_key and item.type != Msg.HELLO:
            for raw in self._last_answers:  # a re-sent request: same answer, not done twice
                self._write(raw)
            return
        try:
            if self._run is not None:
                raise _Refused(ErrorCode.BUSY, f"a run is in progress ({time.monotonic() - self._run.started:.0f} s); "
                                               "wait for its RESULT")
            if item.type != Msg.HELLO and item.version != self.version:
                raise _Refused(ErrorCode.UNSUPPORTED_VERSION, f"frame in version {item.version}; this session "
                                                              f"agreed on version {self.version} (send HELLO)")
            handler = _HANDLERS.get(item.type)
            if handler is None:
                raise _Refused(ErrorCode.UNKNOWN_TYPE, f"this agent does not take message type 0x{item.type:02x}")
            answer = handler(self, item)
        except _Refused as e:
            answer = (Msg.ERROR, pack(Msg.ERROR, e.code, tail=str(e).encode()))
            self.log(f"refused {_name(item.type)}: {e} ({e.code.name})")
        except ProtocolError as e:
            answer = (Msg.ERROR, pack(Msg.ERROR, e.code, tail=str(e).encode()))
            self.log(f"bad {_name(item.type)}: {e}")
        except OSError as e:
            answer = (Msg.ERROR, pack(Msg.ERROR, ErrorCode.STORAGE, tail=f"storage: {e}".encode()))
            self.log(f"storage error on {_name(item.type)}: {e}")
        if answer is None:
            return  # RUN: answered by heartbeats, then RESULT
        self._last_key, self._last_answers = key, [self._send(answer[0], item.seq, answer[1])]

    # -- requests ---------------------------------------------------------------------------------------
    def _hello(self, frame: Frame):
        (low, high, host_max), _ = unpack(Msg.HELLO, frame.payload)
        chosen = min(high, PROTOCOL_VERSION)
        if chosen < max(low, MIN_VERSION):
            raise _Refused(ErrorCode.UNSUPPORTED_VERSION, f"this agent speaks protocol versions {MIN_VERSION}-"
                                                          f"{PROTOCOL_VERSION}; the host offered {low}-{high}")
        if host_max < MIN_MAX_PAYLOAD:
            raise _Refused(ErrorCode.BAD_PAYLOAD, f"host max payload {host_max} is below {MIN_MAX_PAYLOAD}")
        self.version, self.host_max_payload, self._bye = chosen, host_max, False
        self._last_key, self._last_answers = None, []
        self.log(f"HELLO: protocol {chosen}, host takes {host_max}-byte payloads")
        return Msg.INFO, pack(Msg.INFO, chosen, self.max_payload, tail=pack_json(agent_details(self.device)))

    def _ping(self, frame: Frame):
        return Msg.ACK, pack(Msg.ACK, 0)

    def _bye_(self, frame: Frame):
        self._bye = True
        self.log("BYE: session over")
        return Msg.ACK, pack(Msg.ACK, 0)

    def _artifact(self, sha: str) -> Path | None:
        for fmt in ArtifactFormat:
            path = self.workdir / "artifacts" / f"{sha}{fmt.suffix}"
            if path.exists():
                return path
        return None

    def _upload_begin(self, frame: Frame):
        (size, fmt, digest), _ = unpack(Msg.UPLOAD_BEGIN, frame.payload)
        if fmt not in ArtifactFormat._value2member_map_ or ArtifactFormat(fmt).suffix not in _formats():
            raise _Refused(ErrorCode.UNSUPPORTED_FORMAT, f"artifact format {fmt} cannot run here (runtimes: "
                                                         f"{_versions()})")
        sha, fmt = digest.hex(), ArtifactFormat(fmt)
        if self._artifact(sha) is not None:
            self._upload = _Upload(sha, size, fmt, self.workdir / "uploads" / f"{sha}.part", size)
            self.log(f"upload {sha[:12]}: already here ({size} bytes)")
            return Msg.ACK, pack(Msg.ACK, size)
        part = self.workdir / "uploads" / f"{sha}.part"
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            have = 0
        free = shutil.disk_usage(self.workdir).free
        if size - have > free:
            raise _Refused(ErrorCode.TOO_LARGE, f"{size - have} more bytes do not fit in {self.workdir} "
                                                f"({free} bytes free)")
        with open(part, "r+b" if part.exists() else "wb") as f:
            f.truncate(have)
        self._upload = _Upload(sha, size, fmt, part, have)
        self.log(f"upload {sha[:12]}: {size} bytes" + (f", resuming at {have}" if have else ""))
        return Msg.ACK, pack(Msg.ACK, have)

    def _upload_data(self, frame: Frame):
        (offset,), data = unpack(Msg.UPLOAD_DATA, frame.payload)
        up = self._upload
        if up is None or not up.path.exists():
            raise _Refused(ErrorCode.BAD_OFFSET, "no upload in progress; send UPLOAD_BEGIN first")
        if offset > up.have or offset + len(data) > up.size:
            raise _Refused(ErrorCode.BAD_OFFSET, f"chunk at {offset}+{len(data)} does not fit: holding {up.have} "
                                                 f"of {up.size} bytes; send from {up.have}")
        with open(up.path, "r+b") as f:
            f.seek(offset)
            f.write(data)
        up.have = max(up.have, offset + len(data))
        return Msg.ACK, pack(Msg.ACK, up.have)

    def _upload_end(self, frame: Frame):
        unpack(Msg.UPLOAD_END, frame.payload)
        up = self._upload
        if up is None:
            raise _Refused(ErrorCode.BAD_OFFSET, "no upload in progress; send UPLOAD_BEGIN first")
        if self._artifact(up.sha256) is None:
            if up.have != up.size:
                raise _Refused(ErrorCode.BAD_OFFSET, f"upload incomplete: holding {up.have} of {up.size} bytes")
            digest = hashlib.sha256(up.path.read_bytes()).hexdigest()
            if digest != up.sha256:
                up.path.unlink()
                self._upload = None
                raise _Refused(ErrorCode.HASH_MISMATCH, f"the {up.size} bytes received hash to {digest[:16]}…, "
                                                        f"not {up.sha256[:16]}…; discarded, upload again")
            os.replace(up.path, self.workdir / "artifacts" / f"{up.sha256}{up.fmt.suffix}")
            self.log(f"upload {up.sha256[:12]}: complete, sha256 verified")
        return Msg.ACK, pack(Msg.ACK, up.size)

    def _start_run(self, frame: Frame):
        (runs, warmup, threads, digest), _ = unpack(Msg.RUN, frame.payload)
        path = self._artifact(digest.hex())
        if path is None:
            raise _Refused(ErrorCode.NOT_UPLOADED, f"no artifact with sha256 {digest.hex()[:16]}… here; upload it")
        if runs < 1 or threads < 1:
            raise _Refused(ErrorCode.BAD_PAYLOAD, f"runs ({runs}) and threads ({threads}) must be at least 1")
        self._files, self._threads = {}, threads
        now = time.monotonic()
        run = _Run(key=(frame.seq, frame.type, crc32(frame.payload)), seq=frame.seq, started=now, last_beat=now)
        run.thread = threading.Thread(target=self._execute, args=(run, path, runs, warmup, threads), daemon=True)
        self._run = run
        self.log(f"RUN {path.name[:12]}…{path.suffix}: {warmup} warm-up + {runs} timed, {threads} thread(s)")
        run.thread.start()
        self._beat()
        return None

    def _execute(self, run: _Run, path: Path, runs: int, warmup: int, threads: int) -> None:
        try:
            fmt = next(f for f in ArtifactFormat if f.suffix == path.suffix)
            run.outcome = _runnable()[fmt].profile_here(path, runs=runs, warmup=warmup, threads=threads,
                                                        timeout=self.run_timeout_s)
        except EdgevitError as e:
            run.outcome = _Refused(ErrorCode.RUN_FAILED, str(e))
        except Exception as e:  # noqa: BLE001 - whatever breaks, the host gets told instead of waiting
            run.outcome = _Refused(ErrorCode.INTERNAL, f"{type(e).__name__}: {e}")

    def _beat(self, seq: int | None = None) -> None:
        run = self._run
        run.last_beat = time.monotonic()
        self._send(Msg.BUSY, run.seq if seq is None else seq, pack(Msg.BUSY, int((run.last_beat - run.started) * 1000)))

    def _tick_run(self) -> None:
        run = self._run
        if run is None:
            return
        if run.thread.is_alive():
            if time.monotonic() - run.last_beat >= self.heartbeat_s:
                self._beat()
            return
        self._run = None
        elapsed_ms = int((time.monotonic() - run.started) * 1000)
        if isinstance(run.outcome, _Refused):
            self.log(f"run failed: {run.outcome}")
            answer = (Msg.ERROR, pack(Msg.ERROR, run.outcome.code, tail=str(run.outcome).encode()))
        else:
            answer = (Msg.RESULT, pack_json({"elapsed_ms": elapsed_ms, "files": self._keep_files(run.outcome)}))
            self.log(f"run done in {elapsed_ms / 1000:.1f} s")
        self._last_key, self._last_answers = run.key, [self._send(answer[0], run.seq, answer[1])]

    def _keep_files(self, device_run) -> list[dict]:
        record = {k: v for k, v in asdict(device_run).items() if k != "etdump"}
        # What this board is, as a local profile records it (SoC, cores, RAM, OS), plus the profile name.
        record["device_info"] = {**host_facts(), "threads": self._threads, "os": f"{platform.system()} "
                                 f"{platform.release()}", **record["device_info"], "profile": self.device}
        self._files = {FileId.RESULT: json.dumps(record).encode()}
        if device_run.etdump:
            self._files[FileId.ETDUMP] = device_run.etdump
        return [{"id": int(i), "name": "etdump" if i == FileId.ETDUMP else "result.json", "size": len(data),
                 "sha256": hashlib.sha256(data).hexdigest()} for i, data in sorted(self._files.items())]

    def _read(self, frame: Frame):
        (file_id, length, offset), _ = unpack(Msg.READ, frame.payload)
        data = self._files.get(file_id)
        if data is None:
            raise _Refused(ErrorCode.NO_RESULT, f"no file {file_id} from a finished run here; RUN first")
        if offset > len(data):
            raise _Refused(ErrorCode.BAD_OFFSET, f"offset {offset} is past the end of file {file_id} "
                                                 f"({len(data)} bytes)")
        piece = data[offset:offset + min(length, self.host_max_payload - 4)]
        return Msg.DATA, pack(Msg.DATA, offset, tail=piece)


_HANDLERS = {Msg.HELLO: Agent._hello, Msg.PING: Agent._ping, Msg.BYE: Agent._bye_,
             Msg.UPLOAD_BEGIN: Agent._upload_begin, Msg.UPLOAD_DATA: Agent._upload_data,
             Msg.UPLOAD_END: Agent._upload_end, Msg.RUN: Agent._start_run, Msg.READ: Agent._read}


def _name(type_: int) -> str:
    return Msg(type_).name if type_ in Msg._value2member_map_ else f"type 0x{type_:02x}"
