"""`astrofm serve` as a child process on a free loopback port, ready before use and stopped after: for
pipelines, the load benchmark and the process test.

    with served(["--model", M, "--index", I], log_path=Path("serve.log")) as server:
        httpx.get(f"{server.url}/v1/info")
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READY_SECONDS = 120.0  # imports and the model load, on a busy 2-core machine


class ServerStartError(RuntimeError):
    """The server exited, or did not answer /health, before the deadline; the message ends with its log."""


@dataclass
class ServedProcess:
    process: subprocess.Popen
    url: str
    log_path: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.is_file() else ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(server: ServedProcess, deadline_s: float = READY_SECONDS) -> None:
    """Poll /health until it answers 200; a bounded loop that fails fast when the process exits."""
    import httpx

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerStartError(f"astrofm serve exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise ServerStartError(f"astrofm serve not ready after {deadline_s:g} s:\n{server.log_tail()}")


def stop(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """SIGTERM (uvicorn finishes open requests), then SIGKILL if it hangs."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


@contextmanager
def served(serve_args: list[str], log_path: Path, env: dict[str, str] | None = None, port: int | None = None,
           ready_s: float = READY_SECONDS) -> Iterator[ServedProcess]:
    """Run `astrofm serve SERVE_ARGS --host 127.0.0.1 --port PORT` (a free port by default) with stdout and
    stderr in `log_path`; yield once /health answers; stop the process on leaving."""
    port = port or free_port()
    command = [sys.executable, "-m", "astrofm.cli.main", "serve", *serve_args, "--host", "127.0.0.1",
               "--port", str(port)]
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    log_path = Path(log_path)
    with log_path.open("w") as log_file:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    server = ServedProcess(process, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_ready(server, ready_s)
        yield server
    finally:
        stop(process)
