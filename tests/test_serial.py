"""The serial profiling link: frames, then `edgevit agent` in its own process on a real pty, the host on
another pty, joined by a relay thread that plays the cable (and, when told, a bad cable)."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest

from edgevit.cli import main
from edgevit.errors import EdgevitError
from edgevit.links.serial import AgentError, ArtifactFormat, Damaged, Frame, FrameDecoder, PortError, SerialHost, encode
from edgevit.links.serial.frames import crc16, crc32
from edgevit.links.serial.messages import Msg, ProtocolError, pack, unpack

TESTS = Path(__file__).parent
DOC = TESTS.parent / "docs" / "serial-protocol.md"


# -- frames -------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_crc_check_values_match_the_spec():
    assert crc32(b"123456789") == 0xCBF43926  # CRC-32/ISO-HDLC
    assert crc16(b"123456789") == 0x29B1      # CRC-16/IBM-3740 (CCITT-FALSE)


@pytest.mark.unit
def test_worked_example_in_the_spec_is_what_we_send():
    hello = encode(Frame(Msg.HELLO, 0x0102, pack(Msg.HELLO, 1, 1, 4096)))
    doc = DOC.read_text()
    example = re.search(r"<!-- example:hello -->\s*```\s*(.*?)```", doc, re.S).group(1)
    assert bytes.fromhex(example) == hello
    assert FrameDecoder().feed(hello) == [Frame(Msg.HELLO, 0x0102, bytes.fromhex("01010010"))]


@pytest.mark.unit
def test_decoder_resyncs_after_garbage_truncation_and_damage():
    frames = [Frame(Msg.UPLOAD_DATA, i, bytes(range(i, i + 40))) for i in range(4)]
    raw = [encode(f) for f in frames]
    flipped = bytearray(raw[1])
    flipped[20] ^= 0x01                                   # payload bit error: header fine, CRC-32 fails
    stream = (b"\x00\xa5\x5a\xa5garbage" + raw[0] + raw[2][:25]   # a frame cut short by dropped bytes
              + bytes(flipped) + b"\xa5" + raw[3])
    decoder = FrameDecoder()
    out = []
    for i in range(len(stream)):                          # byte by byte, as a UART delivers it
        out += decoder.feed(stream[i:i + 1])
    good = [x for x in out if isinstance(x, Frame)]
    assert good == [frames[0], frames[3]]
    # The truncated frame swallows the damaged one's start; both are reported damaged with a trusted seq.
    assert [(d.seq, d.reason.name) for d in out if isinstance(d, Damaged)] == [(2, "BAD_CRC"), (1, "BAD_CRC")]
    assert decoder.garbage_bytes > 0


@pytest.mark.unit
def test_decoder_rejects_a_damaged_header_at_once_and_a_too_long_frame():
    raw = bytearray(encode(Frame(Msg.ACK, 7, pack(Msg.ACK, 5))))
    raw[6] ^= 0xFF                                        # length byte: the header CRC catches it immediately
    assert FrameDecoder().feed(bytes(raw)) == []
    long = encode(Frame(Msg.UPLOAD_DATA, 9, bytes(600)))
    assert FrameDecoder(max_payload=256).feed(long)[0] == Damaged(Msg.UPLOAD_DATA, 9, 2)


@pytest.mark.unit
def test_payload_layouts_are_checked():
    assert unpack(Msg.RUN, pack(Msg.RUN, 20, 3, 1, b"\x11" * 32))[0] == (20, 3, 1, b"\x11" * 32)
    with pytest.raises(ProtocolError, match="RUN payload is 10 bytes"):
        unpack(Msg.RUN, bytes(10))


# -- a cable between two ptys -------------------------------------------------------------------------------
class NullModem:
    """Two pty pairs joined by a thread: the host opens ``host_port``, the agent ``agent_port``.

    ``faults`` maps a direction ("to_agent", "to_host") to ``[(byte_index, "flip" | "drop", n)]`` applied at
    those positions of that direction's byte stream; ``cut(direction)`` stops forwarding (a pulled cable).
    """

    def __init__(self, faults: dict | None = None):
        self._fds = []
        ends = {}
        for side in ("host", "agent"):
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._fds += [master, slave]  # the slaves stay open: a killed agent must not hang up the line
            ends[side] = (master, os.ttyname(slave))
        (self._host_master, self.host_port), (self._agent_master, self.agent_port) = ends["host"], ends["agent"]
        self.faults = {d: sorted(faults.get(d, [])) if faults else [] for d in ("to_agent", "to_host")}
        self.position = {"to_agent": 0, "to_host": 0}
        self.applied: list[tuple] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _damage(self, direction: str, data: bytes) -> bytes:
        start, data = self.position[direction], bytearray(data)
        self.position[direction] += len(data)
        for fault in [f for f in self.faults[direction] if start <= f[0] < start + len(data)][::-1]:
            at, kind, n = fault
            i = at - start
            if kind == "flip":
                data[i] ^= 0xFF
            else:
                del data[i:i + n]
            self.applied.append((direction, *fault))
        return bytes(data)

    def _pump(self) -> None:
        routes = {self._host_master: ("to_agent", self._agent_master),
                  self._agent_master: ("to_host", self._host_master)}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(routes), [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    continue
                direction, dst = routes[fd]
                data = self._damage(direction, data)
                while data:
                    try:
                        data = data[os.write(dst, data):]
                    except BlockingIOError:
                        if self._stop.wait(0.001):
                            return
                    except OSError:
                        break

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in self._fds:
            os.close(fd)


class AgentProcess:
    """`edgevit agent` in its own session (so the agent and its runner child can be killed together)."""

    def __init__(self, port: str, workdir: Path, *args: str, device: str = "rpi5"):
        exe = shutil.which("edgevit")
        cmd = [exe] if exe else [sys.executable, "-c", "import sys; from edgevit.cli import main; sys.exit(main())"]
        self.proc = subprocess.Popen([*cmd, "agent", "--serial", port, "--device", device, "--workdir", str(workdir),
                                      *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._grew = threading.Condition()

        def collect():
            for line in self.proc.stderr:
                with self._grew:
                    self.lines.append(line)
                    self._grew.notify_all()
            with self._grew:  # the agent is gone: nothing more will come
                self.lines.append("")
                self._closed = True
                self._grew.notify_all()
        self._closed = False
        threading.Thread(target=collect, daemon=True).start()
        if not self.wait_for("listening on"):
            self.kill()
            raise AssertionError("the agent did not start: " + "".join(self.lines))

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60.0) -> bool:
        """True once the agent has logged ``text`` (its stderr is read on another thread, so a line written
        just before an answer the host already has may not be here yet); False if it exits without it.
        ``timeout`` only bounds a hung agent; a passing test never waits for it."""
        with self._grew:
            return self._grew.wait_for(lambda: text in self.log or self._closed, timeout) and text in self.log

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """A real, small compiled .pte folder for the rpi5 profile (manifest, model.pte, etrecord.bin)."""
    from edgevit.compile import CompileOptions, compile_model

    cwd = os.getcwd()
    os.chdir(TESTS)  # `user_models:...` resolves like a user's package in the cwd
    try:
        result = compile_model(CompileOptions(model="user_models:build_tiny", device="rpi5", backend="executorch",
                                              precision="fp32", input_shape="1,3,32,32", num_verify=1,
                                              output_root=tmp_path_factory.mktemp("out")))
    finally:
        os.chdir(cwd)
    return result.artifact.parent


@pytest.fixture
def line():
    modem = NullModem()
    yield modem
    modem.close()


# -- end to end ---------------------------------------------------------------------------------------------
@pytest.mark.emulated
def test_profile_over_serial_end_to_end(artifact, line, tmp_path, capsys):
    agent = AgentProcess(line.agent_port, tmp_path / "agent")
    try:
        code = main(["profile", str(artifact), "--via", "serial", "--port", line.host_port, "--runs", "4",
                     "--warmup", "1", "--json"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        report = json.loads(captured.out)
        target = report["target"]
        assert target["via"] == "serial" and target["port"] == line.host_port
        assert target["device_info"]["profile"] == "rpi5"          # what the agent was started as
        size = (artifact / "model.pte").stat().st_size
        assert target["link"]["upload"] == {"size": size, "resumed_at": 0, "bytes_sent": size, "chunk": 4092}
        assert target["link"]["resent"] == 0
        # The ETDump came back over the line and parsed: 4 timed executions, per-op rows mapped to modules.
        assert report["wall_ms"]["runs"] == 4 and report["wall_ms"]["median"] > 0
        assert report["ops"] and any(op["module"] for op in report["ops"])
        assert Path(report["files"]["json"]).parent == artifact / "profiles"
        assert agent.wait_for("run done")

        # An agent that is another device refuses the artifact before anything is uploaded.
        uploads_before = sorted(p.name for p in (tmp_path / "agent").rglob("*") if p.is_file())
        manifest_path = artifact / "manifest.json"
        original = manifest_path.read_text()
        try:
            manifest = json.loads(original)
            manifest["device"]["name"] = "pixel8"
            manifest_path.write_text(json.dumps(manifest))
            code = main(["profile", str(artifact), "--via", "serial", "--port", line.host_port, "--runs", "1"])
        finally:
            manifest_path.write_text(original)
        assert code == 2 and "compiled for 'pixel8'" in capsys.readouterr().err
        assert sorted(p.name for p in (tmp_path / "agent").rglob("*") if p.is_file()) == uploads_before

        # Requests the agent refuses come back as ERROR, shown with the agent's reason; nothing hangs.
        with SerialHost(line.host_port, timeout=0.5) as host:
            with pytest.raises(AgentError, match=r"speaks protocol versions 1-1; the host offered 2-3"):
                host.request(Msg.HELLO, pack(Msg.HELLO, 2, 3, 4096), {Msg.INFO}, what="HELLO")
            host.hello()
            with pytest.raises(AgentError, match="refused RUN: no artifact with sha256 0000.*NOT_UPLOADED"):
                host.run(bytes(32), runs=1, warmup=0, threads=1)

        # The agent holds its port exclusively: a second opener gets a clear "busy".
        with pytest.raises(PortError, match="is busy"):
            with SerialHost(line.agent_port):
                pass
    finally:
        agent.kill()


@pytest.mark.unit
def test_bad_lines_are_clear_errors(tmp_path, capsys):
    with pytest.raises(PortError, match="does not exist"):
        with SerialHost("/dev/ttyEDGEVIT-missing"):
            pass
    assert main(["agent", "--serial", "/dev/ttyEDGEVIT-missing", "--workdir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["agent", "--serial", "/dev/null", "--device", "nosuchboard", "--workdir", str(tmp_path)]) == 2
    assert "Unknown device" in capsys.readouterr().err


# -- faults -------------------------------------------------------------------------------------------------
@pytest.mark.emulated
def test_host_retries_through_dropped_and_corrupted_bytes(artifact, tmp_path):
    data = (artifact / "model.pte").read_bytes()
    # Agent payloads of 1 KiB: upload frames are 1038 bytes. Damage both directions, in headers and bodies.
    faults = {"to_agent": [(500, "flip", 1), (3000, "drop", 3), (7400, "flip", 1), (12000, "drop", 40)],
              "to_host": [(40, "flip", 1), (1000, "drop", 2), (2000, "flip", 1)]}
    modem = NullModem(faults)
    agent = AgentProcess(modem.agent_port, tmp_path / "agent", "--max-payload", "1024")
    try:
        with SerialHost(modem.host_port, timeout=0.4, retries=4) as host:
            assert host.hello()["device"] == "rpi5"
            upload = host.upload(data, ArtifactFormat.PTE)
            result = host.run(hashlib.sha256(data).digest(), runs=2, warmup=0, threads=1)
            files = {f["name"]: host.read_file(f) for f in result["files"]}   # sha256-checked
            host.bye()
        assert len(modem.applied) == 7                            # every scheduled fault hit the stream
        assert files["etdump"][8:12] == b"ED00" and len(json.loads(files["result.json"])["times_ms"]) == 2
        assert upload.resumed_at == 0 and upload.bytes_sent >= len(data)
        stats = host.stats
        assert stats.resent >= 5 and stats.naks >= 1 and stats.damaged_answers + stats.timeouts >= 2
        stored = tmp_path / "agent" / "artifacts" / f"{hashlib.sha256(data).hexdigest()}.pte"
        assert stored.read_bytes() == data
        assert agent.wait_for("NAK")
    finally:
        agent.kill()
        modem.close()


@pytest.mark.emulated
def test_interrupted_upload_resumes_where_it_stopped(artifact, line, tmp_path):
    data = (artifact / "model.pte").read_bytes()
    workdir = tmp_path / "agent"
    agent = AgentProcess(line.agent_port, workdir, "--max-payload", "1024")

    def pull_the_plug(have, size):
        if have > size * 0.4:
            agent.kill()

    started = time.monotonic()
    with pytest.raises(EdgevitError, match="did not answer UPLOAD_DATA") as failure:
        with SerialHost(line.host_port, timeout=0.3, retries=2) as host:
            host.hello()
            host.upload(data, ArtifactFormat.PTE, pull_the_plug)
    # Bounded by this host's settings (2 re-sends of 0.3 s), not the defaults' 5 x 2 s: < 10 s even when loaded.
    assert time.monotonic() - started < 10 and line.host_port in str(failure.value)

    agent = AgentProcess(line.agent_port, workdir, "--max-payload", "1024")   # a restarted board
    try:
        with SerialHost(line.host_port, timeout=0.5) as host:
            host.hello()
            upload = host.upload(data, ArtifactFormat.PTE)
        assert upload.resumed_at > 0.4 * len(data)
        assert upload.bytes_sent == len(data) - upload.resumed_at < len(data)
        assert (workdir / "artifacts" / f"{hashlib.sha256(data).hexdigest()}.pte").read_bytes() == data
        assert agent.wait_for(f"resuming at {upload.resumed_at}")
        with SerialHost(line.host_port, timeout=0.5) as host:               # the same bytes again: none sent
            host.hello()
            again = host.upload(data, ArtifactFormat.PTE)
        assert (again.resumed_at, again.bytes_sent) == (len(data), 0)
        assert agent.wait_for("already here")
    finally:
        agent.kill()


@pytest.mark.emulated
def test_agent_killed_mid_run_stops_the_host_with_a_clear_error(artifact, line, tmp_path):
    data = (artifact / "model.pte").read_bytes()
    agent = AgentProcess(line.agent_port, tmp_path / "agent")
    beats = []

    def kill_on_first_heartbeat(elapsed_ms):
        beats.append(elapsed_ms)
        agent.kill()  # the agent and its runner child, mid-run

    with SerialHost(line.host_port, timeout=0.3, retries=2, busy_timeout=1.5) as host:
        host.hello()
        host.upload(data, ArtifactFormat.PTE)
        started = time.monotonic()
        with pytest.raises(EdgevitError, match="stopped answering during the run") as failure:
            host.run(hashlib.sha256(data).digest(), runs=100000, warmup=0, threads=1,
                     on_busy=kill_on_first_heartbeat)
    waited = time.monotonic() - started
    # At least the 1.5 s without a heartbeat this host allows; well under what the defaults (10 s + 5 x 2 s)
    # would take, with room for a loaded machine.
    assert beats and 1.5 <= waited < 20, waited
    assert line.host_port in str(failure.value) and "restart `edgevit agent`" in str(failure.value)
    assert agent.proc.returncode == -signal.SIGKILL
    with pytest.raises(OSError) as gone:  # nothing of the agent's session survives
        os.killpg(agent.proc.pid, 0)
    assert gone.value.errno == errno.ESRCH
