"""What the daemon holds of local ingress: start the components, apply reloads."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gatewayd.buffer import Buffer
from gatewayd.driver import Sink
from gatewayd.local.config import LocalConfig, disabled
from gatewayd.local.errors import ClientsFileError
from gatewayd.local.ingest import AckFlusher, LocalIngress
from gatewayd.supervisor import Supervisor

if TYPE_CHECKING:
    from gatewayd.local.mqtt import LocalMqttBroker

log = logging.getLogger(__name__)


class LocalService:
    """Local ingress in the daemon: ``local-ingest``, ``local-mqtt``, ``local-coap``.

    amqtt and aiocoap are imported only when a transport is configured.
    """

    def __init__(self, config: LocalConfig | None, *, buffer: Buffer, gateway_id: str) -> None:
        config = config or disabled()
        self.config = config
        self.ingress = LocalIngress(config, buffer=buffer, gateway_id=gateway_id)
        self.mqtt: LocalMqttBroker | None = None

    def device_sink(self, target: Sink) -> Sink:
        """The sink of a polled device: the buffer, plus the local telemetry fan-out."""
        return self.ingress.device_sink(target)

    def start(self, sup: Supervisor) -> None:
        cfg = self.config
        if not cfg.enabled:
            return
        sup.start(AckFlusher(self.ingress))
        if cfg.mqtt is not None and cfg.mqtt.enabled:
            from gatewayd.local.mqtt import LocalMqttBroker

            self.mqtt = LocalMqttBroker(cfg.mqtt, self.ingress)
            sup.start(self.mqtt)
        if cfg.coap is not None and cfg.coap.enabled:
            from gatewayd.local.coap import LocalCoapServer

            sup.start(LocalCoapServer(cfg.coap, self.ingress))

    async def stop(self, sup: Supervisor) -> None:
        for name in ("local-coap", "local-mqtt", "local-ingest"):
            await sup.stop(name)
        self.mqtt = None

    async def reload(self, new: LocalConfig | None, *, gateway_id: str,
                     sup: Supervisor) -> list[str]:
        """Apply a reloaded config and re-read the clients file (every SIGHUP). Returns
        the components restarted. A bad clients file is refused and the old one kept."""
        new = new or disabled()
        changed: list[str] = []
        old = self.config
        listeners_changed = (old.mqtt, old.coap) != (new.mqtt, new.coap)
        file_moved = old.clients_file != new.clients_file
        self.config = new
        self.ingress.reconfigure(new, gateway_id=gateway_id)
        if listeners_changed or file_moved or old.enabled != new.enabled:
            await self.stop(sup)
            self.ingress.clients_loaded = False
            self.start(sup)
            changed += [n for n in ("local-ingest", "local-mqtt", "local-coap")
                        if sup.component(n) is not None]
            return changed
        if not new.enabled:
            return changed
        try:
            gone = await self.ingress.load_clients()
        except ClientsFileError as err:
            for problem in err.problems:
                log.error("local: clients file reload refused: %s", problem)
            return changed
        if self.mqtt is not None and gone:
            await self.mqtt.disconnect_clients(gone)
        changed.append("local-clients")
        return changed
