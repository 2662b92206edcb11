"""cocotb testbenches (run inside Icarus by :func:`edgevit.rtl.sim.simulate`; not imported otherwise).

The job (shape, tile count, seed, where to write the results) comes as JSON in ``EDGEVIT_RTL_JOB``; the bench
writes ``{"tiles", "mismatches", "cycles", "first_mismatch"}`` next to it.
"""
from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from .mac import ACT, BIAS, WEIGHT, TileShape
from .protocol import (
    decode_results,
    encode_bias,
    encode_inputs,
    encode_length,
    encode_weights,
    pack,
    random_tile,
    reference,
    unpack,
)


def _job() -> tuple[dict, TileShape]:
    job = json.loads(open(os.environ["EDGEVIT_RTL_JOB"]).read())
    return job, TileShape(job["rows"], job["cols"], job["max_in"])


def _write_result(job: dict, result: dict) -> None:
    with open(job["out"], "w") as f:
        json.dump(result, f)


def _compare(result: dict, k: int, tile, got: np.ndarray) -> None:
    want = reference(tile)
    result["tiles"] += 1
    if not np.array_equal(got, want):
        result["mismatches"] += 1
        if result["first_mismatch"] is None:
            result["first_mismatch"] = {"tile": k, "n": tile.n, "got": got.tolist(), "want": want.tolist()}
        result.setdefault("bad", []).append([k, tile.n])


async def _reset(dut) -> None:
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


@cocotb.test()
async def linear_unit_tiles(dut):
    """Random tiles through the LinearUnit's load port; every result compared with the numpy reference."""
    job, shape = _job()
    rng = np.random.default_rng(job["seed"])
    dut.we.value = 0
    dut.start.value = 0
    await _reset(dut)
    result = {"tiles": 0, "mismatches": 0, "cycles": 0, "first_mismatch": None}
    count = shape.rows * shape.cols
    for k in range(job["tiles"]):
        # every 8th tile at the longest input, the rest random lengths: the accumulator's worst case is covered
        tile = random_tile(rng, shape, n=shape.max_in if k % 8 == 0 else None)
        dut.we.value = 1
        for sel, words in ((0, [pack(row, WEIGHT.width) for row in tile.w]),
                           (1, [pack(tile.x[:, i], ACT.width) for i in range(tile.n)]),
                           (2, [pack(tile.b, BIAS.width)])):
            dut.wsel.value = sel
            for i, word in enumerate(words):
                dut.waddr.value = i
                dut.wdata.value = word
                await RisingEdge(dut.clk)
        dut.we.value = 0
        dut.n.value = tile.n
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        await RisingEdge(dut.done)
        await ReadOnly()                       # y settles in the same time step as done
        result["cycles"] += 2 * tile.n + 2
        got = unpack(dut.y.value.to_unsigned(), ACT.width, count).reshape(shape.rows, shape.cols)
        _compare(result, k, tile, got)
        await RisingEdge(dut.clk)
    _write_result(job, result)
    assert result["mismatches"] == 0, result["first_mismatch"]


async def _send(dut, data: bytes, divisor: int) -> None:
    for byte in data:
        for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
            dut.rx.value = bit
            await ClockCycles(dut.clk, divisor)


async def _receiver(dut, divisor: int, sink: bytearray) -> None:
    while True:
        await FallingEdge(dut.tx)
        await ClockCycles(dut.clk, divisor + divisor // 2)
        byte = 0
        for i in range(8):
            byte |= int(dut.tx.value) << i
            await ClockCycles(dut.clk, divisor)
        sink.append(byte)


async def _recv(dut, sink: bytearray, nbytes: int, divisor: int) -> bytes:
    for _ in range(nbytes * 10 * divisor * 4 + 200 * divisor):   # generous: a reply starts within a few bits
        if len(sink) >= nbytes:
            break
        await ClockCycles(dut.clk, divisor)
    data = bytes(sink[:nbytes])
    del sink[:nbytes]
    return data


@cocotb.test()
async def uart_protocol(dut):
    """The board's top level over its UART pins: identify, a bad length, an unknown command, then random tiles."""
    job, shape = _job()
    divisor = job["divisor"]
    rng = np.random.default_rng(job["seed"])
    dut.rx.value = 1
    await _reset(dut)
    sink = bytearray()
    cocotb.start_soon(_receiver(dut, divisor, sink))
    result = {"tiles": 0, "mismatches": 0, "cycles": 0, "first_mismatch": None, "checks": []}

    async def ask(data: bytes, nbytes: int) -> bytes:
        await _send(dut, data, divisor)
        return await _recv(dut, sink, nbytes, divisor)

    ident = await ask(b"I", 6)
    want = b"EV" + bytes([shape.rows, shape.cols]) + shape.max_in.to_bytes(2, "little")
    result["checks"].append(["identify", ident.hex(), ident == want])
    bad = await ask(encode_length(shape.max_in + 1), 1)
    result["checks"].append(["length out of range", bad.hex(), bad == b"?"])
    unknown = await ask(b"Z", 1)
    result["checks"].append(["unknown command", unknown.hex(), unknown == b"?"])
    for k in range(job["tiles"]):
        tile = random_tile(rng, shape, n=int(rng.integers(1, min(shape.max_in, 6) + 1)))
        acks = b""
        for payload in (encode_length(tile.n), encode_bias(tile.b), encode_weights(tile.w), encode_inputs(tile.x)):
            acks += await ask(payload, 1)
        result["checks"].append([f"tile {k} acks", acks.hex(), acks == b"KKKK"])
        data = await ask(b"R", shape.rows * shape.cols * 3)
        _compare(result, k, tile, decode_results(data, shape))
    _write_result(job, result)
    assert all(ok for _, _, ok in result["checks"]), result["checks"]
    assert result["mismatches"] == 0, result["first_mismatch"]
