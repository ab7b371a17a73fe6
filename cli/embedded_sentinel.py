"""A Sentinel group on loopback: a primary, replicas and sentinels, each a redis-server child process.

For the failover tests and ``make bench-failover``: ``SentinelGroup(...).start()`` gives a ``redis+sentinel://``
URL, ``kill_primary()`` does what a crash does, and ``restart(server)`` brings a killed node back, which the
sentinels then make a replica of the new primary.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from corral.common.errors import BackendUnavailable

from .embedded_redis import RedisServer, redis_conf, redis_server_binary

MASTER = "corral"


class DataNode(RedisServer):
    """A primary or replica with a configuration file of its own: the sentinels rewrite it (CONFIG REWRITE). With
    ``tls`` (a directory of ``ca.crt``, ``server.crt``, ``server.key``) its port speaks TLS only."""

    tls: Path | None = None

    def command(self) -> list[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "redis.conf"
        if not conf.exists():
            shutil.copyfile(redis_conf(), conf)
        command = super().command()
        command[1] = str(conf)
        if self.tls is not None:
            command[command.index("--port") + 1] = "0"
            command += ["--tls-port", str(self.port)]
            command += [
                a for line in _tls_config(self.tls) for a in (f"--{line.split()[0]}", line.split()[1])
            ]
        return [*command, "--logfile", str(self.data_dir / "redis.log")]


class SentinelProcess:
    """One sentinel: redis-server in sentinel mode, with the configuration file it rewrites."""

    def __init__(self, port: int, directory: Path, config: list[str], password: str = "",
                 tls: Path | None = None) -> None:  # fmt: skip
        self.port = port
        self.tls = tls
        self.directory = directory
        self.config = config
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    def _client(self) -> redis.Redis:
        return redis.Redis(
            "127.0.0.1", self.port, password=self.password or None, socket_timeout=2, **_tls_kwargs(self.tls)
        )

    def ask(self, *command: str) -> Any:
        with self._client() as client:
            return client.execute_command(*command)

    def master_state(self) -> dict[str, Any]:
        with self._client() as client:
            state: dict[str, Any] = client.sentinel_master(MASTER)
            return state

    def start(self) -> SentinelProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "sentinel.conf"
        ports = (
            [f"port {self.port}"]
            if self.tls is None
            else ["port 0", f"tls-port {self.port}", *_tls_config(self.tls)]
        )
        lines = [*ports, "bind 127.0.0.1", f"dir {self.directory}", "logfile sentinel.log"]
        conf.write_text("\n".join([*lines, *self.config]))
        self.process = subprocess.Popen(
            [redis_server_binary(), str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        _wait(lambda: bool(self.ask("PING")), f"sentinel :{self.port}")
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class SentinelGroup:
    """A primary, ``replicas`` replicas and ``sentinels`` sentinels (quorum: a majority) on loopback ports.

    ``password`` (with ``username``, an ACL user) guards the data nodes, ``sentinel_password`` the sentinels.
    """

    def __init__(self, directory: Path, ports: Callable[[], int], replicas: int = 1, sentinels: int = 3,
                 password: str = "", username: str = "", sentinel_password: str = "",
                 down_after_ms: int = 1000, tls: Path | None = None) -> None:  # fmt: skip
        self.directory = directory
        self.tls = tls
        self.password, self.username, self.sentinel_password = password, username, sentinel_password
        ports = _distinct(ports)
        # a replica's full sync starts at once (the default waits 5 s for more replicas to share it)
        auth = [*self._node_auth(), "--repl-diskless-sync-delay", "0"]
        self.nodes = [DataNode(port=ports(), data_dir=directory / f"node{i}", extra=auth,
                                  ping_url=self._node_url(0)) for i in range(1 + replicas)]  # fmt: skip
        for node in self.nodes:
            node.ping_url = self._node_url(node.port)
            node.tls = tls
        config = [
            f"sentinel monitor {MASTER} 127.0.0.1 {self.nodes[0].port} {sentinels // 2 + 1}",
            f"sentinel down-after-milliseconds {MASTER} {down_after_ms}",
            f"sentinel failover-timeout {MASTER} {max(3 * down_after_ms, 3000)}",
            f"sentinel parallel-syncs {MASTER} 1",
            *([f"sentinel auth-pass {MASTER} {password}"] if password else []),
            *([f"sentinel auth-user {MASTER} {username}"] if username else []),
            *([f"requirepass {sentinel_password}"] if sentinel_password else []),
        ]
        self.sentinels = [
            SentinelProcess(ports(), directory / f"sentinel{i}", config, sentinel_password, tls)
            for i in range(sentinels)
        ]

    def _node_auth(self) -> list[str]:
        if not self.password:
            return []
        out = ["--masterauth", self.password]
        if self.username:  # an ACL user of its own, which replication and the sentinels use too
            acl = [self.username, "on", f">{self.password}", "~*", "&*", "+@all"]
            # the default user gets a password no one knows (redis 7.0 takes one --user on its command line)
            out += ["--masteruser", self.username, "--user", *acl, "--requirepass", secrets.token_hex(16)]
        else:
            out += ["--requirepass", self.password]
        return out

    def _node_url(self, port: int) -> str:
        user = quote(self.username) if self.username else ""
        auth = f"{user}:{quote(self.password)}@" if self.password else ""
        if self.tls is not None:
            return f"rediss://{auth}127.0.0.1:{port}/0?ssl_ca_certs={self.tls / 'ca.crt'}"
        return f"redis://{auth}127.0.0.1:{port}/0"

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL of the group (the sentinel password is not in it: see ``url_options``)."""
        user = quote(self.username) if self.username else ""
        auth = f"{user}:{quote(self.password)}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        if self.tls is not None:
            return f"rediss+sentinel://{auth}{hosts}/{MASTER}/0?ssl_ca_certs={self.tls / 'ca.crt'}"
        return f"redis+sentinel://{auth}{hosts}/{MASTER}/0"

    def start(self) -> SentinelGroup:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        primary = self.nodes[0].start()
        for replica in self.nodes[1:]:
            replica.extra = [*replica.extra, "--replicaof", "127.0.0.1", str(primary.port)]
            replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        _wait(self._settled, "the sentinels to see the primary and its replicas", 30)

    def _settled(self) -> bool:
        for sentinel in self.sentinels:
            info = sentinel.master_state()
            if (
                info["num-slaves"] < len(self.nodes) - 1
                or info["num-other-sentinels"] < len(self.sentinels) - 1
            ):
                return False
        return self.replicas_in_sync()

    def primary_port(self) -> int:
        """The primary's port, as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                address = sentinel.ask("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
                return int(address[1])
        raise BackendUnavailable("no sentinel answers")

    def node(self, port: int) -> DataNode:
        return next(n for n in self.nodes if n.port == port)

    def kill_primary(self) -> DataNode:
        """SIGKILL the primary (its unreplicated writes are lost with it); the killed node."""
        node = self.node(self.primary_port())
        node.kill()
        return node

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> int:
        """Wait until every sentinel names a primary other than ``old_port`` that answers as one; its port."""

        def promoted() -> bool:
            ports = {self._named(s) for s in self.sentinels}
            if len(ports) != 1 or old_port in ports or None in ports:
                return False
            role = redis.Redis.from_url(self._node_url(ports.pop() or 0), socket_timeout=1).execute_command(
                "ROLE"
            )
            return bool(role[0] == b"master")

        _wait(promoted, "a failover", timeout)
        return self.primary_port()

    def _node_ask(self, port: int, *command: str) -> Any:
        with redis.Redis.from_url(self._node_url(port), socket_timeout=1) as client:
            return client.execute_command(*command)

    def _named(self, sentinel: SentinelProcess) -> int | None:
        try:
            return int(sentinel.ask("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)[1])
        except (redis.RedisError, TypeError):
            return None

    def restart(self, node: DataNode, timeout: float = 30.0) -> None:
        """Start a killed node again (the sentinels make it a replica) and wait until every replica is in sync."""
        node.start()
        _wait(self.replicas_in_sync, "the replicas to sync", timeout)

    def replicas_in_sync(self) -> bool:
        with redis.Redis.from_url(self._node_url(self.primary_port()), socket_timeout=1) as primary:
            info = primary.info("replication")
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        return len(online) == len(self.nodes) - 1 and all(
            r.get("state") == "online" and r.get("offset", -1) >= info["master_repl_offset"] - 1_000_000
            for r in online
        )

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.kill()
        for node in self.nodes:
            node.kill()


def _tls_config(certs: Path) -> list[str]:
    """Configuration lines of a TLS node or sentinel (clients need no certificate; replication is TLS too)."""
    return [
        f"tls-cert-file {certs / 'server.crt'}",
        f"tls-key-file {certs / 'server.key'}",
        f"tls-ca-cert-file {certs / 'ca.crt'}",
        "tls-auth-clients no",
        "tls-replication yes",
    ]


def _tls_kwargs(certs: Path | None) -> dict[str, Any]:
    return {} if certs is None else {"ssl": True, "ssl_ca_certs": str(certs / "ca.crt")}


def _distinct(ports: Callable[[], int]) -> Callable[[], int]:
    """``ports`` that never gives the same port twice (a free port is free until someone binds it)."""
    seen: set[int] = set()

    def port() -> int:
        while (found := ports()) in seen:
            pass
        seen.add(found)
        return found

    return port


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError, KeyError, IndexError):
            if predicate():
                return
        if time.monotonic() > deadline:
            raise BackendUnavailable(f"timed out waiting for {what}")
        time.sleep(0.05)
