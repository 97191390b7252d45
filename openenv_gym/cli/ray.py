"""``openenv-gym ray up | ps | down``: long-lived servers as detached Ray actors on a cluster."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from openenv_gym.errors import ServerStartError


def _connect(address: str | None) -> None:
    """Join the cluster at ``address`` (default: the running one) in our namespace."""
    import ray

    from openenv_gym.providers.ray import NAMESPACE

    try:
        ray.init(address=address or "auto", namespace=NAMESPACE, log_to_driver=False)
    except ConnectionError as exc:
        # A Ray started by this command would die with it, and its servers too.
        raise ServerStartError(
            f"no running ray cluster at {address or 'auto'} ({exc}); start one "
            "(`ray start --head`) or pass --address HOST:PORT"
        ) from exc


def _ray_up(args: argparse.Namespace) -> int:
    from openenv_gym.providers import embedded_server_args
    from openenv_gym.providers.ray import RayProvider

    _connect(args.address)
    provider = RayProvider(
        args.specs,
        num_servers=args.num_servers,
        num_cpus=args.num_cpus,
        resources=json.loads(args.resources) if args.resources else None,
        strategy=args.strategy,
        token=args.token,
        bind=args.bind,
        name=args.name,
        detached=True,
        startup_timeout=args.startup_timeout,
        server_args=embedded_server_args({}) if args.allow_set_attr else (),
    )
    for index, url in enumerate(provider.urls):
        print(f"{provider.name}-{index}  {url}")
    if args.token is None:  # a new one: clients need it (export it as OPENENV_GYM_TOKEN)
        print(f"OPENENV_GYM_TOKEN={provider.token}")
    return 0


def _ray_ps(args: argparse.Namespace) -> int:
    from openenv_gym.providers.ray_deploy import list_servers

    _connect(args.address)
    print(f"{'ACTOR':28}  {'STATUS':6}  {'URL':28}  SPECS")
    for server in list_servers(args.name):
        status = "alive" if server.alive else "gone"
        specs = " ".join(arg for arg in server.args if not arg.startswith("-"))
        print(f"{server.actor_name:28}  {status:6}  {server.url or '-':28}  {specs}")
    return 0


def _ray_down(args: argparse.Namespace) -> int:
    from openenv_gym.providers.ray_deploy import remove

    _connect(args.address)
    removed = remove(args.name)
    print(f"removed {len(removed)} server(s) {' '.join(removed)}".rstrip())
    return 0


def add_commands(commands: Any) -> None:
    """Add ``ray up | ps | down``."""
    ray = commands.add_parser("ray", help="long-lived servers as Ray actors on a cluster")
    sub = ray.add_subparsers(dest="ray_command", required=True)
    address = argparse.ArgumentParser(add_help=False)
    address.add_argument(
        "--address", help="the cluster (HOST:PORT, ray://HOST:PORT; default: the running one)"
    )
    address.add_argument("--name", help="one group of servers (default: up: a new name; all)")
    up = sub.add_parser("up", parents=[address], help="start servers and print their URLs")
    up.add_argument("specs", nargs="+", help="env ids / module:attr entry points to host")
    up.add_argument("-n", "--num-servers", type=int, default=1)
    up.add_argument("--num-cpus", type=float, default=1.0, help="CPUs each server reserves")
    up.add_argument("--resources", help="custom resources per server, JSON: '{\"env\": 1}'")
    up.add_argument("--strategy", default="SPREAD", choices=["SPREAD", "PACK"])
    up.add_argument(
        "--bind",
        default="auto",
        choices=["auto", "node"],
        help="auto: loopback on this machine, the node address elsewhere; node: always the "
        "node address (clients on other machines; the token then travels in clear text)",
    )
    up.add_argument(
        "--allow-set-attr", action="store_true", help="clients may set any public attribute"
    )
    up.add_argument("--startup-timeout", type=float, default=120.0)
    up.add_argument(
        "--token",
        default=os.environ.get("OPENENV_GYM_TOKEN"),
        help="token the servers require (default: $OPENENV_GYM_TOKEN, else a new one, printed)",
    )
    up.set_defaults(run=_ray_up)
    ps = sub.add_parser("ps", parents=[address], help="list the servers `up` started")
    ps.set_defaults(run=_ray_ps)
    down = sub.add_parser("down", parents=[address], help="remove the servers `up` started")
    down.set_defaults(run=_ray_down)
