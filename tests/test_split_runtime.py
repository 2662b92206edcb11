"""Split inference on real processes: the exported graph cut into stages, stage artifacts in ExecuTorch, three
`edgevit worker` processes on loopback talking gRPC to the coordinator; a worker killed mid-run, a worker that
stalls (SIGSTOP), a worker holding another plan, every worker gone. Waits are on events: a worker's "listening"
line, the coordinator's image_done callback; never on sleeps."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from edgevit.split.build import build_stages
from edgevit.split.coordinator import LOCAL, SplitRunError, run_pipeline
from edgevit.split.graph import split_units, stage_modules, unit_key
from edgevit.split.wire import decode, encode, protos, services

MODEL = "efficientformer_micro"


@pytest.mark.unit
def test_unit_keys_name_blocks():
    assert unit_key("stages.0.blocks.1.mlp.fc1") == "stages.0.blocks.1"
    assert unit_key("stem.0") == "stem"
    assert unit_key("stages.1.downsample") == "stages.1"
    assert unit_key("head") == "head"


@pytest.mark.unit
def test_boundary_encodings_round_trip_within_their_step():
    x = torch.randn(1, 16, 8, 8) * 3
    assert torch.equal(decode(encode(x, "float32")), x)
    assert (decode(encode(x, "float16")) - x).abs().max() <= x.abs().max() * 2 ** -10
    step = (x.max() - x.min()) / 255
    assert (decode(encode(x, "int8")) - x).abs().max() <= step / 2 + 1e-6
    assert len(encode(x, "int8").data) == x.numel() and len(encode(x, "float16").data) == 2 * x.numel()


@pytest.fixture(scope="module")
def graph():
    return split_units(MODEL)


@pytest.mark.integration
def test_cuts_carry_one_tensor_and_every_split_is_exact(graph):
    assert len(graph.units) >= 8 and graph.units[0].name == "stem" and graph.units[-1].name == "head"
    assert sum(u.macs for u in graph.units) > 3e6
    x = torch.randn(graph.input_shape)
    whole = graph.prepared.deployed(x)
    for ends in ([len(graph.units) - 1], [2, len(graph.units) - 1], list(range(len(graph.units)))):
        y = x
        for stage in stage_modules(graph, ends):
            y = stage(y)
        assert torch.equal(y, whole)


@pytest.fixture(scope="module")
def stages(graph):
    """Three fp32 ExecuTorch stage artifacts, verified as a chain against the whole model."""
    n = len(graph.units)
    built, agreement = build_stages(graph, [3, 8, n - 1], ["executorch"] * 3, "fp32", num_calib=4, num_verify=2)
    assert agreement.max_abs_error < 1e-4
    return [b.artifact for b in built]


class Workers:
    """`edgevit worker` processes on loopback; each one's address comes from its "listening" line."""

    def __init__(self, count: int):
        self.procs, self.addresses = [], []
        for _ in range(count):
            p = subprocess.Popen([sys.executable, "-m", "edgevit", "worker", "--listen", "127.0.0.1:0"],
                                 stdout=subprocess.PIPE, text=True)
            self.procs.append(p)
        for p in self.procs:
            line = p.stdout.readline()            # blocks until the worker has bound its port
            assert line.startswith("edgevit worker listening on"), line
            self.addresses.append(line.split()[-1])

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
            p.wait(timeout=60)


@pytest.fixture
def workers():
    w = Workers(3)
    yield w
    w.close()


def _reference(graph, images):
    with torch.no_grad():
        return torch.cat([graph.prepared.deployed(images[i:i + 1]) for i in range(len(images))])


@pytest.mark.integration
@pytest.mark.slow
def test_a_worker_killed_mid_stream_loses_and_duplicates_nothing(graph, stages, workers):
    images = torch.randn(12, *graph.input_shape[1:], generator=torch.Generator().manual_seed(0))
    seen = []

    def on_event(kind, info):
        seen.append(kind)
        if kind == "image_done" and info["done"] == 4:
            workers.procs[1].kill()                # the middle stage's worker, with images in flight

    report = run_pipeline("plan-1", stages, workers.addresses, images, on_event=on_event)
    assert len(report.outputs) == 12 and seen.count("image_done") == 12
    assert torch.allclose(torch.cat(report.outputs), _reference(graph, images), atol=1e-5)
    (failure,) = report.failures
    assert failure["stages"] == [1] and failure["images_done_before"] >= 4
    assert failure["recovery_s"] < 60
    killed, moved = failure["worker"], failure["moved_to"][1]
    assert killed.endswith(workers.addresses[1]) and moved != killed
    stage1 = [h[1] for h in report.handled_by]
    assert set(stage1) == {killed, moved} and stage1[-1] == moved   # each image's stage 1 ran exactly once
    assert stage1[:4] == [killed] * 4


@pytest.mark.integration
@pytest.mark.slow
def test_a_stalled_worker_is_detected_and_its_images_resent(graph, stages, workers):
    images = torch.randn(8, *graph.input_shape[1:], generator=torch.Generator().manual_seed(1))

    def on_event(kind, info):
        if kind == "image_done" and info["done"] == 2:
            os.kill(workers.procs[2].pid, signal.SIGSTOP)    # alive but silent: only the deadline can tell

    report = run_pipeline("plan-2", stages, workers.addresses, images, on_event=on_event, stall_timeout=3.0)
    assert torch.allclose(torch.cat(report.outputs), _reference(graph, images), atol=1e-5)
    assert [f["stages"] for f in report.failures] == [[2]]
    assert report.failures[0]["reason"].startswith(("stalled", "UNAVAILABLE", "DEADLINE", "CANCELLED"))


@pytest.mark.integration
def test_a_worker_holding_another_plan_is_refused_by_name(stages, workers):
    import grpc

    stub = services().StageWorkerStub(grpc.insecure_channel(workers.addresses[0]))
    s = stages[0]
    stub.Load(protos().LoadRequest(plan_id="plan-old", stage=0, backend=s.backend, artifact=s.data, sha256=s.sha256))
    images = torch.randn(2, 3, 64, 64)
    with pytest.raises(SplitRunError, match="refused the plan: .*holds no stage 0 of plan plan-new .*plan-old"):
        run_pipeline("plan-new", stages[:1], workers.addresses[:1], images, load=False)
    with pytest.raises(grpc.RpcError) as corrupted:
        stub.Load(protos().LoadRequest(plan_id="p", stage=0, backend=s.backend, artifact=s.data[:-1], sha256=s.sha256))
    assert corrupted.value.code() == grpc.StatusCode.DATA_LOSS


@pytest.mark.integration
@pytest.mark.slow
def test_with_every_worker_gone_the_coordinator_runs_the_stages_itself(graph, stages, workers):
    images = torch.randn(6, *graph.input_shape[1:], generator=torch.Generator().manual_seed(2))

    def on_event(kind, info):
        if kind == "image_done" and info["done"] == 1:
            for p in workers.procs:
                p.kill()

    report = run_pipeline("plan-3", stages, workers.addresses, images, on_event=on_event)
    assert torch.allclose(torch.cat(report.outputs), _reference(graph, images), atol=1e-5)
    # Killed when the first image was done: at most images 1 and 2 (the window) were in the last stage then, so
    # images 3.. reached it only afterwards and ran it locally (their earlier stages may have run before the kill).
    assert len(report.failures) == 3 and all(h[-1] == LOCAL for h in report.handled_by[3:])


@pytest.fixture
def shaped_worker():
    """A worker in its own network namespace behind a veth pair whose host side is shaped by `tc tbf` to 40 Mbit/s
    (the kernel here has no netem; latency is the coordinator's --link-delay-ms interceptor instead)."""
    ns, host_if, ns_if = "evsplit", "evsplit-h", "evsplit-n"
    setup = [["ip", "netns", "add", ns],
             ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
             ["ip", "link", "set", ns_if, "netns", ns],
             ["ip", "addr", "add", "10.77.0.1/30", "dev", host_if], ["ip", "link", "set", host_if, "up"],
             ["ip", "netns", "exec", ns, "ip", "addr", "add", "10.77.0.2/30", "dev", ns_if],
             ["ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up"],
             ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
             ["tc", "qdisc", "add", "dev", host_if, "root", "tbf", "rate", "40mbit", "burst", "32kbit",
              "latency", "400ms"]]
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for cmd in setup:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            if os.environ.get("CI") and os.geteuid() == 0:
                pytest.fail(f"`{' '.join(cmd)}` failed: {done.stderr.strip()}")
            pytest.skip(f"network namespaces / tc not available here: `{' '.join(cmd)}`: {done.stderr.strip()}")
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "edgevit", "worker", "--listen",
                             "10.77.0.2:0"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    try:
        assert line.startswith("edgevit worker listening on"), line
        yield line.split()[-1]
    finally:
        proc.kill()
        proc.wait(timeout=60)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.emulated
@pytest.mark.slow
def test_a_stage_over_a_shaped_link_is_bounded_by_its_bandwidth(graph, shaped_worker):
    """The whole model as one stage on the shaped worker: every image's 48 KiB input crosses the 40 Mbit/s link,
    so the run cannot be faster than the bytes allow (a lower bound on time: no race with the machine's load)."""
    from edgevit.split.build import build_stages as build

    (whole,), _ = build(graph, [len(graph.units) - 1], ["executorch"], "fp32", num_calib=2, num_verify=2)
    images = torch.randn(24, *graph.input_shape[1:], generator=torch.Generator().manual_seed(5))
    report = run_pipeline("plan-shaped", [whole.artifact], [shaped_worker], images, window=4)
    assert torch.allclose(torch.cat(report.outputs), _reference(graph, images), atol=1e-5)
    sent_bits = images[0].numel() * 4 * 8 * len(images)
    assert report.seconds >= 0.9 * sent_bits / 40e6


@pytest.mark.integration
def test_link_delay_is_added_to_every_frame(stages, workers):
    """--link-delay-ms: the gRPC interceptor holds each frame back (a lower bound on time: no race with load)."""
    images = torch.randn(4, 3, 64, 64)
    report = run_pipeline("plan-delay", stages[:1], workers.addresses[:1], images, window=1, link_delay_s=0.05)
    assert len(report.outputs) == 4 and report.seconds >= 4 * 0.05
