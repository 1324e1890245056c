"""The server side of the control channel: AMP responders over the registry and the server.

`ControlLocator` answers the commands of `siptls.control.commands` from a
`siptls.registry.ConnectionRegistry` (connections, counters, kill) and an
`siptls.interfaces.IControlTarget` (generation, uptime, options, reload).
One locator serves one control connection; it holds no state of its own.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from siptls.control.commands import (
    CONNECTION_ENTRY,
    DOMAIN_ENTRY,
    MAX_LIST_LIMIT,
    NAME_VALUE_LIST,
    PAGE_BYTES,
    TLSInfo,
    TLSKill,
    TLSList,
    TLSOptions,
    TLSReload,
    clip,
    fit_page,
)
from siptls.errors import ConfigError, ControlError
from siptls.interfaces import IControlTarget
from siptls.registry import ConnectionRecord, ConnectionRegistry

__all__ = ["DEFAULT_LIST_LIMIT", "ControlLocator", "connection_entry"]

#: Page size `TLSList` uses when the client does not ask for one.
DEFAULT_LIST_LIMIT = 100

# An error message travels in one AMP value; keep it well inside the limit.
_ERROR_MESSAGE_LIMIT = 4_000

_TEXT_FIELDS = (
    "domain",
    "domain_reason",
    "sni",
    "tls_version",
    "cipher",
    "peer_subject",
    "peer_issuer",
    "peer_serial",
    "peer_not_after",
    "verification",
)


def _text(value: object) -> str:
    return "" if value is None else clip(str(value))


def connection_entry(record: ConnectionRecord) -> dict[str, Any]:
    """The `TLSList` wire entry for ``record``: every field, text clipped."""
    entry: dict[str, Any] = {
        "id": record.id,
        "direction": record.direction,
        "local_host": clip(record.local[0]),
        "local_port": record.local[1],
        "remote_host": clip(record.remote[0]),
        "remote_port": record.remote[1],
        "state": record.state,
        "created": record.created,
        "last_activity": record.last_activity,
        "cipher_bits": record.cipher_bits,
        "generation": record.generation,
        "bytes_in": record.bytes_in,
        "bytes_out": record.bytes_out,
        "messages_in": record.messages_in,
        "messages_out": record.messages_out,
        "queued_cleartext": record.queued_cleartext,
    }
    for name in _TEXT_FIELDS:
        value = getattr(record, name)
        entry[name] = None if value is None else clip(value)
    return entry


class ControlLocator(amp.CommandLocator):
    """Responders for ``tls.info``, ``tls.list``, ``tls.options``, ``tls.kill``, ``tls.reload``."""

    _log = Logger()

    def __init__(self, registry: ConnectionRegistry, target: IControlTarget) -> None:
        self._registry = registry
        self._target = target

    @TLSInfo.responder
    def info(self) -> dict[str, Any]:
        counters = self._registry.info()
        failed = sorted(counters["handshakes_failed"].items())
        return {
            "max_connections": counters["max_connections"],
            "opened_connections": counters["opened_connections"],
            "clear_text_write_queued_bytes": counters["clear_text_write_queued_bytes"],
            "uptime": float(self._target.uptime()),
            "generation": int(self._target.generation()),
            "handshakes_ok": counters["handshakes_ok"],
            "handshakes_failed": [{"reason": clip(r), "count": n} for r, n in failed],
            "refused": counters["refused"],
            "opened_total": counters["opened_total"],
            "generations": [
                {"generation": g, "connections": n}
                for g, n in sorted(self._registry.by_generation().items())
            ],
        }

    @TLSList.responder
    def list_connections(
        self,
        offset: int | None,
        limit: int | None,
        after: int | None,
        peer: str | None,
        domain: str | None,
        sni: str | None,
    ) -> dict[str, Any]:
        offset = 0 if offset is None else offset
        limit = DEFAULT_LIST_LIMIT if limit is None else min(limit, MAX_LIST_LIMIT)
        records, total = self._registry.query(
            offset=offset, limit=limit, peer=peer, domain=domain, sni=sni, after=after
        )
        page = fit_page(CONNECTION_ENTRY, (connection_entry(r) for r in records), PAGE_BYTES)
        if not page and records:
            raise ControlError(f"TLS connection {records[0].id} does not fit in one control reply.")
        count = len(page)
        more = offset + count < total
        return {
            "connections": page,
            "total": total,
            "more": more,
            "next_offset": offset + count if more else None,
            "last_id": records[count - 1].id if count else None,
        }

    @TLSOptions.responder
    def options(self, domain_offset: int | None) -> dict[str, Any]:
        start = 0 if domain_offset is None else domain_offset
        if start < 0:
            raise ControlError(f"domain_offset must not be negative (got {start}).")
        global_pairs, domains = self._target.options()
        globals_ = [{"name": clip(str(n)), "value": _text(v)} for n, v in global_pairs]
        if len(fit_page(NAME_VALUE_LIST, globals_, PAGE_BYTES)) < len(globals_):
            raise ControlError("The global TLS options do not fit in one control reply.")
        entries = (
            {
                "domain": clip(str(name)),
                "settings": [{"name": clip(str(n)), "value": _text(v)} for n, v in settings],
            }
            for name, settings in domains[start:]
        )
        page = fit_page(DOMAIN_ENTRY, entries, PAGE_BYTES)
        if not page and start < len(domains):
            raise ControlError(
                f"The settings of TLS domain {domains[start][0]} do not fit in one control reply."
            )
        following = start + len(page)
        return {
            "globals": globals_,
            "domains": page,
            "domain_total": len(domains),
            "next_domain_offset": following if following < len(domains) else None,
        }

    @TLSKill.responder
    def kill(self, id: int) -> dict[str, Any]:
        record = self._registry.kill(id)
        return {
            "id": record.id,
            "remote_host": record.remote[0],
            "remote_port": record.remote[1],
            "domain": record.domain,
        }

    @TLSReload.responder
    def reload(self) -> Deferred[dict[str, Any]]:
        self._log.info("TLS configuration reload requested over the control channel")

        def reloaded(generation: int) -> dict[str, Any]:
            self._log.info(
                "TLS configuration reloaded: generation {generation}", generation=generation
            )
            return {"generation": int(generation)}

        def refused(failure: Failure) -> Failure:
            error = failure.check(ConfigError, ControlError)
            if error is not None:
                message = str(failure.value)
                self._log.warn(
                    "TLS configuration reload refused: {message}",
                    message=clip(message, _ERROR_MESSAGE_LIMIT),
                )
                if len(message) > _ERROR_MESSAGE_LIMIT:
                    return Failure(error(clip(message, _ERROR_MESSAGE_LIMIT)))
            return failure

        started = cast("Deferred[int]", maybeDeferred(self._target.reload))
        return started.addCallbacks(reloaded, refused)
