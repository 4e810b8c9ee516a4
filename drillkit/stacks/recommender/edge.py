"""The edge of a zoned stack: HAProxy in front of each zone's gateway.

drillkit writes HAProxy's configuration from the stack's plan (:func:`render_config`): one
server per zone gateway, active health checks (``GET /readyz``, ``inter``/``fall``/``rise``
from the scenario), passive ejection (``observe layer7``), retries that move to another zone
(``option redispatch 1``), ``backup`` servers for active-passive, the zone that answered in
an ``X-Zone`` header, and an admin listener with HAProxy's own Prometheus exporter
(``/metrics``) and stats page (``/stats``, ``/stats;csv``) from which drillkit dates when a
zone was taken out and put back (:mod:`drillkit.stacks.recommender.watch`).

A user's own configuration (``stack.edge.config``) runs instead, unchanged: it reaches the
zones and binds its listeners through environment variables that this wrapper sets before
it hands over to HAProxy::

    DRILLKIT_EDGE_LISTEN=HOST:PORT   where the drill's load arrives
    DRILLKIT_EDGE_ADMIN=HOST:PORT    where drillkit reads /stats;csv (stats uri /stats)
    DRILLKIT_ZONE_<NAME>=HOST:PORT   each zone's gateway, e.g. DRILLKIT_ZONE_A

(HAProxy expands ``"${DRILLKIT_ZONE_A}"`` in quoted configuration values.) :func:`check_config`
runs ``haproxy -c`` on it with placeholder values before a stack starts.

Run as ``python -m drillkit.stacks.recommender.edge --listen H:P --admin H:P --zone a=URL ...``;
HAProxy runs as this process's child (:mod:`drillkit.stacks.recommender.keeper`), in the
process group drillkit's kill and pause faults signal, so they act on HAProxy itself.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from drillkit.errors import BackendUnavailable, InputError
from drillkit.stacks.recommender.keeper import run_child
from drillkit.stacks.recommender.spec import EdgeSettings

__all__ = [
    "ADMIN_ENV",
    "BACKEND",
    "LISTEN_ENV",
    "ZONE_ENV_PREFIX",
    "check_config",
    "haproxy_binary",
    "render_config",
    "zone_env",
]

#: The HAProxy backend holding the zones, and the name of each server: the zone's name.
BACKEND = "zones"
LISTEN_ENV = "DRILLKIT_EDGE_LISTEN"
ADMIN_ENV = "DRILLKIT_EDGE_ADMIN"
ZONE_ENV_PREFIX = "DRILLKIT_ZONE_"
_CHECK_TIMEOUT = 20.0


def zone_env(zone: str) -> str:
    """The environment variable naming zone ``zone``'s gateway in a user's configuration."""
    return ZONE_ENV_PREFIX + zone.upper()


def required_program(name: str, role: str, package: str, alternative: str = "") -> str:
    """``name``'s path on the ``PATH``; exit 3 naming the Debian package that provides it
    when it is not installed."""
    found = shutil.which(name)
    if found is None:
        raise BackendUnavailable(
            f"{name} is not installed, and {role}: install Debian's package "
            f"(apt-get install {package}){alternative}"
        )
    return found


def haproxy_binary() -> str:
    """HAProxy's path; exit 3 naming the package when it is not installed."""
    return required_program("haproxy", "a zoned stack's edge is HAProxy", "haproxy")


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


@dataclass(frozen=True)
class Zone:
    name: str
    address: str  # HOST:PORT of the zone's gateway


def render_config(settings: EdgeSettings, zones: Sequence[Zone], *, listen: str, admin: str) -> str:
    """HAProxy's configuration for ``zones`` (the first is the primary in active-passive).

    ``listen`` and ``admin`` are HAProxy ``bind`` addresses (``HOST:PORT`` or ``fd@N``).
    """
    inter = _ms(settings.check_interval)
    lines = [
        "# Written by drillkit from the stack's plan; see drillkit.stacks.recommender.edge.",
        "global",
        "    maxconn 4096",
        "defaults",
        "    mode http",
        f"    timeout connect {_ms(min(settings.timeout, 0.5))}",
        "    timeout client 30s",
        f"    timeout server {_ms(settings.timeout)}",
        f"    timeout check {inter}",
        "    timeout http-keep-alive 10s",
        f"    retries {settings.retries}",
        # Every retry goes to another zone; a request whose zone died or hangs is answered
        # by the next one.
        "    option redispatch 1",
        "    retry-on conn-failure empty-response junk-response response-timeout 503",
        "frontend recommend",
        f"    bind {listen}",
        f"    default_backend {BACKEND}",
        f"backend {BACKEND}",
        "    balance roundrobin",
        # The zone that answered, for the drill's per-zone figures.
        "    http-response set-header X-Zone %[srv_name]",
    ]
    server_opts = ""
    if settings.health_checks:
        lines += [
            "    option httpchk GET /readyz",
            "    http-check expect status 200",
            f"    default-server inter {inter} fastinter {inter} downinter {inter} "
            f"fall {settings.fall} rise {settings.rise} "
            f"observe layer7 error-limit {settings.fall} on-error mark-down",
        ]
        server_opts = " check"
    for index, zone in enumerate(zones):
        backup = " backup" if settings.mode == "active-passive" and index > 0 else ""
        lines.append(f"    server {zone.name} {zone.address}{server_opts}{backup}")
    lines += [
        "frontend admin",
        f"    bind {admin}",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    stats enable",
        "    stats uri /stats",
        "    stats refresh 1s",
        "",
    ]
    return "\n".join(lines)


def check_config(path: Path, zones: Sequence[str]) -> None:
    """``haproxy -c`` on a user's configuration, with placeholder addresses in the
    environment variables it may use; InputError with HAProxy's first complaint when it is
    refused."""
    binary = haproxy_binary()
    if not path.is_file():
        raise InputError(f"stack.edge.config: {path}: no such file")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        LISTEN_ENV: "127.0.0.1:1",
        ADMIN_ENV: "127.0.0.1:2",
        **{zone_env(zone): "127.0.0.1:3" for zone in zones},
    }
    try:
        done = subprocess.run(
            [binary, "-c", "-f", str(path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=_CHECK_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailable(f"haproxy -c could not run: {exc}") from None
    if done.returncode != 0:
        # "[ALERT]    (123) : config : parsing [edge.cfg:3] : unknown keyword ...": the part
        # after the process id says where and what.
        complaints = [
            line.split(") : ", 1)[-1].strip()
            for line in (done.stderr + done.stdout).splitlines()
            if line.startswith("[ALERT]")
        ]
        first = complaints[0] if complaints else f"exit status {done.returncode}"
        raise InputError(f"stack.edge.config: {path}: haproxy -c refused it: {first[:300]}")


def _address(url: str) -> str:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise SystemExit(f"edge: error: {url!r} is not http://HOST:PORT")
    return f"{parts.hostname}:{parts.port}"


def _zone_arg(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected ZONE=URL, got {text!r}")
    return name, url


def _bind(address: str, inherited: int | None) -> str:
    """A bind line's address: the socket drillkit handed down when there is one (no other
    process can take the port meanwhile), else ``HOST:PORT``."""
    return address if inherited is None else f"fd@{inherited}"


def _write_config(text: str, workdir: Path | None) -> Path:
    """The configuration written to the stack's own folder (removed with the stack), or to a
    private temporary folder when that is not writable (a container's unprivileged user)."""
    if workdir is not None:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            path = workdir / "haproxy.cfg"
            path.write_text(text)
            return path
        except OSError:
            pass
    path = Path(tempfile.mkdtemp(prefix="drillkit-edge-")) / "haproxy.cfg"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drillkit-edge", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT for the drill's load")
    parser.add_argument("--admin", required=True, help="HOST:PORT for /stats and /metrics")
    parser.add_argument("--zone", type=_zone_arg, action="append", default=[])
    parser.add_argument("--check-interval", type=float, default=0.2)
    parser.add_argument("--fall", type=int, default=2)
    parser.add_argument("--rise", type=int, default=2)
    parser.add_argument("--no-health-checks", action="store_true")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--mode", default="active-active")
    parser.add_argument("--config", type=Path, help="the user's HAProxy configuration")
    parser.add_argument("--workdir", type=Path, help="where to write the configuration")
    args = parser.parse_args(argv)

    from drillkit.listen import inherited

    fds: dict[str, int] = {}
    for name in ("http", "admin"):
        try:
            sock = inherited(name)
        except ValueError as exc:
            raise SystemExit(f"edge: error: {exc}") from None
        if sock is not None:
            fds[name] = sock.detach()
    zones = [Zone(name, _address(url)) for name, url in args.zone]
    binary = haproxy_binary()
    env = {
        **os.environ,
        LISTEN_ENV: args.listen,
        ADMIN_ENV: args.admin,
        **{zone_env(zone.name): zone.address for zone in zones},
    }
    if args.config is not None:
        config = args.config
    else:
        settings = EdgeSettings(
            check_interval=args.check_interval,
            fall=args.fall,
            rise=args.rise,
            health_checks=not args.no_health_checks,
            retries=args.retries,
            timeout=args.timeout,
            mode=args.mode,
        )
        text = render_config(
            settings,
            zones,
            listen=_bind(args.listen, fds.get("http")),
            admin=_bind(args.admin, fds.get("admin")),
        )
        config = _write_config(text, args.workdir)
        print(text, file=sys.stderr, flush=True)
    # -db: stay in the foreground and log to stderr (the service's log); -W: master-worker
    # would put a second process between drillkit's signals and the proxy, so it is not used.
    raise SystemExit(
        run_child([binary, "-db", "-f", str(config)], env=env, pass_fds=list(fds.values()))
    )


if __name__ == "__main__":
    main()
