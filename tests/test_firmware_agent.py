"""The serial agent in C (firmware/agent/): its constants generated from edgevit.serial_protocol, its CRCs and
SHA-256 against Python's, the protocol behaviours tests/test_serial.py asks of the Python agent (against the host
build, a real process on a real TCP socket), an FPGA "ZCU102 PS + PL" profiled end to end over serial (the PL is
the accelerator's C-simulation: per-layer cycles equal to the schedule model, output equal to the fixed-point
reference), and a Cortex-M4 build under QEMU running a flashed int8 model.

Everything is compiled once per module (module fixtures); each agent process is our own and is killed by its id."""
from __future__ import annotations

import binascii
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from edgevit.backends import get_backend
from edgevit.backends.hls.agent_run import agent_input, build_host_agent, layer_cycles
from edgevit.backends.hls.convert import convert_m3vit
from edgevit.backends.hls.csim import write_sources
from edgevit.backends.hls.design import Design
from edgevit.backends.hls.reference import Formats, QuantizedWeights, run_reference
from edgevit.backends.hls.schedule import schedule
from edgevit.backends.hls.writer import build_weight_image, config_header
from edgevit.cli import main
from edgevit.errors import EdgevitError
from edgevit.firmware import QemuBoard, build_agent
from edgevit.firmware.build import build_selftest
from edgevit.firmware.protocol_header import header_path, protocol_header
from edgevit.links.serial import AgentError, ArtifactFormat, Frame, PortError, SerialHost, encode
from edgevit.links.serial.messages import ErrorCode, FileId, Msg, pack, unpack
from edgevit.models import create_model

MICRO = "m3vit_micro"


# -- one source for the constants; the C primitives -----------------------------------------------------------
@pytest.mark.unit
def test_the_c_protocol_header_is_generated_from_serial_protocol():
    text = protocol_header()
    assert header_path().read_text() == text, "run `python -m edgevit.firmware.protocol_header`"
    assert "Generated from edgevit/serial_protocol.py" in text and "do not edit" in text
    for line in ("EV_MSG_UPLOAD_BEGIN = 0x10,", "EV_ERR_INTERNAL = 0x0D,", "EV_FORMAT_HLS = 0x03,",
                 "EV_FORMAT_MCU = 0x04,", '#define EV_FORMAT_SUFFIX_MCU ".evm"', "#define EV_RUN_SIZE 44u",
                 "#define EV_READ_OFF_2 4u", "#define EV_CRC32_CHECK 0xCBF43926u"):
        assert line in text


@pytest.mark.integration
def test_c_crcs_and_sha256_match_python(tmp_path):
    exe = build_selftest(tmp_path / "selftest")
    rng = np.random.default_rng(0)
    vectors = [b"", b"abc", b"123456789",                                 # FIPS 180-4 / CRC catalogue checks
               b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", b"a" * 1_000_000,
               rng.integers(0, 256, 4097, dtype=np.uint8).tobytes()]
    for data in vectors:
        out = subprocess.run([str(exe)], input=data, capture_output=True, check=True).stdout.decode().split()
        assert out == [f"{binascii.crc_hqx(data, 0xFFFF):04x}", f"{zlib.crc32(data):08x}",
                       hashlib.sha256(data).hexdigest()]
    assert hashlib.sha256(b"abc").hexdigest().startswith("ba7816bf8f01cfea")   # FIPS 180-4 B.1


# -- the host build for an hls artifact ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def hls_artifact(tmp_path_factory):
    """m3vit_micro's accelerator for zcu102 (a 4x16 PE array, every expert kept): the generated project, its
    weight image and manifest, as the hls backend writes them; plus what the reference needs."""
    torch.manual_seed(0)
    model = create_model(MICRO).eval()
    graph = convert_m3vit(model, MICRO)
    formats, design = Formats(), Design(4, 16, 300, 256, 32)
    params = QuantizedWeights(graph, formats)
    masks = np.ones((len(graph.tasks), len(graph.moe_blocks), graph.num_experts), dtype=bool)
    image, offsets = build_weight_image(graph, params.raw, formats, design, masks)
    folder = tmp_path_factory.mktemp("hls") / f"{MICRO}-zcu102"
    write_sources(folder / "project", config_header(graph, formats, design, offsets))
    (folder / "weights.bin").write_bytes(image.data())
    # The fields `edgevit profile` reads (edgevit.manifest.CompileManifest) next to the hls ones it does not.
    weights = image.data()
    manifest = {"manifest_version": 1, "kind": "hls-project", "task": {"index": 0, "name": graph.tasks[0][0]},
                "model": {"name": MICRO, "family": "m3vit", "params": sum(p.numel() for p in model.parameters())},
                "weights": {"source": "synthetic (seed 0)"}, "backend": {"name": "hls"}, "precision": "fixed",
                "device": {"name": "zcu102", "display_name": "AMD Xilinx ZCU102 Evaluation Kit",
                           "soc": "Zynq UltraScale+ MPSoC XCZU9EG"},
                "artifact": {"file": "weights.bin", "size_bytes": len(weights),
                             "sha256": hashlib.sha256(weights).hexdigest()},
                "inputs": [{"name": "patches", "shape": [graph.tokens, graph.patch_dim], "dtype": str(formats.act)}],
                "outputs": [{"name": "head", "shape": [graph.tokens - 1, graph.tasks[0][1]],
                             "dtype": str(formats.act)}],
                "verification": {}, "preprocessing": {}, "tool_versions": {}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    agent = build_host_agent(folder, folder.parent / "edgevit-agent")
    return {"graph": graph, "formats": formats, "design": design, "params": params, "folder": folder,
            "agent": agent.path, "weights": image.data()}


class HostAgent:
    """The host agent as its own process on a TCP socket (port 0: the kernel picks one; the agent prints it)."""

    def __init__(self, exe: Path, *args: str, serial: str | None = None):
        line = ["--serial", serial] if serial else ["--listen", "127.0.0.1:0"]
        self.proc = subprocess.Popen([str(exe), "--device", "zcu102", *line, *args],
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        first = self.proc.stderr.readline()         # the event: it listens (or it failed and said why)
        found = re.search(r"listening on (127\.0\.0\.1:(\d+)|/dev/\S+)", first)
        if not found:
            self.kill()
            raise AssertionError(f"the agent did not start: {first}{self.proc.stderr.read()}")
        self.port = serial or f"socket://{found.group(1)}"
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True).start()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def host_agent(hls_artifact):
    agent = HostAgent(hls_artifact["agent"])
    yield agent
    agent.kill()


def _answers(host: SerialHost, raw: bytes, seq: int, count: int = 1) -> list:
    """Write ``raw`` as is and collect ``count`` decoded items (frames or damaged frames) with ``seq``."""
    host._write(raw)
    got = []
    for _ in range(2000):                       # 2000 x the port's 50 ms read timeout bounds a dead agent
        item = host._next()
        if item is not None and item.seq == seq:
            got.append(item)
            if len(got) == count:
                return got
    raise AssertionError(f"no answer with seq {seq}")


@pytest.mark.emulated
def test_host_agent_speaks_the_protocol_like_the_python_agent(hls_artifact, host_agent):
    data = hls_artifact["weights"]
    sha = hashlib.sha256(data).digest()
    with SerialHost(host_agent.port, timeout=1.0) as host:
        with pytest.raises(AgentError, match=r"versions 1-1; the host offered 2-3.*UNSUPPORTED_VERSION"):
            host.request(Msg.HELLO, pack(Msg.HELLO, 2, 3, 4096), {Msg.INFO}, what="HELLO")
        info = host.hello()
        assert (info["device"], info["formats"], info["board"], info["max_payload"]) == ("zcu102", [".bin"], "host",
                                                                                        4096)
        # Before anything is uploaded or run: NOT_UPLOADED, NO_RESULT, and an upload chunk without a BEGIN.
        with pytest.raises(AgentError, match="refused RUN: no artifact with sha256 0000.*NOT_UPLOADED"):
            host.run(bytes(32), runs=1, warmup=0, threads=1)
        with pytest.raises(AgentError, match="NO_RESULT"):
            host.read_file({"id": FileId.RESULT, "size": 10, "sha256": "0" * 64})
        with pytest.raises(AgentError, match="no upload in progress.*BAD_OFFSET"):
            host.request(Msg.UPLOAD_DATA, pack(Msg.UPLOAD_DATA, 0, tail=b"x"), {Msg.ACK}, what="UPLOAD_DATA")
        with pytest.raises(AgentError, match="UNSUPPORTED_FORMAT"):
            host.upload(b"\0" * 64, ArtifactFormat.PTE)
        with pytest.raises(AgentError, match="RUN payload is 10 bytes.*BAD_PAYLOAD"):
            host.request(Msg.RUN, bytes(10), {Msg.RESULT}, what="RUN")
        with pytest.raises(AgentError, match="UNKNOWN_TYPE"):
            host.request(Msg.INFO, b"", {Msg.ACK}, what="INFO")

        # A damaged frame is NAKed with its seq; a re-sent request gets the remembered answer, not a second run.
        bad = bytearray(encode(Frame(Msg.PING, 0x4242, b"", 1)))
        bad[-1] ^= 0xFF
        (nak,) = _answers(host, bytes(bad), 0x4242)
        assert (nak.type, nak.payload) == (Msg.NAK, bytes([1]))
        begin = encode(Frame(Msg.UPLOAD_BEGIN, 0x5151, pack(Msg.UPLOAD_BEGIN, 64, ArtifactFormat.HLS, bytes(32)), 1))
        first, again = _answers(host, begin + begin, 0x5151, 2)
        assert first == again and first.type == Msg.ACK and unpack(Msg.ACK, first.payload)[0][0] == 0

        # Bytes that do not hash to the announced sha256 are discarded: HASH_MISMATCH, and a new upload starts at 0.
        wrong = bytes(64)
        assert host._ack(Msg.UPLOAD_BEGIN, pack(Msg.UPLOAD_BEGIN, 64, ArtifactFormat.HLS, b"\x11" * 32), "B") == 0
        assert host._ack(Msg.UPLOAD_DATA, pack(Msg.UPLOAD_DATA, 0, tail=wrong), "D") == 64
        with pytest.raises(AgentError, match=f"the 64 bytes received hash to {hashlib.sha256(wrong).hexdigest()[:16]}"
                                             r".*HASH_MISMATCH"):
            host._ack(Msg.UPLOAD_END, b"", "UPLOAD_END")
        with pytest.raises(AgentError, match="no upload in progress.*BAD_OFFSET"):
            host._ack(Msg.UPLOAD_DATA, pack(Msg.UPLOAD_DATA, 8, tail=wrong[:8]), "D")
        assert host._ack(Msg.UPLOAD_BEGIN, pack(Msg.UPLOAD_BEGIN, 64, ArtifactFormat.HLS, b"\x11" * 32), "B") == 0
        with pytest.raises(AgentError, match="chunk at 8\\+8 does not fit: holding 0 of 64 bytes.*BAD_OFFSET"):
            host._ack(Msg.UPLOAD_DATA, pack(Msg.UPLOAD_DATA, 8, tail=wrong[:8]), "D")

        # The cable is pulled during the upload ...
        def pull_the_plug(have, size):
            if have > size * 0.4:
                host._ser.close()
        with pytest.raises((PortError, EdgevitError)):
            host.upload(data, ArtifactFormat.HLS, pull_the_plug)
    assert any("disconnected" in line for line in host_agent.lines) or host_agent.proc.poll() is None

    with SerialHost(host_agent.port, timeout=1.0) as host:       # ... and plugged back in: it resumes
        host.hello()
        upload = host.upload(data, ArtifactFormat.HLS)
        assert 0.4 * len(data) < upload.resumed_at < len(data)
        assert upload.bytes_sent == len(data) - upload.resumed_at
        again = host.upload(data, ArtifactFormat.HLS)            # held complete: no bytes sent
        assert (again.resumed_at, again.bytes_sent) == (len(data), 0)

        # A run longer than a second sends BUSY at least every second: grow the run until one beat says >= 1 s.
        runs, beats = 100, []
        while not any(ms >= 1000 for ms in beats):
            beats = []
            result = host.run(sha, runs=runs, warmup=0, threads=1, on_busy=beats.append)
            runs *= 4
        assert beats[0] == 0 and beats == sorted(beats)
        assert all(b - a <= 1500 for a, b in zip(beats, beats[1:]))  # about every second (a loaded machine: slack)
        entry = next(f for f in result["files"] if f["id"] == FileId.RESULT)
        record = json.loads(host.read_file(entry))
        assert len(record["times_ms"]) == runs // 4
        with pytest.raises(AgentError, match=f"offset {entry['size'] + 1} is past the end.*BAD_OFFSET"):
            host.request(Msg.READ, pack(Msg.READ, FileId.RESULT, 16, entry["size"] + 1), {Msg.DATA}, what="READ")
        host.bye()


@pytest.mark.emulated
def test_host_agent_on_a_bad_cable_loses_nothing(hls_artifact):
    """tests/test_serial.py's fault test against the C agent: bytes dropped and flipped both ways on a pty cable."""
    from test_serial import NullModem

    data = hls_artifact["weights"]
    faults = {"to_agent": [(500, "flip", 1), (3000, "drop", 3), (7400, "flip", 1), (12000, "drop", 40)],
              "to_host": [(40, "flip", 1), (1000, "drop", 2), (2000, "flip", 1)]}
    modem = NullModem(faults)
    agent = HostAgent(hls_artifact["agent"], "--max-payload", "1024", serial=modem.agent_port)
    try:
        with SerialHost(modem.host_port, timeout=0.4, retries=4) as host:
            assert host.hello()["device"] == "zcu102"
            upload = host.upload(data, ArtifactFormat.HLS)
            result = host.run(hashlib.sha256(data).digest(), runs=2, warmup=0, threads=1)
            files = {f["name"]: host.read_file(f) for f in result["files"]}     # sha256-checked
            host.bye()
        assert len(modem.applied) == 7                                # every scheduled fault hit the stream
        assert upload.bytes_sent >= len(data) and len(json.loads(files["result.json"])["times_ms"]) == 2
        stats = host.stats
        assert stats.resent >= 5 and stats.naks >= 1 and stats.damaged_answers + stats.timeouts >= 2
    finally:
        agent.kill()
        modem.close()


@pytest.mark.emulated
def test_agent_killed_mid_run_stops_the_host_with_a_clear_error(hls_artifact, host_agent):
    data = hls_artifact["weights"]
    beats = []

    def kill_on_first_heartbeat(elapsed_ms):
        beats.append(elapsed_ms)
        host_agent.kill()                       # the board dies mid-run

    with SerialHost(host_agent.port, timeout=0.3, retries=2, busy_timeout=1.5) as host:
        host.hello()
        host.upload(data, ArtifactFormat.HLS)
        # Over TCP the dead process closes its socket: the host says so at once (on a UART: no heartbeat, as
        # tests/test_serial.py checks), naming the line, instead of waiting.
        with pytest.raises(PortError, match="socket disconnected. Was the adapter unplugged") as failure:
            host.run(hashlib.sha256(data).digest(), runs=10**6, warmup=0, threads=1, on_busy=kill_on_first_heartbeat)
    assert beats == [0] and host_agent.port in str(failure.value)
    assert host_agent.proc.returncode == -signal.SIGKILL


@pytest.mark.emulated
def test_edgevit_profile_of_a_zcu102_ps_pl_over_serial_matches_the_schedule_and_the_reference(hls_artifact,
                                                                                             host_agent, capsys):
    graph, formats, design, folder = (hls_artifact[k] for k in ("graph", "formats", "design", "folder"))
    assert get_backend("hls").wire_format == ArtifactFormat.HLS
    code = main(["profile", str(folder), "--via", "serial", "--port", host_agent.port, "--runs", "3", "--warmup", "1",
                 "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["target"]["device_info"]["profile"] == "zcu102" and report["artifact"]["backend"] == "hls"
    assert report["target"]["link"]["upload"]["size"] == len(hls_artifact["weights"])
    assert Path(report["files"]["json"]).parent == folder / "profiles"

    # The Python side of the same image: the fixed-point reference on the agent's deterministic input.
    patches = agent_input(graph.tokens, graph.patch_dim) / 2.0 ** formats.act.frac
    ref = run_reference(graph, patches, 0, formats, params=hls_artifact["params"])
    plan = schedule(graph, design, ref.expert_tokens, 0)
    expected = layer_cycles(plan, {i for i, b in enumerate(graph.blocks) if b.moe})
    assert [(r["name"], r["cycles"]) for r in report["ops"]] == expected        # per layer, cycle for cycle
    assert report["cycles_total"] == plan.total == sum(c for _, c in expected)
    assert report["wall_ms"]["runs"] == 3 and report["wall_ms"]["median"] == pytest.approx(plan.total / 300e3)
    head = np.ascontiguousarray(ref.tensors["head"], dtype="<i8").tobytes()
    assert report["output_sha256"] == hashlib.sha256(head).hexdigest()     # the output, bit for bit
    assert {r["op_type"] for r in report["ops"]} == {"linear", "layernorm", "attention", "gate", "expert"}


# -- a Cortex-M4 under QEMU running a flashed model -------------------------------------------------------------
_FC = [(32, 16, True), (16, 10, False)]     # (in, out, relu) of the fixture's two int8 layers


def _fixture_model(folder: Path) -> tuple[bytes, np.ndarray]:
    """A generated edgevit_model.h implementation (two int8 fully-connected layers, requantised with a
    multiplier and a rounding shift, as an int8 kernel library does), its model.evm bytes and the numpy output
    for the agent's deterministic input."""
    rng = np.random.default_rng(7)
    x = (((np.arange(_FC[0][0]) * 73 + 41) & 0xFF) - 128).astype(np.int64)
    evm, arrays, body = b"", [], []
    for n, (fan_in, out, relu) in enumerate(_FC):
        w = rng.integers(-128, 128, (out, fan_in)).astype(np.int64)
        b = rng.integers(-2000, 2000, out).astype(np.int64)
        acc = w @ x + b
        x = np.clip((acc * 1518500250 + (1 << 37)) >> 38, 0 if relu else -128, 127)    # mult 0.707 * 2^31, shift 7
        evm += w.astype(np.int8).tobytes() + b.astype("<i4").tobytes()
        arrays.append(f"static const int8_t w{n}[{out * fan_in}] = {{{', '.join(map(str, w.ravel()))}}};\n"
                      f"static const int32_t b{n}[{out}] = {{{', '.join(map(str, b))}}};\n")
        src, dst = ("input" if n == 0 else f"t{n - 1}"), ("output" if n == len(_FC) - 1 else f"t{n}")
        body.append(f"    c = counter();\n    fc({src}, w{n}, b{n}, {fan_in}, {out}, {int(relu)}, {dst});\n"
                    f"    counts[{n}] = counter() - c;\n")
    sha = hashlib.sha256(evm).digest()
    source = ('#include "edgevit_model.h"\n' + "".join(arrays) + f"""
const uint32_t ev_model_num_layers = {len(_FC)};
const char *const ev_model_layer_names[] = {{{', '.join(f'"fc{n}"' for n in range(len(_FC)))}}};
const char *const ev_model_layer_ops[] = {{{', '.join('"fully_connected_s8"' for _ in _FC)}}};
const uint8_t ev_model_sha256[32] = {{{', '.join(map(str, sha))}}};
const uint32_t ev_model_input_bytes = {_FC[0][0]}, ev_model_output_bytes = {_FC[-1][1]}, ev_model_arena_bytes = 16;
static int8_t t0[16];
static void fc(const int8_t *x, const int8_t *w, const int32_t *b, int n_in, int n_out, int relu, int8_t *y) {{
    for (int o = 0; o < n_out; o++) {{
        int32_t acc = b[o];
        for (int i = 0; i < n_in; i++) acc += (int32_t)x[i] * w[o * n_in + i];
        int64_t v = ((int64_t)acc * 1518500250 + ((int64_t)1 << 37)) >> 38;
        if (v > 127) v = 127;
        if (v < (relu ? 0 : -128)) v = relu ? 0 : -128;
        y[o] = (int8_t)v;
    }}
}}
int ev_model_run(const int8_t *input, int8_t *output, uint32_t *counts, ev_counter_fn counter) {{
    uint32_t c;
{''.join(body)}    return 0;
}}
""")
    (folder / "model.c").write_text(source)
    return evm, x.astype(np.int8)


@pytest.fixture(scope="module")
def m4_board(tmp_path_factory):
    folder = tmp_path_factory.mktemp("m4")
    evm, expected = _fixture_model(folder)
    firmware = build_agent("mps2-an386", folder / "agent.elf", runner="builtin_model", device="mps2-an386",
                           sources=[folder / "model.c"])
    with QemuBoard(firmware.path, "mps2-an386") as board:
        yield board, evm, expected


@pytest.mark.emulated
def test_cortex_m4_under_qemu_runs_its_flashed_model(m4_board):
    board, evm, expected = m4_board
    assert board.info["device"] == "mps2-an386" and board.info["counter"] == "instructions"
    with SerialHost(board.port, timeout=1.0) as host:
        info = host.hello()
        assert (info["board"], info["formats"], info["max_payload"]) == ("mps2-an386", [".evm"], 1024)
        with pytest.raises(AgentError, match="runs model [0-9a-f]{64} it was flashed with; flash the firmware built "
                                             "for your artifact.*UNSUPPORTED_FORMAT"):
            host.upload(evm + b"x", ArtifactFormat.MCU)
        with pytest.raises(AgentError, match="UNSUPPORTED_FORMAT"):
            host.upload(evm, ArtifactFormat.PTE)
        with pytest.raises(AgentError, match="NOT_UPLOADED"):
            host.run(bytes(32), runs=1, warmup=0, threads=1)
        upload = host.upload(evm, ArtifactFormat.MCU)               # already "held": it was flashed
        assert (upload.resumed_at, upload.bytes_sent) == (len(evm), 0)
        bad = bytearray(encode(Frame(Msg.PING, 0x0707, b"", 1)))
        bad[12] ^= 0x10
        (nak,) = _answers(host, bytes(bad), 0x0707)
        assert nak.type == Msg.NAK
        result = host.run(hashlib.sha256(evm).digest(), runs=3, warmup=1, threads=1)
        files = {f["name"]: host.read_file(f) for f in result["files"]}
        host.bye()
    assert np.frombuffer(files["output"], dtype=np.int8).tolist() == expected.tolist()
    record = json.loads(files["result.json"])
    rows = record["op_profile"]
    assert [(r["name"], r["op"], r["counter_kind"]) for r in rows] == [("fc0", "fully_connected_s8", "instructions"),
                                                                      ("fc1", "fully_connected_s8", "instructions")]
    # Instruction counts: the 32x16 layer does 512 MACs, the 16x10 one 160; each MAC is at least 2 instructions.
    assert rows[0]["count"] > rows[1]["count"] > 2 * 160 and rows[0]["count"] > 2 * 512
    assert record["device_info"]["output_sha256"] == hashlib.sha256(files["output"]).hexdigest()
    assert len(record["times_ms"]) == 3


@pytest.mark.emulated
@pytest.mark.parametrize("board", ["mps2-an500", "mps3-an547"])
def test_cortex_m7_and_m55_builds_boot_and_compute_the_same_output(board, tmp_path):
    evm, expected = _fixture_model(tmp_path)
    firmware = build_agent(board, tmp_path / "agent.elf", runner="builtin_model", device=board,
                           sources=[tmp_path / "model.c"])
    with QemuBoard(firmware.path, board) as emulated, SerialHost(emulated.port, timeout=1.0) as host:
        assert (host.hello()["board"], emulated.info["counter"]) == (board, "instructions")
        host.upload(evm, ArtifactFormat.MCU)
        result = host.run(hashlib.sha256(evm).digest(), runs=1, warmup=0, threads=1)
        output = host.read_file(next(f for f in result["files"] if f["id"] == FileId.OUTPUT))
        host.bye()
    assert np.frombuffer(output, dtype=np.int8).tolist() == expected.tolist()


@pytest.mark.unit
def test_bad_board_and_runner_names_are_clear_errors(tmp_path):
    with pytest.raises(EdgevitError, match="Unknown board 'mps9'.*host, mps2-an386"):
        build_agent("mps9", tmp_path / "x", runner="builtin_model", device="d")
    with pytest.raises(EdgevitError, match="Unknown runner 'echo'"):
        build_agent("host", tmp_path / "x", runner="echo", device="d")
    assert not (tmp_path / "x").exists()
    assert ErrorCode.HASH_MISMATCH == 6
