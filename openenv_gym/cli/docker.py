"""``openenv-gym docker build | up | ps | down | prune``: server images and containers."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable
from typing import Any


def build_progress(stream: Any = None) -> tuple[Callable[[str], None], Callable[[], None]]:
    """Return ``(line, finish)`` for a build's output: each line printed to ``stream``.

    With tqdm installed, a status line on stderr also shows the current step and the time
    elapsed, refreshed every second (the wheelhouse and debootstrap steps are silent for
    minutes).
    """
    out = stream or sys.stdout
    try:
        from tqdm import tqdm
    except ImportError:
        return (lambda text: print(text, file=out, flush=True)), lambda: None
    bar = tqdm(total=None, bar_format="{desc} [{elapsed}]", file=sys.stderr, leave=False)
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(1.0):
            bar.refresh()

    ticker = threading.Thread(target=tick, name="build-progress", daemon=True)
    ticker.start()

    def line(text: str) -> None:
        bar.write(text, file=out)
        bar.set_description_str(text.splitlines()[0][:70] if text else "")

    def finish() -> None:
        stop.set()
        ticker.join(5)
        bar.close()

    return line, finish


def _docker_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from openenv_gym.providers.docker_image import build_image

    line, finish = build_progress()
    try:
        tag = build_image(
            tag=args.tag,
            offline=args.offline,
            base_image=args.base_image,
            requirements=Path(args.requirements) if args.requirements else None,
            rebuild_base=args.rebuild_base,
            progress=line,
        )
    finally:
        finish()
    print(f"built {tag}")
    return 0


def _docker_up(args: argparse.Namespace) -> int:
    from openenv_gym.providers.docker import DockerProvider

    provider = DockerProvider(
        args.specs or None,
        image=args.image,
        num_servers=args.num_servers,
        cpus=args.cpus,
        memory=args.memory,
        keep=True,
        token=args.token,
    )
    for container_id, url in zip(provider.container_ids, provider.urls, strict=True):
        print(f"{container_id[:12]}  {url}")
    if args.token is None:  # a new one: clients need it (export it as OPENENV_GYM_TOKEN)
        print(f"OPENENV_GYM_TOKEN={provider.token}")
    return 0


def _docker_ps(args: argparse.Namespace) -> int:
    from openenv_gym.providers.docker import CONTAINER_PORT, OWNER_LABEL, list_containers

    print(f"{'CONTAINER':12}  {'STATUS':10}  {'URL':26}  {'OWNER':24}  IMAGE")
    for container in list_containers():
        bindings = (container.ports or {}).get(f"{CONTAINER_PORT}/tcp") or []
        url = f"ws://127.0.0.1:{bindings[0]['HostPort']}" if bindings else "-"
        image = (container.image.tags or [container.image.short_id])[0]
        owner = container.labels.get(OWNER_LABEL, "?")
        print(f"{container.short_id:12}  {container.status:10}  {url:26}  {owner:24}  {image}")
    return 0


def _docker_down(args: argparse.Namespace) -> int:
    from openenv_gym.providers.docker import prune

    removed = prune(include_cli=True)
    print(f"removed {len(removed)} container(s) {' '.join(removed)}".rstrip())
    return 0


def _docker_prune(args: argparse.Namespace) -> int:
    from openenv_gym.providers.docker import prune

    removed = prune(include_cli=args.all)
    print(f"removed {len(removed)} orphaned container(s) {' '.join(removed)}".rstrip())
    return 0


def add_commands(commands: Any) -> None:
    """Add ``docker build | up | ps | down | prune`` to the subcommands."""
    from openenv_gym.providers.docker import DEFAULT_CPUS, DEFAULT_MEMORY
    from openenv_gym.providers.docker_image import DEFAULT_IMAGE

    docker = commands.add_parser("docker", help="build and run server containers")
    sub = docker.add_subparsers(dest="docker_command", required=True)
    build = sub.add_parser("build", help="build the server image (wheelhouse, base, image)")
    build.add_argument("--tag", default=DEFAULT_IMAGE)
    build.add_argument(
        "--offline",
        action="store_true",
        help="no registry: build a Debian base with debootstrap + docker import",
    )
    build.add_argument(
        "--base-image",
        help="base image (default python:3.11-slim, or the debootstrap base with --offline)",
    )
    build.add_argument("--requirements", help="requirements file of env packages to install")
    build.add_argument("--rebuild-base", action="store_true", help="rebuild the offline base")
    build.set_defaults(run=_docker_build)
    up = sub.add_parser("up", help="start server containers and print their URLs")
    up.add_argument("specs", nargs="*", help="env ids to host (default: any gymnasium id)")
    up.add_argument("--image", default=DEFAULT_IMAGE)
    up.add_argument("-n", "--num-servers", type=int, default=1)
    up.add_argument("--cpus", type=float, default=DEFAULT_CPUS, help="CPU limit per container")
    up.add_argument("--memory", default=DEFAULT_MEMORY, help="memory limit per container")
    up.add_argument(
        "--token",
        default=os.environ.get("OPENENV_GYM_TOKEN"),
        help="token the servers require (default: $OPENENV_GYM_TOKEN, else a new one, printed)",
    )
    up.set_defaults(run=_docker_up)
    sub.add_parser("ps", help="list openenv-gym containers").set_defaults(run=_docker_ps)
    sub.add_parser("down", help="remove the containers `up` started").set_defaults(run=_docker_down)
    prune = sub.add_parser("prune", help="remove containers whose owner process is gone")
    prune.add_argument("--all", action="store_true", help="also those started by `up`")
    prune.set_defaults(run=_docker_prune)
