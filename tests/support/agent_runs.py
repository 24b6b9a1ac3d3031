"""Running tsd-agent for real while a test plays the person: in a thread or as a process.

The agent's output is collected as it is written, so a test can wait for the code the
agent prints (``run.out.wait_for(USER_CODE_LINE)``), act on it in the browser, and then
``run.finish()`` for the exit code.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

WAIT = 30.0
# What the agent prints (tsd_agent/commands.py).
USER_CODE_LINE = re.compile(r"^ {4}([B-DF-HJ-NP-TV-XZ]{4}-[B-DF-HJ-NP-TV-XZ]{4})$", re.M)
QR_LINE = re.compile(r"\((https?://\S+/link/qr/\S+)\):")
CONFIRMATION_LINE = re.compile(r"Confirmation code: (\S+)")
WAITING_LINE = re.compile(r"Waiting for approval")
# The installed console script next to this interpreter.
AGENT = Path(sys.executable).with_name("tsd-agent")


class Output(io.TextIOBase):
    """A text stream the agent writes to while the test waits for lines to appear."""

    encoding = "utf-8"

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[str] = []
        self._changed = threading.Condition()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._changed:
            self._parts.append(text)
            self._changed.notify_all()
        return len(text)

    @property
    def text(self) -> str:
        with self._changed:
            return "".join(self._parts)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = WAIT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = pattern.search("".join(self._parts))
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{pattern.pattern!r} never appeared in:\n"
                                         + "".join(self._parts))
                self._changed.wait(left)


class AgentRun:
    """One agent command running in the background; ``finish()`` gives its exit code."""

    def __init__(self) -> None:
        self.out, self.err = Output(), Output()
        self.code: int | None = None
        self.process: subprocess.Popen | None = None
        self.thread: threading.Thread

    @classmethod
    def in_process(cls, argv: Sequence[str]) -> AgentRun:
        """``tsd_agent.cli.main(argv)`` in a thread."""
        from tsd_agent.cli import main

        run = cls()

        def target() -> None:
            run.code = main(list(argv), stdout=run.out, stderr=run.err)

        run.thread = threading.Thread(target=target, daemon=True)
        run.thread.start()
        return run

    @classmethod
    def process_of(cls, command: Sequence[str], *, env: Mapping[str, str],
                   cwd: Path | None = None) -> AgentRun:
        """A real process (the console script, or a shell running a documented command)."""
        run = cls()
        run.process = subprocess.Popen(list(command), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                       text=True, encoding="utf-8", env=dict(env), cwd=cwd)
        run.thread = threading.Thread(target=run._pump, daemon=True)
        run.thread.start()
        return run

    def _pump(self) -> None:
        assert self.process is not None
        errors = threading.Thread(target=_copy, args=(self.process.stderr, self.err))
        errors.start()
        _copy(self.process.stdout, self.out)
        errors.join()
        self.code = self.process.wait()

    def finish(self, timeout: float = WAIT) -> int:
        self.thread.join(timeout)
        if self.thread.is_alive():
            if self.process is not None:
                self.process.kill()
            raise AssertionError(f"agent still running after {timeout} s:\n{self.out.text}"
                                 f"\n{self.err.text}")
        assert self.code is not None
        return self.code


def _copy(pipe, sink: Output) -> None:
    for line in pipe:
        sink.write(line)
