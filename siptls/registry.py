"""Live connections (placeholder until the full registry lands)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from siptls.errors import ControlError


class ConnectionRecord:
    __slots__ = (
        "id", "direction", "local", "remote", "state", "created", "last_activity", "domain",
        "domain_reason", "sni", "tls_version", "cipher", "cipher_bits", "peer_subject",
        "peer_issuer", "peer_serial", "peer_not_after", "verification", "generation",
        "bytes_in", "bytes_out", "messages_in", "messages_out", "queued_cleartext", "_transport",
    )

    def __init__(self, id: int, direction: str, local: tuple[str, int], remote: tuple[str, int],
                 transport: Any, generation: int, now: float) -> None:
        self.id = id
        self.direction = direction
        self.local = local
        self.remote = remote
        self.state = "handshaking"
        self.created = self.last_activity = now
        self.domain = self.domain_reason = self.sni = self.tls_version = self.cipher = None
        self.cipher_bits = None
        self.peer_subject = self.peer_issuer = self.peer_serial = self.peer_not_after = None
        self.verification = None
        self.generation = generation
        self.bytes_in = self.bytes_out = self.messages_in = self.messages_out = 0
        self.queued_cleartext = 0
        self._transport = transport


class ConnectionRegistry:
    def __init__(self, clock: Any, max_connections: int = 2048) -> None:
        self.clock = clock
        self.max_connections = max_connections
        self._records: dict[int, ConnectionRecord] = {}
        self._next = 1
        self.refused_count = 0

    def open(self, direction: str, local: tuple[str, int], remote: tuple[str, int],
             transport: Any, generation: int) -> ConnectionRecord:
        record = ConnectionRecord(self._next, direction, local, remote, transport, generation,
                                  self.clock.seconds())
        self._next += 1
        self._records[record.id] = record
        return record

    def close(self, record: ConnectionRecord) -> None:
        self._records.pop(record.id, None)

    def at_capacity(self) -> bool:
        return len(self._records) >= self.max_connections

    def refused(self) -> None:
        self.refused_count += 1

    def handshake_done(self, record: ConnectionRecord) -> None:
        pass

    def handshake_failed(self, record: ConnectionRecord, reason: str) -> None:
        pass

    def get(self, id: int) -> ConnectionRecord:
        try:
            return self._records[id]
        except KeyError:
            raise ControlError(f"no TLS connection with id {id}") from None

    def kill(self, id: int) -> ConnectionRecord:
        record = self.get(id)
        record._transport.abortConnection()
        return record

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[ConnectionRecord]:
        return iter(list(self._records.values()))
