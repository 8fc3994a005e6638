"""Two CPU processes (gloo) running one worker each, for the data-parallel training tests."""

from __future__ import annotations

import socket
from collections.abc import Callable


def run_ranks(worker: Callable, run_dir: str, world: int = 2) -> dict[int, list]:
    """Start ``worker(rank, world, port, run_dir, queue)`` in ``world`` spawned processes; returns
    {rank: what the worker put on the queue} once every process exited 0. ``worker`` must be a
    module-level function (spawn pickles it by name)."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, world, port, run_dir, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results
