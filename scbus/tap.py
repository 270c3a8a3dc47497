"""
twistd's entry point: C{twistd -n scbus --config=scbus.toml}.

The config is read, and every app's builder imported and called, while the command line
is parsed, so a bad file stops twistd with one line and a non-zero exit before anything
listens or connects.

twistd imports its reactor only after that, unless C{--reactor} installed one while its
own options were parsed: so C{bus.reactor = "asyncio"} is installed here, after the
config is read and before any builder's import could install the default one; when
twistd already installed another, the key is an error naming C{--reactor=asyncio}.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

from .config import Config, app_bus_options, load_and_build, opentelemetry_installed
from .coroutines import event_loop_of
from .errors import ConfigError
from .reactors import IBusReactor
from .servicetree import BusServiceTree

__all__ = ["Options", "install_reactor", "makeService", "make_bus_service"]


class Options(usage.Options):
    synopsis = "--config=FILE"
    longdesc = (
        "Run the scbus message bus with the apps, transport and console that FILE (TOML) "
        "names. See the README and docs/config.md."
    )
    optParameters = [
        ["config", "c", None, "Path of the TOML configuration file (required)."],
        ["http-port", None, None, "This process's HTTP port instead of http.port (0: any free port, logged)."],
        ["telnet-port", None, None, "This process's telnet console port instead of console.telnet_port (0: any)."],
        ["ssh-port", None, None, "This process's SSH console port instead of console.ssh_port (0: any)."],
    ]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config=FILE is required")
        try:
            loaded = load_and_build(self["config"], before_build=install_reactor)
        except ConfigError as e:
            sys.stderr.writelines(f"scbus: {line}\n" for line in e.lines())
            raise SystemExit(2) from None
        self._override_ports(loaded.config)
        # Warnings (a console without its passwd file, ...) are logged by the part that
        # acts on them once the bus runs; check-config prints them.
        self.loaded = (loaded.config, loaded.subscriptions)

    def _override_ports(self, config: Config) -> None:
        """
        Ports for this process alone, so that several processes of one config run on one
        host. The HTTP endpoints may be turned on this way; a console needs its users in
        the config, so only a configured console port moves.
        """
        for option, section, key in (
            ("http-port", config.http, "port"),
            ("telnet-port", config.console, "telnet_port"),
            ("ssh-port", config.console, "ssh_port"),
        ):
            value = self[option]
            if value is None:
                continue
            if not value.isdigit() or int(value) > 65535:
                raise usage.UsageError(f"--{option}: expected a port from 0 to 65535, got {value!r}")
            if option != "http-port" and getattr(section, key) is None:
                raise usage.UsageError(f"--{option}: {self['config']} has no console.{key} to move")
            setattr(section, key, int(value))


def install_reactor(config: Config) -> None:
    """
    Install the reactor C{bus.reactor} names, or check that twistd installed it already.
    @raise ConfigError: another reactor is installed, so that the key cannot be honoured.
    """
    if config.bus.reactor != "asyncio":
        return
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
        return
    from twisted.internet import reactor

    if event_loop_of(reactor) is None:
        raise ConfigError(
            config.source,
            "bus.reactor",
            f'"asyncio" cannot be honoured: the reactor is already {type(reactor).__module__}.'
            f"{type(reactor).__name__} (twistd's --reactor, or an import); run twistd --reactor=asyncio -n scbus ...",
        )


def make_transport(config: Config, reactor: IBusReactor | None = None) -> Any:
    """The transport the config names."""
    if config.transport.type == "local":
        from .transports.local import LocalTransport

        return LocalTransport(
            reactor,
            max_message_size=config.transport.max_message_size,
            max_nesting=config.transport.max_nesting,
            set_aside_limit=config.transport.set_aside_limit,
        )
    if config.transport.type == "amqp":
        from .transports.amqp import AMQPTransport

        return AMQPTransport(config.transport.amqp, reactor, bus_name=config.bus.name)
    if config.transport.type == "sqlite":
        from .transports.sqlite import SQLiteTransport

        return SQLiteTransport(config.transport.sqlite, reactor, bus_name=config.bus.name)
    raise ConfigError(config.source, "transport.type", f"unknown transport {config.transport.type!r}")


def make_bus_service(
    config: Config, subscriptions: dict[str, Any], reactor: IBusReactor | None = None
) -> BusServiceTree:
    """
    Transport, main bus and console in one service, started in that order; on stop the
    bus drains first, then the console and the transport stop.
    """
    from .appbus import ApplicationMessageBus
    from .console import make_console_service
    from .mainbus import MainMessageBus

    transport = make_transport(config, reactor)
    bus = MainMessageBus(
        config.bus.name, transport, reactor=reactor, grace_period=config.bus.grace_period
    )
    for name, subs in subscriptions.items():
        app = config.apps[name]
        app_bus = ApplicationMessageBus(name, subs, reactor=reactor, **app_bus_options(app))
        bus.add_app(
            name, app_bus, subs, max_in_flight=app.max_in_flight, stuck_after=app.stuck_after, idle=app.idle
        )
    if config.bus.tracing != "off" and opentelemetry_installed():
        from .tracing import tracing_wanted

        if tracing_wanted(config.bus.tracing):
            bus.enable_tracing()
    top = BusServiceTree(transport, bus)
    if config.console.enabled:
        try:
            top.add_listener(make_console_service(bus, config.console))
        except ConfigError as e:
            sys.stderr.write(f"scbus: {e}\n")
            raise SystemExit(2) from None
    if config.http.enabled:
        from .web import make_http_service

        top.add_listener(
            make_http_service(bus, config.http, max_message_size=config.transport.max_message_size)
        )
    return top


def makeService(options: Options) -> Any:
    """The bus's service tree; under twistd, topped by the root that filters its log."""
    from .logs.bridge import FilteredLogRoot, level_filter, route_stdlib_logging, twistd_observer

    config, subscriptions = options.loaded
    route_stdlib_logging(config.bus.log_level, config.bus.log_levels)
    service = make_bus_service(config, subscriptions)
    if options.parent is None:  # not under twistd: the caller owns logging
        return service
    predicate = level_filter(config.bus.log_level, config.bus.log_levels)
    if config.bus.log_format == "json":
        from .logs.jsonformat import twistd_json_observer

        return FilteredLogRoot(service, twistd_json_observer(options.parent, predicate))
    return FilteredLogRoot(service, twistd_observer(options.parent, predicate))
