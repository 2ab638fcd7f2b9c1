"""Log lines (gateway/observability/logs.py): written whole and in order, batched per loop step, never lost at close."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import threading

import orjson

from gateway.observability.logs import EventLog
from gateway.settings import LoggingSettings


def _lines(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_lines_of_one_loop_step_are_written_together_whole_and_in_order(tmp_path):
    log = EventLog(LoggingSettings(output=str(tmp_path / "gw.log")), tmp_path)
    try:
        for n in range(100):  # ~15 KB: more than one PIPE_BUF-sized write
            log.emit(20, "access", {"request_id": f"r{n}", "pad": "x" * 100})
        assert (tmp_path / "gw.log").read_bytes() == b""  # the step has not ended yet
        await asyncio.sleep(0)
        lines = _lines(tmp_path / "gw.log")
        assert [line["request_id"] for line in lines] == [f"r{n}" for n in range(100)]
        assert len(log.recent) == 100
    finally:
        log.close()


async def test_close_writes_what_the_last_step_left(tmp_path):
    log = EventLog(LoggingSettings(output=str(tmp_path / "gw.log")), tmp_path)
    log.emit(30, "log", {"msg": "shutting down"})
    log.close()
    assert [line["msg"] for line in _lines(tmp_path / "gw.log")] == ["shutting down"]


def test_lines_from_a_thread_without_a_loop_are_written_at_once(tmp_path):
    log = EventLog(LoggingSettings(output=str(tmp_path / "gw.log")), tmp_path)
    try:
        worker = threading.Thread(target=log.emit, args=(20, "log", {"msg": "from a thread"}))
        worker.start()
        worker.join()
        assert [line["msg"] for line in _lines(tmp_path / "gw.log")] == ["from a thread"]
    finally:
        log.close()


def test_lines_of_two_processes_sharing_a_pipe_never_interleave(tmp_path):
    """Workers share stdout: a batch is written in whole lines of at most PIPE_BUF bytes per write."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # a small pipe: big writes would be split, then interleave
    pids = []
    for worker in range(2):
        pid = os.fork()
        if pid == 0:  # a worker: its own loop, 300 lines in 3 steps, to the shared pipe
            os.close(read_end)
            try:
                log = EventLog(LoggingSettings(output="none"))
                log.fd = write_end

                async def steps(worker=worker, log=log):
                    for step in range(3):
                        for n in range(100):
                            log.emit(20, "access", {"w": worker, "n": step * 100 + n, "pad": "y" * 200})
                        await asyncio.sleep(0)

                asyncio.run(steps())
                log.close()
            finally:
                os._exit(0)
        pids.append(pid)
    os.close(write_end)
    data = b""
    signal.alarm(20)  # a child that never finishes fails the test instead of hanging the suite
    try:
        while chunk := os.read(read_end, 65536):
            data += chunk
    finally:
        signal.alarm(0)
        os.close(read_end)
    for pid in pids:
        os.waitpid(pid, 0)
    lines = [orjson.loads(line) for line in data.splitlines()]  # raises if two lines were cut into each other
    for worker in range(2):
        assert [line["n"] for line in lines if line["w"] == worker] == list(range(300))
