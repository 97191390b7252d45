"""Sandboxes for agent-run shell commands: one per episode, isolated from the others and the server.

A :class:`Sandbox` owns a working directory and runs ``/bin/sh -c`` commands in it, with a
scrubbed environment, resource limits and a timeout, and kills everything a command left
running when the command ends (or times out) and when the sandbox closes. How it isolates is
its :data:`Isolation` mode, the strongest this process can use unless the operator says
otherwise:

``"namespaces"``
    bubblewrap (``bwrap``): new user, pid, mount, network, IPC, UTS and cgroup namespaces. The
    command sees its own ``/proc`` (no server process, no other episode), a private ``/tmp``
    with only its working directory in it, the system read-only, no network and no
    capabilities. The pid namespace dies with the command. When the server runs as root, the
    episode also runs as its own uid (below), so rlimits on processes count per episode.
``"uid"``
    a per-episode unprivileged uid (from :data:`UID_BASE`, reserved with a lock file under
    :data:`UID_LOCK_DIR`), for servers that are root but cannot create namespaces (a Docker
    container under the default seccomp profile). The working directory is private to that
    uid, other processes' environments are unreadable (``/proc/<pid>/environ`` needs the same
    uid), and everything the uid runs is killed with ``kill(-1)`` from that uid.
``"none"``
    the operator's explicit opt-out: the command runs as the server's user in a process group
    (a ``setsid`` escapes it), with the scrubbed environment and the rlimits but no NPROC.

Every command's processes also get ``oom_score_adj`` 1000 (``choom``, when installed): out of
memory, the kernel kills them before the server.

Output is read by the calling thread (no reader threads), with the command's exit seen through
a pidfd; after the command ends, pipes still held open by a process that could not be killed
are drained for at most :data:`DRAIN_SECONDS` and then closed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import logging
import math
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Literal

from openenv_gym.errors import SandboxUnavailableError

__all__ = [
    "CAPTURE_LIMIT",
    "TIMEOUT_EXIT_CODE",
    "UID_BASE",
    "UID_COUNT",
    "UID_LOCK_DIR",
    "CommandResult",
    "Isolation",
    "Sandbox",
    "SandboxLimits",
    "SandboxUnavailableError",
    "available_modes",
]

logger = logging.getLogger("openenv_gym.envs")

Isolation = Literal["auto", "namespaces", "uid", "none"]
"""How episodes are isolated; ``"auto"`` picks the strongest available, else refuses."""
Mode = Literal["namespaces", "uid", "none"]
CAPTURE_LIMIT = 1 << 20
"""Bytes of each output stream kept; the rest is read and dropped."""
TIMEOUT_EXIT_CODE = 124
"""The exit code reported for a command that ran out of time (as ``timeout(1)`` reports)."""
DRAIN_SECONDS = 1.0
"""How long output is still read after the command ended and its sandbox was killed."""
UID_BASE = 1_800_000_000
"""The first per-episode uid; episodes use ``UID_BASE + i`` for ``i < UID_COUNT``."""
UID_COUNT = 65536
UID_LOCK_DIR = Path("/run/openenv-gym/uids")
"""A lock file per uid in use, held (``flock``) by the server process running its episode."""
_PROBE_UID = UID_BASE - 1
_SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # world-writable: what a uid may leave behind
_CAP_SETUID, _CAP_SETGID, _CAP_CHOWN = 7, 6, 0
_CAP_SETPCAP = 8


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Resource limits set in every command's processes (``setrlimit``, soft = hard).

    Attributes:
        processes: ``RLIMIT_NPROC``, processes of the episode's uid (not set in ``"none"``
            mode, where the uid is the server's).
        address_space: ``RLIMIT_AS`` in bytes, per process.
        file_size: ``RLIMIT_FSIZE`` in bytes: larger writes fail (``SIGXFSZ``).
        open_files: ``RLIMIT_NOFILE``, per process.
        cpu_seconds: ``RLIMIT_CPU`` per process; ``None``: the command timeout, rounded up.

    """

    processes: int = 128
    address_space: int = 1 << 30
    file_size: int = 64 << 20
    open_files: int = 256
    cpu_seconds: int | None = None

    def prlimit_args(self, *, timeout: float, nproc: bool) -> list[str]:
        """Return ``prlimit(1)`` options setting these limits for a command of ``timeout``."""
        cpu = self.cpu_seconds if self.cpu_seconds is not None else math.ceil(timeout) + 1
        args = [
            f"--as={self.address_space}",
            f"--fsize={self.file_size}",
            f"--nofile={self.open_files}",
            f"--cpu={cpu}",
            "--core=0",
        ]
        return [*args, f"--nproc={self.processes}"] if nproc else args


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """What a shell command did: its output (at most ``capture_limit`` bytes each) and exit."""

    stdout: bytes
    stderr: bytes
    exit_code: int
    timed_out: bool
    stdout_size: int
    """Bytes written to stdout in all (``len(stdout)`` unless cut)."""
    stderr_size: int


# -- what this process can do --------------------------------------------------------------


def _effective_caps() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def _has_cap(bit: int) -> bool:
    return bool(_effective_caps() >> bit & 1)


def _uid_problem() -> str | None:
    if os.geteuid() != 0:
        return (
            f"per-episode uids need a root server, expected uid 0 but this one runs as uid "
            f"{os.geteuid()} (in Docker: run the image as root with --cap-drop ALL --cap-add "
            "CHOWN --cap-add SETGID --cap-add SETUID, as DockerProvider does)"
        )
    missing = [
        name
        for name, bit in (("SETUID", _CAP_SETUID), ("SETGID", _CAP_SETGID), ("CHOWN", _CAP_CHOWN))
        if not _has_cap(bit)
    ]
    if missing:
        return f"per-episode uids need capabilities {missing} (docker: --cap-add)"
    if shutil.which("prlimit") is None or shutil.which("setpriv") is None:
        return "per-episode uids need prlimit and setpriv (Debian package util-linux)"
    return None


def _namespaces_problem(as_uid: int | None) -> str | None:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bwrap not found: install bubblewrap (Debian: apt-get install -y bubblewrap)"
    probe = tempfile.mkdtemp(prefix="openenv-sandbox-probe-")
    try:
        if as_uid is not None:
            os.chmod(probe, 0o2770)
            os.chown(probe, as_uid, os.getegid())
        argv = [bwrap, *_bwrap_args(Path(probe)), "/bin/true"]
        result = subprocess.run(
            argv,
            user=as_uid,
            group=as_uid,
            extra_groups=[] if as_uid is not None else None,
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap did not run ({exc})"
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(probe)  # empty; /tmp is root's, so its sticky bit lets root remove it
    if result.returncode != 0:
        why = result.stderr.decode(errors="replace").strip()
        return (
            f"bwrap cannot create namespaces here ({why}); allow user namespaces (sysctl "
            "kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0; in Docker a "
            "seccomp profile that permits unshare)"
        )
    return None


@functools.cache
def available_modes() -> dict[Mode, str | None]:
    """Return each isolation mode with ``None`` if usable here, else why not (cached).

    ``"namespaces"`` is probed by running ``bwrap`` (as a probe uid when this process is
    root, as episodes would run).
    """
    uid_problem = _uid_problem()
    if os.geteuid() == 0 and uid_problem is not None:
        # bwrap run by root maps root into the sandbox: namespaces only with an episode uid.
        namespaces_problem: str | None = f"a root server needs per-episode uids ({uid_problem})"
    else:
        namespaces_problem = _namespaces_problem(_PROBE_UID if uid_problem is None else None)
    return {
        "namespaces": namespaces_problem,
        "uid": uid_problem,
        "none": None,
    }


def resolve(isolation: Isolation) -> Mode:
    """Return the mode ``isolation`` runs as here.

    Raises:
        SandboxUnavailableError: the mode (``"auto"``: every isolating mode) is unavailable.
        ValueError: ``isolation`` is not an :data:`Isolation`.

    """
    modes = available_modes()
    if isolation == "auto":
        for mode in ("namespaces", "uid"):
            if modes[mode] is None:
                return mode
        raise SandboxUnavailableError(
            "auto", {mode: str(modes[mode]) for mode in ("namespaces", "uid")}
        )
    if isolation not in modes:
        raise ValueError(
            f"isolation must be one of ('auto', 'namespaces', 'uid', 'none'), not {isolation!r}"
        )
    problem = modes[isolation]
    if problem is not None:
        raise SandboxUnavailableError(isolation, {isolation: problem})
    return isolation


# -- uids ------------------------------------------------------------------------------------


class _UidLease:
    """A per-episode uid, reserved by an ``flock`` held until :meth:`release`."""

    def __init__(self) -> None:
        UID_LOCK_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        for uid in range(UID_BASE, UID_BASE + UID_COUNT):
            fd = os.open(UID_LOCK_DIR / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            return
        raise SandboxUnavailableError(
            "uid", {"uid": f"all {UID_COUNT} episode uids from {UID_BASE} are in use"}
        )

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # drops the lock
            self._fd = -1


def _live_pids(uid: int) -> list[int]:
    """Return the pids of processes (not zombies) whose real uid is ``uid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{entry}/status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith(
                ("Z", "X")
            ):
                pids.append(int(entry))
    return pids


def _kill_uid(uid: int, *, deadline: float = 5.0) -> None:
    """Kill every process of ``uid``: ``kill(-1, SIGKILL)`` sent by a process of that uid.

    Needs no CAP_KILL. ``kill(-1)`` walks the task list under its lock, so a fork bomb cannot
    outrun one sweep; the sweep repeats until no live process of the uid is left.
    """
    end = time.monotonic() + deadline
    # A process of the uid is only made by another (or by us): none seen, none to come.
    while _live_pids(uid):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["/bin/sh", "-c", "kill -9 -1"],
                user=uid,
                group=uid,
                extra_groups=[],
                env={"PATH": "/usr/bin:/bin"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=deadline,
            )
        if time.monotonic() >= end:
            logger.warning("processes of uid %d survived kill(-1) for %.1f s", uid, deadline)
            return


def _remove_owned(uid: int, *also: Path) -> None:
    """Remove what ``uid`` owns in the world-writable scratch directories, as ``uid``.

    Run as the uid itself, so the server needs neither CAP_FOWNER (sticky ``/tmp``) nor
    CAP_DAC_OVERRIDE, and cannot be led to remove anything the uid could not.
    """
    scratch = sorted({path for path in (*_SCRATCH_DIRS, *map(str, also)) if os.path.isdir(path)})
    find = ["find", *scratch, "-xdev", "-mindepth", "1", "-maxdepth", "1", "-user", str(uid)]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [*find, "-exec", "rm", "-rf", "--", "{}", "+"],
            user=uid,
            group=uid,
            extra_groups=[],
            env={"PATH": "/usr/bin:/bin"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )


# -- the sandbox -----------------------------------------------------------------------------


def _bwrap_args(workdir: Path) -> list[str]:
    """Return bwrap's options: every namespace, the system read-only, ``workdir`` writable."""
    args = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    args += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
    args += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir)]
    return [*args, "--hostname", "sandbox"]


class Sandbox:
    """One episode's isolated working directory, and the commands run in it.

    Args:
        isolation: the mode (see the module's text); ``"auto"``: the strongest available.
        limits: rlimits of every command's processes.

    Attributes:
        mode: the mode in force: ``"namespaces"``, ``"uid"`` or ``"none"``.
        uid: the episode's uid, or ``None`` when commands run as the server's user.
        workdir: the working directory, removed by :meth:`close`: owned by ``uid`` with the
            server's group, mode ``2770`` (in the uid modes).

    Raises:
        SandboxUnavailableError: the isolation cannot be set up here (the text says why and
            how to enable it).

    """

    def __init__(
        self, isolation: Isolation = "auto", *, limits: SandboxLimits | None = None
    ) -> None:
        self.mode: Mode = resolve(isolation)
        self.limits = limits or SandboxLimits()
        self._lease = _UidLease() if self.mode != "none" and _uid_problem() is None else None
        self.uid = None if self._lease is None else self._lease.uid
        if self.uid is not None:
            _kill_uid(self.uid)  # a previous holder's stragglers, if its server died
            _remove_owned(self.uid)
        self.workdir = Path(tempfile.mkdtemp(prefix="openenv-terminal-")).resolve()
        if self.uid is not None:
            # The episode's uid owns it; the server reaches it through its group (setgid: the
            # group is inherited), so it needs no CAP_DAC_OVERRIDE. No one else gets in.
            os.chmod(self.workdir, 0o2770)  # first: once it is not ours, only CAP_FOWNER could
            os.chown(self.workdir, self.uid, os.getegid())
        self._closed = False

    def write_files(self, files: Mapping[str, str]) -> None:
        """Write ``files`` (relative path -> text) into the working directory, owned by ``uid``."""
        written: set[Path] = set()
        for relative, text in files.items():
            path = self.workdir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.update([path, *path.relative_to(self.workdir).parents])
        if self.uid is not None:
            # Last: once a directory is the episode's, the server may no longer write in it.
            for part in sorted(written, key=lambda p: len(p.parts), reverse=True):
                os.chown(self.workdir / part, self.uid, -1)

    def argv(self, command: str, *, timeout: float) -> list[str]:
        """Return the argv that runs ``command`` in this sandbox."""
        limits = ["prlimit", *self.limits.prlimit_args(timeout=timeout, nproc=self.uid is not None)]
        if shutil.which("choom") is not None:  # util-linux: out of memory, kill these first
            limits = ["choom", "-n", "1000", "--", *limits]
        shell = ["/bin/sh", "-c", command]
        if self.mode == "none":
            return [*limits, "--", *shell]
        drop = ["setpriv", "--no-new-privs", "--inh-caps=-all"]
        if self.mode == "uid":
            return [*limits, "--", *drop, "--", *shell]
        return [*limits, "--", *drop, "--", "bwrap", *_bwrap_args(self.workdir), "--", *shell]

    def run(
        self,
        command: str,
        *,
        env: Mapping[str, str],
        timeout: float,
        capture_limit: int = CAPTURE_LIMIT,
    ) -> CommandResult:
        """Run ``/bin/sh -c command`` in the working directory; kill it after ``timeout`` s.

        Whatever the command leaves running is killed when it ends. A timed-out command
        reports exit code 124; one killed by signal N reports 128 + N, as shells do.

        Raises:
            RuntimeError: the sandbox is closed.
            OSError: the command could not be started.

        """
        if self._closed:
            raise RuntimeError("the sandbox is closed: expected an open sandbox")
        process = subprocess.Popen(
            self.argv(command, timeout=timeout),
            cwd=self.workdir,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            user=self.uid,
            group=self.uid,
            extra_groups=[] if self.uid is not None else None,
        )
        return _collect(process, timeout, capture_limit, lambda: self._kill(process))

    def _kill(self, process: subprocess.Popen[bytes]) -> None:
        if self.mode == "namespaces" and process.poll() is not None and self.uid is None:
            # bwrap exits after its pid namespace is empty: its processes cannot leave it.
            # (With an episode uid, still sweep it: killed processes of the namespace may not
            # have finished exiting when bwrap returns; the sweep waits until none is live.)
            return
        if self.uid is not None:
            _kill_uid(self.uid)  # needs no CAP_KILL (the container's server has none)
        elif self.mode == "namespaces":
            # The namespace's init dies with bwrap (--die-with-parent), and all in it with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(process.pid, signal.SIGKILL)
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    def kill_all(self) -> None:
        """Kill every process of this sandbox (its uid's, in the uid modes)."""
        if self.uid is not None:
            _kill_uid(self.uid)

    def close(self) -> None:
        """Kill everything the episode runs, remove its files, free its uid; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.uid is not None:
            _kill_uid(self.uid)
            _remove_owned(self.uid, self.workdir.parent)  # the working directory too
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._lease is not None:
            self._lease.release()


class _Capture:
    """The first ``limit`` bytes of a stream, and its size."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]


def _collect(
    process: subprocess.Popen[bytes],
    timeout: float,
    capture_limit: int,
    kill: Callable[[], None],
) -> CommandResult:
    """Read ``process``'s output until it ends (or ``timeout``), then kill what it left."""
    assert process.stdout is not None and process.stderr is not None
    streams: dict[int, tuple[IO[bytes], _Capture]] = {
        process.stdout.fileno(): (process.stdout, _Capture(capture_limit)),
        process.stderr.fileno(): (process.stderr, _Capture(capture_limit)),
    }
    out, err = (capture for _, capture in streams.values())
    pidfd = os.pidfd_open(process.pid)
    deadline = time.monotonic() + timeout
    timed_out = False
    drain_until: float | None = None  # set once the command ended or timed out
    try:
        with selectors.DefaultSelector() as selector:
            for fd in streams:
                selector.register(fd, selectors.EVENT_READ)
            selector.register(pidfd, selectors.EVENT_READ)
            while selector.get_map():
                now = time.monotonic()
                if drain_until is None and now >= deadline:
                    timed_out = True
                    kill()
                    drain_until = time.monotonic() + DRAIN_SECONDS
                elif drain_until is not None and now >= drain_until:
                    break  # a process we could not kill holds a pipe: stop reading it
                for key, _ in selector.select((drain_until or deadline) - now):
                    if key.fd == pidfd:
                        selector.unregister(pidfd)
                        if drain_until is None:
                            kill()  # whatever the command left running
                            drain_until = time.monotonic() + DRAIN_SECONDS
                        continue
                    chunk = os.read(key.fd, 65536)
                    if chunk:
                        streams[key.fd][1].add(chunk)
                    else:
                        selector.unregister(key.fd)
    finally:
        os.close(pidfd)
        for stream, _ in streams.values():
            stream.close()
    try:
        code = process.wait(timeout=DRAIN_SECONDS + 5)
    except subprocess.TimeoutExpired:
        kill()
        code = process.wait()
    if timed_out:
        code = TIMEOUT_EXIT_CODE
    elif code < 0:
        code = 128 - code
    return CommandResult(
        stdout=bytes(out.data),
        stderr=bytes(err.data),
        exit_code=code & 0xFF,
        timed_out=timed_out,
        stdout_size=out.size,
        stderr_size=err.size,
    )
