"""What the benchmark scripts in this folder share: a free loopback port, and stopping the
processes a run started. Each script runs as ``python3 tests/bench/NAME.py``, so this folder is
on its import path."""

import socket
import subprocess


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(procs, timeout=10):
    """Terminates every process, then waits for each (``timeout`` seconds) and kills a laggard."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
