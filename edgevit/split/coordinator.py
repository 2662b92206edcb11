"""The coordinator: streams images through the stage workers over gRPC, survives workers that die or stall.

One bidirectional stream per worker; the coordinator relays each boundary tensor to the worker that owns
the next stage (a star: phones dial out, and a failed worker never strands a tensor another worker holds).
Each stage keeps at most ``window`` images in flight. A worker is declared failed when its stream breaks
(process gone, connection lost: gRPC status + keepalive) or when a frame sent to it is not answered within
``stall_timeout`` seconds. Its stages are then re-planned over the workers that remain (the stage artifact
is loaded on the least-loaded live worker) or, with none left, run by the coordinator itself; the images it
held are sent again from the boundary the coordinator kept. Every image is answered exactly once, in order;
late answers from a failed worker are dropped by (image, stage).
"""
from __future__ import annotations

import heapq
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..backends import get_backend
from ..errors import EdgevitError
from .wire import GRPC_OPTIONS, decode, encode, protos, services

__all__ = ["StageArtifact", "RunReport", "SplitRunError", "run_pipeline", "LOCAL"]

LOCAL = "coordinator (local fallback)"


class SplitRunError(EdgevitError):
    """A pipeline run that cannot go on (a worker refusing the plan, no stage owner left, bad input)."""


@dataclass(frozen=True)
class StageArtifact:
    index: int
    backend: str
    data: bytes
    sha256: str
    out_dtype: str = "float32"


@dataclass
class RunReport:
    outputs: list[torch.Tensor]
    handled_by: list[list[str]]                       # [image][stage] -> worker name
    stage_compute_ms: dict[int, list[float]] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    plan_id: str = ""

    @property
    def images_per_s(self) -> float:
        return len(self.outputs) / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {"plan_id": self.plan_id, "images": len(self.outputs), "seconds": round(self.seconds, 4),
                "images_per_s": round(self.images_per_s, 3), "handled_by": self.handled_by,
                "stage_compute_ms": {s: round(sum(v) / len(v), 4) for s, v in self.stage_compute_ms.items() if v},
                "failures": self.failures}


def _delay_interceptor(delay_s: float):
    """Adds a one-way delay to every frame and call sent (a link's latency; this kernel has no netem)."""
    import grpc

    class DelayInterceptor(grpc.StreamStreamClientInterceptor, grpc.UnaryUnaryClientInterceptor):
        def intercept_stream_stream(self, continuation, details, request_iterator):
            def delayed():
                for request in request_iterator:
                    time.sleep(delay_s)   # emulates the link, not a test wait
                    yield request
            return continuation(details, delayed())

        def intercept_unary_unary(self, continuation, details, request):
            time.sleep(delay_s)
            return continuation(details, request)

    return DelayInterceptor()


class _Worker:
    """One connection: a channel, its Run stream (fed by a queue) and a reader thread posting events."""

    def __init__(self, address: str, events: queue.Queue, delay_s: float):
        import grpc

        self.address = address
        self.name = address
        self.events = events
        channel = grpc.insecure_channel(address, options=GRPC_OPTIONS)
        if delay_s:
            channel = grpc.intercept_channel(channel, _delay_interceptor(delay_s))
        self.channel = channel
        self.stub = services().StageWorkerStub(channel)
        self.requests: queue.Queue = queue.Queue()
        self.call = None
        self.alive = True

    def load(self, plan_id: str, stage: StageArtifact, threads: int, timeout: float) -> None:
        reply = self.stub.Load(protos().LoadRequest(plan_id=plan_id, stage=stage.index, backend=stage.backend,
                                                    artifact=stage.data, sha256=stage.sha256, threads=threads,
                                                    out_dtype=stage.out_dtype), timeout=timeout)
        self.name = f"{reply.worker}@{self.address}"

    def start(self) -> None:
        self.call = self.stub.Run(iter(self.requests.get, None))
        threading.Thread(target=self._read, daemon=True, name=f"split-read-{self.address}").start()

    def _read(self) -> None:
        try:
            for frame in self.call:
                self.events.put(("frame", self, frame))
            self.events.put(("closed", self, None))
        except Exception as e:  # grpc.RpcError: the worker is gone, stalled and cancelled, or refused
            self.events.put(("error", self, e))

    def send(self, frame) -> None:
        self.requests.put(frame)

    def close(self) -> None:
        self.alive = False
        self.requests.put(None)
        if self.call is not None:
            self.call.cancel()
        self.channel.close()


def _status(error) -> tuple[str, str]:
    code = getattr(error, "code", lambda: None)()
    details = getattr(error, "details", lambda: str(error))()
    return (code.name if code is not None else type(error).__name__), details


def run_pipeline(plan_id: str, stages: list[StageArtifact], workers: list[str], inputs: torch.Tensor,
                 assignment: list[int] | None = None, window: int = 2, stall_timeout: float = 10.0,
                 link_delay_s: float = 0.0, threads: int = 1, load_timeout: float = 600.0,
                 on_event: Callable[[str, dict], None] | None = None, load: bool = True) -> RunReport:
    """Run ``inputs`` (N images, each a batch-1 tensor row) through the stages.

    ``assignment[s]``: index into ``workers`` that runs stage ``s`` (default: stage s on worker s). ``on_event``
    is called with ("image_done", {...}) and ("worker_failed", {...}) as they happen. ``load=False``: the
    workers already hold the stages (loaded by an earlier run of the same plan)."""
    notify = on_event or (lambda kind, info: None)
    assignment = assignment or list(range(len(stages)))
    if len(assignment) != len(stages) or any(not 0 <= a < len(workers) for a in assignment):
        raise SplitRunError(f"{len(stages)} stages need an assignment to the {len(workers)} workers; got "
                            f"{assignment}. Give one worker address per stage (or fewer stages).")
    events: queue.Queue = queue.Queue()
    conns = [_Worker(a, events, link_delay_s) for a in workers]
    owner: list[_Worker | str | None] = [conns[a] for a in assignment]
    local_runners: dict[int, object] = {}
    try:
        for s, stage in enumerate(stages):
            if load:
                _load(owner[s], plan_id, stage, threads, load_timeout)
        for c in conns:
            c.start()
        return _schedule(plan_id, stages, conns, owner, local_runners, inputs, window, stall_timeout, threads,
                         load_timeout, events, notify)
    finally:
        for c in conns:
            c.close()


def _load(worker: _Worker, plan_id: str, stage: StageArtifact, threads: int, timeout: float) -> None:
    try:
        worker.load(plan_id, stage, threads, timeout)
    except Exception as e:
        code, details = _status(e)
        raise SplitRunError(f"Worker {worker.address} could not load stage {stage.index} ({code}: {details}). "
                            "Is `edgevit worker` running there, with the backend installed?") from None


def _schedule(plan_id, stages, conns, owner, local_runners, inputs, window, stall_timeout, threads, load_timeout,
              events, notify) -> RunReport:
    n, last = inputs.shape[0], len(stages) - 1
    waiting: list[list[int]] = [[] for _ in stages]             # heaps of image numbers ready for each stage
    boundary: dict[tuple[int, int], torch.Tensor] = {}          # (image, stage) -> the tensor going into it
    inflight: list[dict[int, tuple[object, float]]] = [{} for _ in stages]
    results: dict[int, torch.Tensor] = {}
    handled = [["" for _ in stages] for _ in range(n)]
    compute: dict[int, list[float]] = {s: [] for s in range(len(stages))}
    failures: list[dict] = []
    for i in range(n):
        boundary[(i, 0)] = inputs[i:i + 1]
        heapq.heappush(waiting[0], i)
    started = time.perf_counter()

    def finish(i: int, s: int, out: torch.Tensor, who: str, ms: float) -> None:
        handled[i][s] = who
        compute[s].append(ms)
        boundary.pop((i, s), None)
        if s == last:
            results[i] = out
            notify("image_done", {"image": i, "done": len(results)})
        else:
            boundary[(i, s + 1)] = out
            heapq.heappush(waiting[s + 1], i)

    def dispatch() -> None:
        for s in range(len(stages)):
            while waiting[s] and len(inflight[s]) < window:
                i = heapq.heappop(waiting[s])
                who = owner[s]
                if isinstance(who, str):                         # the local fallback runs it here, now
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        out = local_runners[s](boundary[(i, s)])
                    finish(i, s, out, LOCAL, (time.perf_counter() - t0) * 1e3)
                    continue
                inflight[s][i] = (who, time.monotonic())
                who.send(protos().Frame(seq=i, plan_id=plan_id, stage=s,
                                        tensor=encode(boundary[(i, s)], stages[s - 1].out_dtype if s else "float32")))

    def reassign() -> dict:
        """Every stage without a live owner goes to the least-loaded live worker (its artifact loaded there), or,
        with none left, to the coordinator itself."""
        moved = {}
        for s, who in enumerate(owner):
            if who is LOCAL or (who is not None and who.alive):
                continue
            while True:
                live = [c for c in conns if c.alive]
                if not live:
                    local_runners[s] = get_backend(stages[s].backend).load(stages[s].data, threads=threads)
                    owner[s] = LOCAL
                    break
                target = min(live, key=lambda c: sum(o is c for o in owner))
                try:
                    _load(target, plan_id, stages[s], threads, load_timeout)
                except SplitRunError as e:
                    fail(target, f"could not load stage {s}: {e}")
                    continue
                owner[s] = target
                break
            moved[s] = owner[s] if isinstance(owner[s], str) else owner[s].name
        return moved

    def fail(worker: _Worker, reason: str) -> None:
        if not worker.alive:
            return
        detected = time.perf_counter()
        worker.close()
        lost = [s for s, o in enumerate(owner) if o is worker]
        for fl, queue_ in zip(inflight, waiting):             # what it held goes back to the stage's queue
            for i in sorted(i for i, (w, _) in fl.items() if w is worker):
                del fl[i]
                heapq.heappush(queue_, i)
        for s in lost:
            owner[s] = None
        record = {"worker": worker.name, "reason": reason, "stages": lost, "at_s": round(detected - started, 4),
                  "images_done_before": len(results)}
        failures.append(record)
        record["moved_to"] = reassign()
        record["recovery_s"] = round(time.perf_counter() - detected, 4)
        notify("worker_failed", record)

    while len(results) < n:
        dispatch()
        if len(results) == n:
            break
        oldest = min((t for fl in inflight for (_, t) in fl.values()), default=None)
        timeout = None if oldest is None else max(0.0, oldest + stall_timeout - time.monotonic())
        try:
            kind, worker, payload = events.get(timeout=timeout)
        except queue.Empty:
            now = time.monotonic()
            for fl in inflight:
                for w, t in list(fl.values()):
                    if now - t >= stall_timeout:
                        fail(w, f"stalled: no answer within {stall_timeout:g} s")
            continue
        if kind == "frame":
            s, i = payload.stage, payload.seq
            entry = inflight[s].get(i) if 0 <= s < len(stages) else None
            if entry is None or entry[0] is not worker:
                continue                                          # a late answer from a worker declared failed
            del inflight[s][i]
            finish(i, s, decode(payload.tensor), worker.name, payload.compute_ms)
        elif worker.alive:
            code, details = _status(payload) if payload is not None else ("CLOSED", "stream ended")
            if code == "FAILED_PRECONDITION":
                raise SplitRunError(f"Worker {worker.address} refused the plan: {details}.")
            fail(worker, f"{code}: {details}")
    return RunReport(outputs=[results[i] for i in range(n)], handled_by=handled, stage_compute_ms=compute,
                     failures=failures, seconds=time.perf_counter() - started, plan_id=plan_id)
