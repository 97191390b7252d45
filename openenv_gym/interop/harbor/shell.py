"""An episode's command shell: one long-lived ``docker exec`` that runs each agent command.

A ``docker exec`` costs three Engine API calls and a runc exec per command (a few hundred ms
on a loaded machine); this driver is exec'd once per episode (as the agent's user, in the
working directory) and then runs each command as a fresh ``timeout -k 1 T bash -c COMMAND``
child with stdin from ``/dev/null``, exactly as one ``docker exec`` per command would, at the
cost of a few forks. Output goes to two files in a private temporary folder of the container:
the first ``limit`` bytes of each are copied and sent back with the full sizes and the exit
code, then the files are removed (a background process that kept writing writes to an
unlinked file). Commands travel NUL-terminated (they cannot hold a NUL: printable ASCII, tab
and newline only).

The host waits for each reply until the command's timeout plus a grace period; a driver that
does not answer (e.g. a fork bomb filled the pids limit, so it cannot fork) is closed and the
command reported as timed out; the next command starts a new driver.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from typing import Any

from openenv_gym.envs.sandbox import TIMEOUT_EXIT_CODE, CommandResult

__all__ = ["DRIVER", "CommandShell"]

DRIVER = r"""
d=$(mktemp -d) || exit 1
trap 'rm -rf "$d"' EXIT
while IFS= read -r -d '' t && IFS= read -r -d '' l && IFS= read -r -d '' c; do
  timeout -k 1 "$t" bash -c "$c" </dev/null >"$d/o" 2>"$d/e"
  rc=$?
  head -c "$l" "$d/o" >"$d/oc"; head -c "$l" "$d/e" >"$d/ec"
  printf '%s %s\n' "$rc" "$(stat -c %s "$d/o" "$d/e" "$d/oc" "$d/ec" | tr '\n' ' ')"
  cat "$d/oc" "$d/ec"
  rm -f "$d/o" "$d/e" "$d/oc" "$d/ec"
done
"""
"""The driver (bash): reads ``timeout``, ``limit``, ``command``; replies with a header line
``rc out_size err_size out_kept err_kept`` and the kept bytes."""
_GRACE = 3.0


class _Broken(Exception):
    """The driver's stream ended or did not answer in time."""


class CommandShell:
    """One driver process in a container (module docstring).

    Args:
        api: the Docker SDK's low-level client.
        container_id: the container.
        user: the user commands run as (``None``: the image's).

    Raises:
        Exception: the Docker SDK's errors, if the driver cannot be started.

    """

    def __init__(self, api: Any, container_id: str, *, user: str | None) -> None:
        exec_id = api.exec_create(
            container_id,
            ["bash", "-c", DRIVER],
            stdin=True,
            stdout=True,
            stderr=True,
            user=user or "",
        )["Id"]
        self._sock = api.exec_start(exec_id, socket=True)
        # The hijacked connection: docker-py's own examples write stdin through ``_sock``.
        self._raw = getattr(self._sock, "_sock", self._sock)
        self._buffer = bytearray()
        self._stdout = bytearray()
        self.broken = False

    def run(self, command: str, *, timeout: float, limit: int) -> CommandResult:
        """Run ``command``; return its result (a timed-out one if the driver does not answer).

        Raises:
            _Broken: never; a broken driver is reported as a timed-out command and
                :attr:`broken` is set.

        """
        deadline = time.monotonic() + timeout + _GRACE
        try:
            self._raw.sendall(f"{timeout:.3f}\0{limit}\0{command}\0".encode())
            header = self._readline(deadline).split()
            code, out_size, err_size, out_kept, err_kept = (int(part) for part in header[:5])
            stdout = self._read(out_kept, deadline)
            stderr = self._read(err_kept, deadline)
        except (_Broken, OSError, ValueError):
            self.close()
            return CommandResult(b"", b"", TIMEOUT_EXIT_CODE, True, 0, 0)
        timed_out = code in (TIMEOUT_EXIT_CODE, 137)
        return CommandResult(
            stdout=stdout,
            stderr=stderr,
            exit_code=TIMEOUT_EXIT_CODE if timed_out else code & 0xFF,
            timed_out=timed_out,
            stdout_size=out_size,
            stderr_size=err_size,
        )

    def _fill(self, deadline: float) -> None:
        """Read one chunk of the multiplexed stream; keep the driver's stdout frames."""
        while True:
            while len(self._buffer) >= 8:
                size = int.from_bytes(self._buffer[4:8], "big")
                if len(self._buffer) < 8 + size:
                    break
                if self._buffer[0] == 1:
                    self._stdout += self._buffer[8 : 8 + size]
                del self._buffer[: 8 + size]
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Broken("no answer in time")
            ready, _, _ = select.select([self._sock], [], [], remaining)
            if not ready:
                continue
            read = self._sock.read if isinstance(self._sock, socket.SocketIO) else self._sock.recv
            chunk = read(65536)
            if not chunk:
                raise _Broken("the driver's stream ended")
            self._buffer += chunk

    def _readline(self, deadline: float) -> bytes:
        while b"\n" not in self._stdout:
            if len(self._stdout) > 4096:
                raise _Broken("no header line")
            self._fill(deadline)
        line, _, rest = bytes(self._stdout).partition(b"\n")
        self._stdout = bytearray(rest)
        return line

    def _read(self, size: int, deadline: float) -> bytes:
        while len(self._stdout) < size:
            self._fill(deadline)
        data = bytes(self._stdout[:size])
        del self._stdout[:size]
        return data

    def close(self) -> None:
        """End the driver (its stdin closes); idempotent."""
        self.broken = True
        with contextlib.suppress(OSError):
            self._sock.close()
        with contextlib.suppress(OSError):
            self._raw.close()
