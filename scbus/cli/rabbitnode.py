"""
A private RabbitMQ node from Debian's rabbitmq-server package: its own ports, data
directory, node name and Erlang cookie, started and stopped by its owner. What the
tests run their broker on, and C{scbus dev-broker}: a broker to try the AMQP transport
with, one command and no system service.

Nothing here touches a system RabbitMQ. As root the node runs as Debian's C{rabbitmq}
user; otherwise as the user who starts it. Every wait is bounded.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
START_TIMEOUT = 90.0


def available() -> str | None:
    """None when a private node can be started here, else why not."""
    if not os.path.exists(SERVER):
        return "rabbitmq-server is not installed (apt-get install rabbitmq-server)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("rabbitmq")
        except KeyError:
            return "there is no rabbitmq user (install Debian's rabbitmq-server)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RabbitNode:
    """One node. C{start()}, C{stop()}, C{restart()}, C{ctl(...)}; C{url} to connect."""

    def __init__(
        self, name: str | None = None, port: int | None = None, base: str | None = None, cookie: str | None = None
    ) -> None:
        self.port = port or free_port()
        self.dist_port = free_port()
        self.name = f"{name or 'scbus-test-' + str(self.port)}@localhost"
        self.base = base or tempfile.mkdtemp(prefix="scbus-rabbit-")
        self.process: subprocess.Popen | None = None
        os.chmod(self.base, 0o755)
        for sub in ("mnesia", "log"):
            os.makedirs(os.path.join(self.base, sub), exist_ok=True)
        with open(os.path.join(self.base, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        config = os.path.join(self.base, "rabbitmq.conf")
        with open(config, "w") as f:
            f.write(
                "loopback_users.guest = true\n"
                "listeners.tcp.default = 127.0.0.1:%d\n"
                "disk_free_limit.absolute = 50MB\n"
                "vm_memory_high_watermark.relative = 0.2\n"
                "log.console = false\n"
                "log.file.level = warning\n" % self.port
            )
        if cookie is not None:
            # nodes that cluster must share the Erlang cookie
            path = os.path.join(self.base, ".erlang.cookie")
            with open(path, "w") as f:
                f.write(cookie)
            os.chmod(path, 0o400)
        if os.geteuid() == 0:
            user = pwd.getpwnam("rabbitmq")
            for root, dirs, files in os.walk(self.base):
                for entry in [root] + [os.path.join(root, n) for n in dirs + files]:
                    os.chown(entry, user.pw_uid, user.pw_gid)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def env(self) -> dict[str, str]:
        b = self.base
        return {
            "HOME": b,
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C.UTF-8",
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": os.path.join(b, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(b, "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(b, "enabled_plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": os.path.join(b, "feature_flags"),
            "RABBITMQ_CONFIG_FILE": os.path.join(b, "rabbitmq.conf"),
            "RABBITMQ_PID_FILE": os.path.join(b, "pid"),
        }

    def _as_rabbitmq(self, argv: list[str]) -> list[str]:
        """C{argv} in the node's own environment, as the rabbitmq user when run by root."""
        user = ["runuser", "-u", "rabbitmq", "--"] if os.geteuid() == 0 else []
        return [*user, "env", "-i", *(f"{k}={v}" for k, v in self.env().items()), *argv]

    def add_config(self, line: str) -> None:
        """Append a line to rabbitmq.conf (before start or a restart)."""
        with open(os.path.join(self.base, "rabbitmq.conf"), "a") as f:
            f.write(line + "\n")

    def start(self) -> None:
        log = open(os.path.join(self.base, "log", "server.out"), "ab")
        self.process = subprocess.Popen(
            self._as_rabbitmq([SERVER]), stdout=log, stderr=subprocess.STDOUT, cwd=self.base,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.ctl("await_startup", "--timeout", "30", timeout=40)
                break
            except Exception as e:  # the node is not registered with epmd yet
                exited = self.process.poll() is not None
                if exited or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"RabbitMQ node {self.name} did not start ({e}):\n{self.server_output()}"
                    ) from None
                time.sleep(0.5)
        self._wait_for_port()

    def _wait_for_port(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"RabbitMQ node {self.name} does not listen on {self.port}")

    def server_output(self) -> str:
        try:
            with open(os.path.join(self.base, "log", "server.out"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        out = subprocess.run(
            self._as_rabbitmq([CTL, "-n", self.name, *args]),
            capture_output=True, text=True, timeout=timeout, cwd=self.base,
        )
        if out.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {out.stdout}{out.stderr}")
        return out.stdout

    def queue_depth(self, queue: str) -> int | None:
        for line in self.ctl("list_queues", "-q", "--no-table-headers", "name", "messages").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue:
                return int(parts[1])
        return None

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            self.ctl("stop", timeout=60)
        except Exception:
            pass
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)
            except ProcessLookupError:
                pass
            self.process.wait(10)
        self.process = None
        subprocess.run(["pkill", "-9", "-f", "--", f"RABBITMQ_NODENAME={self.name}|sname {self.name.split('@')[0]}"], check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)
