"""The reliability report: load, injected faults, a fuzz campaign and leak checks on local servers.

    python benchmarks/reliability.py [--sessions 64 --envs 16 --duration 60] [--json PATH]
    python benchmarks/reliability.py --quick          # about 20 s, plus 60 s of attacks

(a) Load: ``--sessions`` concurrent ``RemoteVectorEnv`` sessions of ``--envs`` CartPole envs each,
    spread over two single-worker servers and driven by two client processes (two cores: the
    servers get one each, a client process pipelines its sessions with ``step_async``), for
    ``--duration`` seconds. Sessions churn (each lives a random number of steps, then closes and
    is replaced). Counts sessions and steps served, errors and wrong results.
(b) Faults, each on a server of its own: ``kill -9`` mid-run (the client must raise a
    ``ConnectionLostError`` naming the URL within its call timeout), ``SIGSTOP`` (a
    ``CallTimeoutError``, and after ``SIGCONT`` the same connection works again), ``SIGTERM``
    (every client gets the going-away close 1001 and the server exits), a client process killed
    mid-episode (the server keeps serving the others and releases its descriptors), and with
    ``--threads`` an env that hangs (its client times out, other sessions are still served).
(c) Fuzz: random bytes, msgpack values, envelopes, HELLO/MAKE/RESET fields, actions, text frames,
    fragments, raw frame sequences, oversized messages, HTTP garbage and abrupt disconnects;
    each must get a well-formed reply or a clean close in bounded time, and a bystander session
    opened before the campaign must still step afterwards.
(d) Leaks: thousands of connect/disconnect cycles (clean closes, resets without a close frame,
    half-closes, disconnects mid-request) against one server with small capacity limits; then
    its open descriptors and RSS must be back near the baseline, and exactly its limits of
    sessions and envs must be admitted again (so none leaked). After everything no server
    process (nor Docker container labelled ``io.openenv-gym.server``) may be left.
(e) Attacks: the trust-boundary campaign of ``openenv_gym.testing.compliance`` (code execution
    through client kwargs, safety kwargs, Origin/Host, the MCP port, amplification requests,
    held slots, TerminalEnv isolation, consumer-visible errors), each on a server started the
    way it needs; every attack must pass, and its figures (peak RSS, good-client p50, seconds
    to admit or reap) are reported. About 60 s; ``--skip-attacks`` leaves it out.

Prints a table of figures, writes them as JSON with ``--json PATH``, and exits 1 if an
invariant fails. Known library bugs are listed in ``KNOWN_BUGS``: a check they break is reported
``XFAIL`` and does not fail the run.

The load section and the report live here in :mod:`openenv_gym.bench`; faults, fuzz, leaks
and attacks are the compliance suite's (:mod:`openenv_gym.testing.compliance`), which the
report runs. This is the one place outside the tests that imports ``openenv_gym.testing``:
the suite is "reused by the tests, the reliability report and ``openenv-gym validate``"
(ARCHITECTURE.md), and nothing in the library proper imports this module.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from openenv_gym.bench.load import run_load
from openenv_gym.bench.report import Report
from openenv_gym.bench.suite import _progress
from openenv_gym.providers.local import LocalProvider
from openenv_gym.testing.compliance import Target
from openenv_gym.testing.compliance.faults import alive, run_fault
from openenv_gym.testing.compliance.fuzz import FUZZ_SERVER_ARGS, SMALL_SERVER_ARGS
from openenv_gym.testing.compliance.fuzz_campaign import run_fuzz
from openenv_gym.testing.compliance.leaks import check_leaks

__all__ = ["main"]

CARTPOLE = "CartPole-v1"
DICT_TUPLE = "openenv_gym.testing.envs:DictTupleEnv"
SLOW = "openenv_gym.testing.envs:SlowEnv"
DOCKER_LABEL = "io.openenv-gym.server"
LEAK_MAX_SESSIONS = 8
LEAK_MAX_ENVS = 32


def _live_children() -> list[int]:
    """Return the pids of running processes whose parent is this one.

    multiprocessing's resource tracker (started once by a ``spawn`` context, as the attacks'
    ``AsyncVectorEnv`` uses) lives until this process exits by design: it is no leak.
    """
    me, children = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                tracker = b"multiprocessing.resource_tracker" in cmdline.read()
            if int(fields[1]) == me and fields[0] not in ("Z", "X") and not tracker:
                children.append(int(entry))
    return children


def _docker_containers() -> int | None:
    """Containers labelled as openenv-gym servers, or None without the SDK or an engine."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        return len(client.containers.list(all=True, filters={"label": DOCKER_LABEL}))
    except Exception:
        return None


def _serve_supports(flag: str) -> bool:
    help_text = subprocess.run(
        [sys.executable, "-m", "openenv_gym", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return flag in help_text


def run_faults(
    report: Report, victims: LocalProvider, threads: LocalProvider | None, args: argparse.Namespace
) -> None:
    """Inject each fault on a server of its own; record which were survived."""
    print("(b) faults ...")
    timeout = args.fault_timeout
    targets = [Target(url, pid) for url, pid in zip(victims.urls, victims.pids, strict=True)]
    scenarios: list[tuple[str, Target, dict[str, Any]]] = [
        ("kill -9 mid-run", targets[0], {"timeout": timeout}),
        ("SIGSTOP (hung server)", targets[1], {"timeout": 1.0}),
        ("SIGTERM (graceful shutdown)", targets[2], {"timeout": timeout}),
        ("client killed mid-episode", targets[3], {"timeout": timeout}),
    ]
    if threads is not None:
        delay = 1.5 if args.quick else 3.0
        target = Target(threads.urls[0], threads.pids[0])
        scenarios.append(("hung env (--threads)", target, {"delay": delay}))
    faults = []
    for name, target, options in scenarios:
        fault = run_fault(name, target, **options)
        faults.append(fault)
        print(f"    {'survived' if fault.passed else 'NOT SURVIVED'}: {fault.name}")
    report.put(
        "faults",
        injected=len(faults),
        survived=sum(f.passed for f in faults),
        **{f.name: f.detail for f in faults},
    )
    for fault in faults:
        report.check(f"fault survived: {fault.name}", fault.passed, fault.detail)


def run_fuzz_section(report: Report, url: str, small_url: str, args: argparse.Namespace) -> None:
    """Run the fuzz campaign and record its tallies and checks."""
    seconds = 3.0 if args.quick else args.fuzz_seconds
    print(f"(c) fuzz for {seconds:g} s ...")
    found = run_fuzz(
        url, small_url, seconds=seconds, max_inputs=args.fuzz_max_inputs, seed=args.seed
    )
    report.put(
        "fuzz",
        inputs_tried=sum(found.tried.values()),
        bad_outcomes=len(found.bad),
        inputs_by_kind=found.tried,
        server_answers=found.outcomes,
        first_bad_outcomes=found.bad[:5],
    )
    report.check("fuzz: no bad outcomes", not found.bad, "; ".join(found.bad[:3]))
    wanted = found.bystander_wanted
    report.check(
        "fuzz: bystander still steps",
        found.bystander_steps == wanted,
        f"{found.bystander_steps}/{wanted} steps",
    )
    report.check("fuzz: servers healthy afterwards", found.healthy)


def _leak_section(report: Report, label: str, provider: LocalProvider, cycles: int) -> None:
    found = check_leaks(
        provider.urls[0],
        provider.pids[0],
        cycles=cycles,
        max_sessions=LEAK_MAX_SESSIONS,
        max_envs=LEAK_MAX_ENVS,
    )
    report.put(label, **found.figures)
    prefix = "leaks" if label == "leaks" else "threads"
    names = ["every cycle completed", "no sessions leaked", "no envs leaked"]
    if label == "leaks":
        names += ["no fd growth", "RSS growth under 32 MiB"]
    leaked = bool(found.figures["leaked_sessions"] or found.figures["leaked_envs"])
    errors = found.cycle_errors
    consequence = None
    if prefix == "threads" and leaked and errors and all("Capacity" in k for k in errors):
        consequence = "cycles refused at capacity once leaked sessions/envs fill the limits"
    for name in names:
        held, detail = found.checks[name]
        known = consequence if name == "every cycle completed" else None
        report.check(f"{prefix}: {name}", held, detail, known)


def run_leaks(
    report: Report, leak: LocalProvider, threads: LocalProvider | None, args: argparse.Namespace
) -> None:
    """Run the connect/disconnect cycles and record what leaked."""
    cycles = 300 if args.quick else args.leak_cycles
    print(f"(d) leaks: {cycles} connect/disconnect cycles ...")
    _leak_section(report, "leaks", leak, cycles)
    if threads is not None:
        _leak_section(report, "leaks (--threads)", threads, cycles // 3)


def _rounded(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def run_attacks(report: Report) -> None:
    """Run the compliance campaign; record each attack's figures and verdict."""
    from openenv_gym.testing.compliance import ATTACKS, run_campaign

    def show(outcome: Any) -> None:
        print(f"  {outcome}", flush=True)

    print(f"(e) attacks: {len(ATTACKS)} of them, each on a server started for it")
    started = time.monotonic()
    for outcome in run_campaign(ATTACKS, on_result=show):
        figures = {key: _rounded(value) for key, value in outcome.figures.items()}
        verdict = "pass" if outcome.passed else ("FAIL" if outcome.runnable else "not runnable")
        report.put("attacks", **{outcome.name: {"verdict": verdict, **figures}})
        report.check(f"attack: {outcome.name}", outcome.passed, outcome.detail)
    report.put("attacks", campaign_seconds=time.monotonic() - started)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=64, help="concurrent load sessions")
    parser.add_argument("--envs", type=int, default=16, help="envs per load session")
    parser.add_argument("--duration", type=float, default=60.0, help="load seconds")
    parser.add_argument("--servers", type=int, default=2, help="load servers")
    parser.add_argument("--fuzz-seconds", type=float, default=15.0)
    parser.add_argument("--fuzz-max-inputs", type=int, default=20_000)
    parser.add_argument("--leak-cycles", type=int, default=2000)
    parser.add_argument("--call-timeout", type=float, default=30.0, help="load call timeout")
    parser.add_argument("--fault-timeout", type=float, default=5.0, help="fault call timeout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="about 20 s: small everything")
    parser.add_argument("--skip-attacks", action="store_true", help="leave out (e) attacks")
    parser.add_argument("--json", help="write the figures and invariants here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the report; return 1 if an invariant failed (known bugs excluded), else 0."""
    args = _parser().parse_args(argv)
    if args.quick:
        args.sessions, args.envs, args.duration = min(args.sessions, 16), min(args.envs, 8), 5.0
    started = time.monotonic()
    report = Report()
    containers_before = _docker_containers()
    threads_ok = _serve_supports("--threads") and _serve_supports("--max-envs")
    limits = ["--max-sessions", str(LEAK_MAX_SESSIONS), "--max-envs", str(LEAK_MAX_ENVS)]
    plans: dict[str, tuple[list[str], int, list[str]]] = {
        "load": ([CARTPOLE], args.servers, ["--workers", "1"]),
        "victims": ([CARTPOLE], 4, ["--workers", "1"]),
        "fuzz": ([CARTPOLE, DICT_TUPLE], 1, list(FUZZ_SERVER_ARGS)),
        "fuzz small": ([CARTPOLE, DICT_TUPLE], 1, list(SMALL_SERVER_ARGS)),
        "leak": ([CARTPOLE], 1, ["--workers", "1", *limits]),
    }
    if threads_ok:
        # SlowEnv's delay is a client kwarg the operator must allow (the hung-env fault sets it).
        allow = ["--env-kwargs-allow", "delay"] if _serve_supports("--env-kwargs-allow") else []
        threads_args = ["--workers", "1", "--threads", *limits, *allow]
        plans["threads"] = ([CARTPOLE, SLOW], 1, threads_args)
    # Servers start in parallel from pool threads that stay alive until the end: a server
    # dies with the *thread* that started it (PR_SET_PDEATHSIG).
    pool = concurrent.futures.ThreadPoolExecutor(len(plans))
    providers: dict[str, LocalProvider] = {}
    pids: list[int] = []
    try:
        futures = {
            name: pool.submit(LocalProvider, specs, num_servers=n, extra_args=extra)
            for name, (specs, n, extra) in plans.items()
        }
        failures = []
        for name, future in futures.items():
            try:
                providers[name] = future.result()
                pids += providers[name].pids
            except Exception as exc:
                failures.append(f"{name}: {exc}")
        if failures:
            raise RuntimeError("servers failed to start: " + "; ".join(failures))
        print(f"{len(pids)} servers ready in {time.monotonic() - started:.1f} s")
        threads = providers.get("threads")
        # A bar over the sections (stderr): the full report runs for minutes.
        advance, finish = _progress(5 - args.skip_attacks)
        advance("load")
        run_load(report, providers["load"].urls, args)
        advance("faults")
        run_faults(report, providers["victims"], threads, args)
        advance("fuzz")
        run_fuzz_section(report, providers["fuzz"].urls[0], providers["fuzz small"].urls[0], args)
        advance("leaks")
        run_leaks(report, providers["leak"], threads, args)
    finally:
        for pid in pids:  # a SIGSTOPped server would not hear SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for provider in providers.values():
            provider.close()
        pool.shutdown()
    if not args.skip_attacks:  # after the other servers are gone: they would share the cores
        advance("attacks")
        run_attacks(report)
    finish()
    time.sleep(0.2)
    leaked_servers = [pid for pid in pids if alive(pid)]
    children = _live_children()
    containers_after = _docker_containers()
    leaked_containers = (
        None
        if containers_before is None or containers_after is None
        else containers_after - containers_before
    )
    report.put(
        "cleanup",
        server_processes_started=len(pids),
        leaked_server_processes=len(leaked_servers),
        leaked_child_processes=len(children),
        leaked_containers="n/a (no Docker engine)"
        if leaked_containers is None
        else leaked_containers,
        total_runtime_s=time.monotonic() - started,
    )
    report.check("cleanup: no server process left", not leaked_servers, str(leaked_servers))
    report.check("cleanup: no child process left", not children, str(children))
    if leaked_containers is not None:
        report.check("cleanup: no container left", leaked_containers <= 0, str(leaked_containers))
    report.print()
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report.to_json(), out, indent=2, default=str)
        print(f"figures written to {args.json}")
    return 1 if report.failed else 0
