"""Background processes we start, recognise again later and stop with everything they spawned.

A pid file alone is not proof: pids are reused, so a process only counts as ours when its
command line and its environment still say so (read from ``/proc``). Stopping signals the
process group *and* walks the parent links, because some children (Prefect's flow-run
subprocesses) start their own session and would escape a group-only kill. Linux only, like the
rest of the platform.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    state: str


def proc_info(pid: int) -> ProcInfo | None:
    """Parent, group and state of a live process; ``None`` when it is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name sits in parentheses and may itself contain spaces or parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcInfo(pid=pid, state=fields[0], ppid=int(fields[1]), pgid=int(fields[2]))


def is_alive(pid: int) -> bool:
    """A zombie has exited: only its exit status is left for a parent that may never reap it."""
    info = proc_info(pid)
    return info is not None and info.state not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def environ(pid: int) -> dict[str, str]:
    """The environment the process started with (unreadable, hence empty, for other users)."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    pairs = (part.decode(errors="replace").partition("=") for part in raw.split(b"\0") if part)
    return {key: value for key, _, value in pairs}


def contains_run(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    """Whether ``needle`` occurs as consecutive items of ``haystack``."""
    n = len(needle)
    return any(list(haystack[i : i + n]) == list(needle) for i in range(len(haystack) - n + 1))


def is_ours(pid: int, command: Sequence[str], env: Mapping[str, str]) -> bool:
    """The process runs ``command`` (consecutive arguments) and was started with ``env``.

    Checking the environment as well as the command line tells our process from a reused pid
    and from the same program started for another home directory.
    """
    if not is_alive(pid) or not contains_run(cmdline(pid), command):
        return False
    started_with = environ(pid)
    return all(started_with.get(key) == value for key, value in env.items())


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_pid(path: Path, pid: int) -> None:
    write_atomic(path, f"{pid}\n")


def spawn(argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path) -> int:
    """Start ``argv`` detached in its own session, output appended to ``log``; return its pid.

    Its own session means the process outlives the command that started it, ignores the
    terminal's Ctrl-C, and its whole group can be signalled at once.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


def _table() -> list[ProcInfo]:
    infos = (proc_info(int(p.name)) for p in PROC.iterdir() if p.name.isdigit())
    return [i for i in infos if i is not None]


def family(root: int) -> set[int]:
    """``root``, its process group and every descendant (whatever session it moved to)."""
    table = _table()
    children: dict[int, list[int]] = {}
    for info in table:
        children.setdefault(info.ppid, []).append(info.pid)
    found = {root} | {i.pid for i in table if i.pgid == root}
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return {pid for pid in found if is_alive(pid)}


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop(root: int, first_signal: int = signal.SIGTERM, timeout: float = 20.0) -> set[int]:
    """Signal ``root``'s group and every descendant, then SIGKILL what is left after ``timeout``.

    Returns every pid that was part of the family, so callers can check none survived.
    Descendants are collected again while waiting: a child orphaned by its parent's exit is
    still remembered, and one spawned during shutdown is caught.
    """
    seen = family(root)
    try:
        os.killpg(root, first_signal)
    except (ProcessLookupError, PermissionError):
        _signal(root, first_signal)
    for pid in seen - {root}:
        if (info := proc_info(pid)) is not None and info.pgid != root:
            _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = {pid for pid in seen if is_alive(pid)}
        if not alive:
            return seen
        for pid in alive:
            seen |= family(pid)
        time.sleep(0.2)
    for pid in seen:
        if is_alive(pid):
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while any(is_alive(pid) for pid in seen) and time.monotonic() < deadline:
        time.sleep(0.1)
    return seen


def port_in_use(host: str, port: int) -> bool:
    """Whether something holds ``host:port``: the same test as the server's own bind."""
    family_ = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family_, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def wait_port_free(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while port_in_use(host, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def tail(path: Path, lines: int = 20) -> str:
    """The end of a log, to put the cause of a failed start into the error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
