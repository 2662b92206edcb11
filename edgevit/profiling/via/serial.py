"""``--via serial``: a board at the other end of a serial line, running ``edgevit agent`` (or firmware that
speaks docs/serial-protocol.md). Upload (resumable) -> RUN with heartbeats -> download ETDump + result."""
from __future__ import annotations

import hashlib
from pathlib import Path

from ...backends import Backend
from ...errors import EdgevitError
from ...links.serial import ArtifactFormat, SerialHost
from ...links.serial.messages import FileId, unpack_json
from . import DeviceRun, Target, register_target

__all__ = ["SerialTarget"]


def _advance_to(advance):
    """Turn 'done so far' callbacks into the progress bar's 'advance by n'."""
    done = [0]

    def update(now: int, total: int = 0) -> None:
        advance(now - done[0])
        done[0] = now
    return update


@register_target
class SerialTarget(Target):
    """A board on ``port``. Its identity is the device profile name the agent reports (``--device``)."""

    name = "serial"

    def __init__(self, port: str | None = None, baud: int | None = 921600, *, timeout: float = 2.0,
                 retries: int = 5, busy_timeout: float = 10.0):
        if not port:
            raise EdgevitError("--via serial needs the line to the board: --port /dev/ttyUSB0 (and --baud if the "
                               "agent does not use 921600).")
        self.port, self.baud = port, baud or 921600
        self.options = {"timeout": timeout, "retries": retries, "busy_timeout": busy_timeout}
        self.link: dict = {}

    def run(self, artifact: Path, backend: Backend, *, runs: int, warmup: int, threads: int,
            progress) -> DeviceRun:
        artifact = Path(artifact)
        if backend.wire_format not in ArtifactFormat._value2member_map_:
            raise EdgevitError(f"{backend.name} artifacts have no format code in the serial protocol "
                               "(docs/serial-protocol.md), so they cannot be sent to a board; profile them "
                               "--via local.")
        fmt = ArtifactFormat(backend.wire_format)
        data = artifact.read_bytes()
        with SerialHost(self.port, self.baud, **self.options) as host:
            with progress.stage(f"connecting to the agent on {self.port}"):
                info = host.hello()
            if fmt.suffix not in info.get("formats", []):
                raise EdgevitError(f"The agent on {self.port} ({info.get('device')}) cannot run {fmt.suffix} "
                                   f"files; it runs {', '.join(info.get('formats', [])) or 'nothing'}.")
            with progress.stage(f"uploading {artifact.name} ({len(data) / 1024:.0f} KiB)", total=len(data)) as adv:
                upload = host.upload(data, fmt, _advance_to(adv))
            with progress.stage(f"running on {info.get('device')} ({warmup} warm-up + {runs} timed)"):
                result = host.run(hashlib.sha256(data).digest(), runs=runs, warmup=warmup, threads=threads)
            files = {entry["id"]: entry for entry in result.get("files", [])}
            total = sum(entry["size"] for entry in files.values())
            with progress.stage("downloading the profile", total=total) as adv:
                got = {}
                for file_id, entry in files.items():
                    advance = _advance_to(adv)
                    got[file_id] = host.read_file(entry, advance)
            host.bye()
            self.link = {"protocol_version": host.version, "agent_max_payload": host.agent_max_payload,
                         "upload": {"size": upload.size, "resumed_at": upload.resumed_at,
                                    "bytes_sent": upload.bytes_sent, "chunk": upload.chunk},
                         "downloaded_bytes": total, **host.stats.as_dict()}
        # result.json is optional: a microcontroller agent may send the ETDump alone.
        record = unpack_json(got[FileId.RESULT], "result.json") if FileId.RESULT in got else {}
        device_info = {**record.get("device_info", {}), "profile": info.get("device"),
                       "agent": info.get("agent"), "runtime": info.get("runtime")}
        return DeviceRun(etdump=got.get(FileId.ETDUMP), op_profile=record.get("op_profile"),
                         times_ms=record.get("times_ms", []), load_ms=record.get("load_ms"),
                         peak_memory_bytes=record.get("peak_memory_bytes"), device_info=device_info,
                         log=record.get("log", ""))

    def identify(self) -> dict:
        with SerialHost(self.port, self.baud, **self.options) as host:
            info = host.hello()
            host.bye()
        return {"profile": info.get("device")}

    def describe(self) -> dict:
        return {"via": self.name, "port": self.port, "baud": self.baud, "link": self.link}
