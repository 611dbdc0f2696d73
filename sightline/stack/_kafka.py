"""Runs a single-node KRaft Apache Kafka broker as a child JVM.

State lives in ``<data_dir>/kafka``: ``logs/`` (the log dirs, formatted once),
``server.properties``, ``ports.json`` (ports chosen at format time and reused, since
the controller's address is recorded in the metadata log), ``broker.pid`` and
``broker.log``. Data persists across ``stop``/``start``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from sightline.settings import Settings

log = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[2]


class KafkaStackError(Exception):
    """The local broker could not be started, reached or stopped; the message says why."""


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


_LOG4J = """\
status = warn
appender.file.type = Console
appender.file.name = STDOUT
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.started.name = kafka.server.BrokerServer
logger.started.level = INFO
"""


class LocalKafka:
    """Start, stop and inspect the embedded broker for one data directory."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.home = settings.kafka_dir
        self.jars = settings.kafka.jars_dir or _REPO_ROOT / ".kafka" / "lib"

    # -- state files -------------------------------------------------------------
    @property
    def _pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    def _ports(self) -> dict[str, int] | None:
        path = self.home / "ports.json"
        return json.loads(path.read_text()) if path.exists() else None

    def pid(self) -> int | None:
        try:
            pid = int(self._pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    @property
    def bootstrap(self) -> str:
        ports = self._ports()
        if not ports:
            raise KafkaStackError(f"the local broker in {self.home} was never started; run 'sightline stack up'")
        return f"127.0.0.1:{ports['broker']}"

    def running(self) -> bool:
        ports = self._ports()
        return self.pid() is not None and bool(ports) and _answers(ports["broker"])

    # -- lifecycle ---------------------------------------------------------------
    def _java_cmd(self, main_class: str, *args: str, heap_mb: int) -> list[str]:
        if not self.jars.is_dir() or not any(self.jars.glob("kafka_2.13-*.jar")):
            raise KafkaStackError(f"Kafka jars not found in {self.jars}; run 'make install' (it resolves them with Maven)")
        log4j = self.home / "log4j2.properties"
        log4j.write_text(_LOG4J)
        return [
            "java", f"-Xmx{heap_mb}m", f"-Xms{min(heap_mb, 256)}m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            *(["-XX:TieredStopAtLevel=1"] if self._settings.kafka.jit == "c1" else []),
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}",
            "-cp", f"{self.jars}/*", main_class, *args,
        ]

    def _write_config(self, ports: dict[str, int]) -> Path:
        k = self._settings.kafka
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{ports['controller']}",
            "listeners": f"PLAINTEXT://127.0.0.1:{ports['broker']},CONTROLLER://127.0.0.1:{ports['controller']}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{ports['broker']}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str((self.home / "logs").resolve()),
            "num.partitions": str(k.partitions),
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            "log.retention.hours": str(k.retention_hours),
            "log.flush.interval.messages": "9223372036854775807",
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        path = self.home / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
        return path

    def start(self, timeout_s: float = 90.0) -> str:
        """Start the broker (formatting its log dir the first time); return the bootstrap address."""
        if self.running():
            return self.bootstrap
        self.home.mkdir(parents=True, exist_ok=True)
        ports = self._ports()
        if ports is None:
            preferred = self._settings.kafka.port
            broker = preferred if _port_free(preferred) else _free_port()
            if broker != preferred:
                log.info("port %d is taken; the local broker uses %d", preferred, broker)
            controller = _free_port()
            while controller == broker:
                controller = _free_port()
            ports = {"broker": broker, "controller": controller}
        else:
            busy = [f"{name} port {port}" for name, port in ports.items() if not _port_free(port)]
            if busy:
                raise KafkaStackError(
                    f"{' and '.join(busy)} of the local broker in {self.home} is in use by another process; "
                    "stop it, or remove that data directory to start afresh"
                )
        config = self._write_config(ports)
        if not (self.home / "logs" / "meta.properties").exists():
            cmd = self._java_cmd("kafka.tools.StorageTool", *_format_args(_kafka_uuid(), config), heap_mb=256)
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                raise KafkaStackError(f"formatting the Kafka log dir failed: {out.stderr.strip() or out.stdout.strip()}")
        (self.home / "ports.json").write_text(json.dumps(ports))
        with open(self.log_file, "ab") as logf:
            proc = subprocess.Popen(
                self._java_cmd("kafka.Kafka", str(config), heap_mb=self._settings.kafka.heap_mb),
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self._pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-2000:]
                raise KafkaStackError(f"the Kafka broker exited with code {proc.returncode}; last log lines:\n{tail}")
            if _answers(ports["broker"]) and _metadata_ok(self.bootstrap):
                log.info("Kafka broker up at %s (pid %d)", self.bootstrap, proc.pid)
                return self.bootstrap
            time.sleep(0.3)
        self.stop()
        raise KafkaStackError(f"the Kafka broker did not answer within {timeout_s:.0f}s; see {self.log_file}")

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout_s``); False if it was not running."""
        pid = self.pid()
        if pid is None:
            self._pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                break
            time.sleep(0.2)
        else:
            log.warning("broker pid %d ignored SIGTERM for %.0fs; killing it", pid, timeout_s)
            os.kill(pid, signal.SIGKILL)
        self._pid_file.unlink(missing_ok=True)
        return True


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kafka_uuid() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _format_args(cluster_id: str, config: Path) -> tuple[str, ...]:
    """StorageTool's format arguments, with the id bound by '=' because about one id in 64
    starts with '-', which argparse would take for an option and then report the id missing."""
    return ("format", f"--cluster-id={cluster_id}", f"--config={config}", "--standalone")


def _metadata_ok(bootstrap: str) -> bool:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def kafka_bootstrap(settings: Settings) -> str:
    """The bootstrap address to use: the external cluster's, or the local broker's."""
    if settings.kafka.bootstrap:
        return settings.kafka.bootstrap
    return LocalKafka(settings).bootstrap
