"""``edgevit worker``: a gRPC server that hosts pipeline stages and runs the frames streamed to it.

Stages are loaded by the coordinator (``Load``: artifact bytes + sha256, checked before loading) and run
with the backend that built them. ``Run`` is one bidirectional stream: each frame in is answered by one
frame out, same sequence number; a frame for a plan or stage this worker does not hold is refused with
FAILED_PRECONDITION, which the coordinator turns into a clear error.
"""
from __future__ import annotations

import hashlib
import socket
import threading
import time
from concurrent import futures

import torch

from ..backends import get_backend
from .wire import GRPC_OPTIONS, decode, encode, protos, services

__all__ = ["StageWorker", "serve"]


class StageWorker:
    """The servicer: loaded stages keyed by (plan_id, stage)."""

    def __init__(self, device: str, threads: int = 1):
        self.device = device
        self.threads = threads
        self.name = f"{socket.gethostname()}/{device}"
        self.stages: dict[tuple[str, int], tuple[object, str]] = {}   # -> (runner, out_dtype)
        self.lock = threading.Lock()

    def Load(self, request, context):  # noqa: N802 - gRPC method name
        import grpc

        if hashlib.sha256(request.artifact).hexdigest() != request.sha256:
            context.abort(grpc.StatusCode.DATA_LOSS, f"stage {request.stage} artifact does not match its sha256 "
                                                     "(corrupted in transfer)")
        started = time.perf_counter()
        try:
            runner = get_backend(request.backend).load(request.artifact, threads=request.threads or self.threads)
        except Exception as e:  # any backend failure goes back to the coordinator, named
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"cannot load stage {request.stage} with backend "
                                                               f"{request.backend}: {e}")
        with self.lock:
            self.stages[(request.plan_id, request.stage)] = (runner, request.out_dtype or "float32")
        return protos().LoadReply(worker=self.name, load_ms=(time.perf_counter() - started) * 1e3)

    def Run(self, request_iterator, context):  # noqa: N802
        import grpc

        for frame in request_iterator:
            with self.lock:
                entry = self.stages.get((frame.plan_id, frame.stage))
                held = sorted({p for p, _ in self.stages})
            if entry is None:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"worker {self.name} holds no stage {frame.stage} of plan {frame.plan_id} (it holds "
                              f"plan(s) {', '.join(held) or 'none'}): rebuild or reload the plan")
            runner, out_dtype = entry
            started = time.perf_counter()
            with torch.no_grad():
                out = runner(decode(frame.tensor))
            yield protos().Frame(seq=frame.seq, plan_id=frame.plan_id, stage=frame.stage,
                                 tensor=encode(out, out_dtype), compute_ms=(time.perf_counter() - started) * 1e3)


def serve(listen: str, device: str, threads: int = 1, ready=None) -> None:
    """Serve until interrupted. ``ready(address)`` is called once the port is bound (port 0: the OS picks)."""
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=GRPC_OPTIONS)
    services().add_StageWorkerServicer_to_server(StageWorker(device, threads), server)
    host = listen.rsplit(":", 1)[0]
    port = server.add_insecure_port(listen)
    if port == 0:
        from ..errors import EdgevitError
        raise EdgevitError(f"Cannot listen on {listen}: the address is in use or not local. Pick another port.")
    server.start()
    if ready is not None:
        ready(f"{host}:{port}")
    server.wait_for_termination()
