"""Start, wait for and stop local server processes (`mlflow models serve`, `mlflow server`).

Shared by the serving/production tests and the benchmarks, so there is one way to run a server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


class ServerError(RuntimeError):
    """The server exited or never became ready; the message ends with its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A server command in its own process group, logged to a file, ready when `ready_path` answers 200."""

    def __init__(self, cmd: list[str], port: int, cwd: Path, env: dict, log_path: Path, ready_path: str = "/ping"):
        self.cmd, self.port, self.cwd, self.env, self.log_path, self.ready_path = cmd, port, Path(cwd), env, Path(log_path), ready_path
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def log_tail(self, n: int = 5000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def start(self, timeout: float = 240) -> str:
        import requests

        with open(self.log_path, "ab") as log:
            # Own session: the CLI and the uvicorn/gunicorn workers it spawns are stopped together.
            self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"{' '.join(self.cmd[:4])} exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return self.url
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"{self.url}{self.ready_path} did not answer within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> "ServerProcess":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
