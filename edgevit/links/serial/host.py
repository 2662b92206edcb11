"""The host end of the serial protocol: requests with timeouts and retries, chunked upload with resume,
result download (docs/serial-protocol.md §5-6).

Every request waits for an answer carrying its sequence number. A timeout, a NAK, or a damaged answer
sends the same frame again (same seq, so the agent answers a copy it already handled from its cache);
after ``retries`` re-sends the host gives up with an error that names the port. During a RUN the agent
sends BUSY heartbeats; silence for ``busy_timeout`` means it died and the host stops instead of hanging.
"""
from __future__ import annotations

import collections
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import serial

from ...errors import EdgevitError
from .frames import MIN_MAX_PAYLOAD, OVERHEAD, Damaged, Frame, FrameDecoder, encode
from .messages import (
    MIN_VERSION,
    PROTOCOL_VERSION,
    ArtifactFormat,
    ErrorCode,
    Msg,
    ProtocolError,
    pack,
    unpack,
    unpack_json,
)
from .port import PortError, open_port

__all__ = ["SerialHost", "LinkStats", "UploadStats", "AgentError"]


class AgentError(EdgevitError):
    """The agent answered a request with ERROR."""

    def __init__(self, port: str, what: str, code: int, text: str):
        name = ErrorCode(code).name if code in ErrorCode._value2member_map_ else f"code {code}"
        super().__init__(f"The agent on {port} refused {what}: {text} ({name}).")
        self.code = code


@dataclass
class LinkStats:
    frames_sent: int = 0
    resent: int = 0             # frames sent again after a timeout, NAK or damaged answer
    timeouts: int = 0
    naks: int = 0
    damaged_answers: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class UploadStats:
    size: int
    resumed_at: int             # bytes the agent already held for this sha256
    bytes_sent: int             # artifact bytes sent in UPLOAD_DATA frames (re-sends included)
    chunk: int


class SerialHost:
    """One session with an agent. Use as a context manager; call :meth:`hello` first."""

    def __init__(self, port: str, baud: int = 921600, *, timeout: float = 2.0, retries: int = 5,
                 busy_timeout: float = 10.0, max_payload: int = 16384):
        self.port, self.baud = port, baud
        self.timeout, self.retries, self.busy_timeout = timeout, retries, busy_timeout
        self.max_payload = max_payload          # the largest payload we accept (HELLO tells the agent)
        self.agent_max_payload = MIN_MAX_PAYLOAD
        self.version = MIN_VERSION
        self.info: dict = {}
        self.stats = LinkStats()
        self._decoder = FrameDecoder(max_payload)
        self._pending: collections.deque = collections.deque()
        self._seq = int.from_bytes(os.urandom(2), "little")  # a new session never repeats the last one's seq
        self._ser: serial.Serial | None = None

    # -- the line ---------------------------------------------------------------------------------------
    def __enter__(self) -> SerialHost:
        self._ser = open_port(self.port, self.baud)
        return self

    def __exit__(self, *exc) -> None:
        if self._ser is not None:
            self._ser.close()
            self._ser = None

    def _line_failed(self, e: Exception) -> PortError:
        return PortError(f"The serial line {self.port} failed: {e}. Was the adapter unplugged? Reconnect it and "
                         "run the profile again (an interrupted upload resumes).")

    def _write(self, raw: bytes) -> None:
        try:
            self._ser.write(raw)
        except serial.SerialTimeoutException:
            raise PortError(f"Writing to {self.port} stalled for {self._ser.write_timeout:.0f} s: the line is "
                            "blocked (hardware flow control with nothing on the other end?).") from None
        except (serial.SerialException, OSError) as e:
            raise self._line_failed(e) from None
        self.stats.frames_sent += 1

    def _next(self) -> Frame | Damaged | None:
        """The next decoded frame, waiting at most the port's read timeout (50 ms)."""
        if not self._pending:
            try:
                data = self._ser.read(self._ser.in_waiting or 1)
            except (serial.SerialException, OSError) as e:
                raise self._line_failed(e) from None
            if data:
                self._pending.extend(self._decoder.feed(data))
        return self._pending.popleft() if self._pending else None

    def _wait_for(self, nbytes: int) -> float:
        """The answer timeout for a frame of ``nbytes``: ours plus both frames' time on the wire (10 bits/byte)."""
        return self.timeout + (nbytes + self.max_payload + OVERHEAD) * 10 / self.baud

    # -- request / answer -------------------------------------------------------------------------------
    def request(self, msg: Msg, payload: bytes, expect: set[Msg], *, what: str,
                on_busy: Callable[[int], None] | None = None, retries: int | None = None) -> Frame:
        """Send ``msg`` and return the answer of a type in ``expect``, re-sending as the protocol says."""
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        # HELLO is written in the oldest version so that any agent reads it; the rest in the agreed one.
        raw = encode(Frame(msg, seq, payload, MIN_VERSION if msg == Msg.HELLO else self.version))
        wait, problem, heartbeat_at = self._wait_for(len(raw)), "no answer", None
        retries = self.retries if retries is None else retries
        self._write(raw)
        deadline, failures = time.monotonic() + wait, 0
        while True:
            item = None
            if time.monotonic() < deadline:
                item = self._next()
                if item is None or item.seq != seq:
                    continue  # nothing yet, or an answer to an extra copy of an earlier request
            if item is None:
                self.stats.timeouts += 1
                problem = f"no answer in time ({wait:.1f} s)"
            elif isinstance(item, Damaged):
                self.stats.damaged_answers += 1
                problem = "the answer arrived damaged"
            elif item.type == Msg.NAK:
                self.stats.naks += 1
                problem = "the agent received our frame damaged (NAK)"
            elif item.type == Msg.BUSY and on_busy is not None:
                (elapsed_ms,), _ = unpack(Msg.BUSY, item.payload)
                on_busy(elapsed_ms)
                heartbeat_at, failures = time.monotonic(), 0  # alive: re-sends count from here
                deadline = heartbeat_at + self.busy_timeout
                continue
            elif item.type == Msg.ERROR:
                (code,), text = unpack(Msg.ERROR, item.payload)
                raise AgentError(self.port, what, code, text.decode(errors="replace"))
            elif item.type in expect:
                return item
            else:
                raise ProtocolError(f"The agent on {self.port} answered {what} with {_name(item.type)}, "
                                    f"expected {' or '.join(m.name for m in expect)}; is it speaking this protocol?")
            if failures == retries:
                break
            failures += 1  # re-send the same frame: the agent answers a copy it already handled from its cache
            self.stats.resent += 1
            self._write(raw)
            deadline = time.monotonic() + wait
        if heartbeat_at is not None:
            raise EdgevitError(
                f"The agent on {self.port} stopped answering during the run: no heartbeat for "
                f"{time.monotonic() - heartbeat_at:.0f} s and no answer to {retries} re-sent RUN requests. The "
                "board may have crashed, rebooted or run out of memory; check its console, restart `edgevit agent` "
                "and run the profile again (the uploaded artifact is kept).")
        raise EdgevitError(
            f"The agent on {self.port} did not answer {what} after {retries + 1} attempts (last: {problem}). "
            f"Check that `edgevit agent` (or the board's firmware) runs on the other end, that both ends use "
            f"{self.baud} baud, and the cable; then try again.")

    # -- the session ------------------------------------------------------------------------------------
    def hello(self) -> dict:
        """Agree on a version and payload size; returns what the agent says about itself (INFO)."""
        answer = self.request(Msg.HELLO, pack(Msg.HELLO, MIN_VERSION, PROTOCOL_VERSION, self.max_payload),
                              {Msg.INFO}, what="HELLO")
        (version, agent_max), details = unpack(Msg.INFO, answer.payload)
        if not MIN_VERSION <= version <= PROTOCOL_VERSION or agent_max < MIN_MAX_PAYLOAD:
            raise ProtocolError(f"The agent on {self.port} chose protocol version {version} with a "
                                f"{agent_max}-byte payload limit; this host speaks versions {MIN_VERSION}-"
                                f"{PROTOCOL_VERSION} and needs at least {MIN_MAX_PAYLOAD} bytes. Update one end.")
        self.version, self.agent_max_payload = version, agent_max
        self.info = {**unpack_json(details, "INFO"), "protocol_version": version, "max_payload": agent_max}
        return self.info

    def upload(self, data: bytes, fmt: ArtifactFormat,
               on_progress: Callable[[int, int], None] | None = None) -> UploadStats:
        """Put ``data`` on the agent, starting where an earlier, interrupted upload of it stopped."""
        sha = hashlib.sha256(data).digest()
        size, chunk = len(data), self.agent_max_payload - 4  # 4: UPLOAD_DATA's offset
        have = self._ack(Msg.UPLOAD_BEGIN, pack(Msg.UPLOAD_BEGIN, size, fmt, sha), "UPLOAD_BEGIN")
        if have > size:
            raise ProtocolError(f"The agent on {self.port} says it holds {have} bytes of a {size}-byte upload.")
        stats = UploadStats(size=size, resumed_at=have, bytes_sent=0, chunk=chunk)
        if on_progress:
            on_progress(have, size)
        while have < size:
            piece = data[have:have + chunk]
            held = self._ack(Msg.UPLOAD_DATA, pack(Msg.UPLOAD_DATA, have, tail=piece), f"UPLOAD_DATA at {have}")
            stats.bytes_sent += len(piece)
            if not have < held <= size:  # the agent always holds what it acknowledged, and more after a chunk
                raise ProtocolError(f"The agent on {self.port} acknowledged {held} bytes after a chunk at "
                                    f"offset {have} of {size}; the upload cannot continue.")
            have = held
            if on_progress:
                on_progress(have, size)
        self._ack(Msg.UPLOAD_END, b"", "UPLOAD_END")
        return stats

    def run(self, sha256: bytes, *, runs: int, warmup: int, threads: int,
            on_busy: Callable[[int], None] | None = None) -> dict:
        """Run an uploaded artifact; returns RESULT (the files the run produced)."""
        answer = self.request(Msg.RUN, pack(Msg.RUN, runs, warmup, threads, sha256), {Msg.RESULT}, what="RUN",
                              on_busy=on_busy or (lambda ms: None))
        result = unpack_json(answer.payload, "RESULT")
        files = result.get("files")
        if not isinstance(files, list) or not all(isinstance(f, dict) and {"id", "size", "sha256"} <= f.keys()
                                                  for f in files):
            raise ProtocolError(f"The agent on {self.port} sent a RESULT without a valid files list: {result}")
        return result

    def read_file(self, entry: dict, on_progress: Callable[[int, int], None] | None = None) -> bytes:
        """Download one file RESULT lists ({"id", "size", "sha256"}) and check its sha256."""
        size, got = int(entry["size"]), bytearray()
        while len(got) < size:
            want = min(size - len(got), self.max_payload - 4)  # 4: DATA's offset
            answer = self.request(Msg.READ, pack(Msg.READ, entry["id"], want, len(got)), {Msg.DATA},
                                  what=f"READ of {entry.get('name', entry['id'])} at {len(got)}")
            (offset,), piece = unpack(Msg.DATA, answer.payload)
            if offset != len(got) or not piece:
                raise ProtocolError(f"The agent on {self.port} sent {len(piece)} bytes at offset {offset} "
                                    f"when asked for offset {len(got)}.")
            got += piece
            if on_progress:
                on_progress(len(got), size)
        if hashlib.sha256(got).hexdigest() != entry["sha256"] or len(got) != size:
            raise ProtocolError(f"{entry.get('name')} downloaded from {self.port} does not match the sha256 the "
                                "agent announced; run the profile again.")
        return bytes(got)

    def bye(self) -> None:
        """End the session politely; an agent that is gone already is no error here."""
        try:
            self.request(Msg.BYE, b"", {Msg.ACK}, what="BYE", retries=1)
        except EdgevitError:
            pass

    def _ack(self, msg: Msg, payload: bytes, what: str) -> int:
        (value,), _ = unpack(Msg.ACK, self.request(msg, payload, {Msg.ACK}, what=what).payload)
        return value


def _name(type_: int) -> str:
    return Msg(type_).name if type_ in Msg._value2member_map_ else f"type 0x{type_:02x}"
