"""The registry of live TLS connections: ids, TLS facts, counters, kill, generations.

The SIP-over-TLS protocol opens a `ConnectionRecord` when a TCP connection is
accepted or made, fills in the TLS facts as it learns them (domain, SNI,
version, cipher, peer certificate), updates the byte and message counters, and
closes the record when the connection is lost.  The control channel reads the
registry (``tls.info``, ``tls.list``) and kills connections through it
(``tls.kill``).

Every record carries the configuration generation it was opened under.  A
reload swaps in a new generation; the old TLS contexts can be released once
the last connection of the old generation has closed, which
`ConnectionRegistry.when_generation_released` reports.

Records are deliberately mutable and small (``__slots__``, no ``__dict__``):
there is one per live connection, and an idle connection should cost little
beyond what OpenSSL itself needs.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from siptls.errors import ControlError, UnknownConnectionError

__all__ = [
    "ClosableTransport",
    "ConnectionRecord",
    "ConnectionRegistry",
    "DIRECTIONS",
    "QueueAccount",
    "RECORD_FIELDS",
    "STATES",
]

DIRECTIONS = ("in", "out")
STATES = ("handshaking", "established", "closing")

# Handshake failure reasons are free text from the protocol; a peer that can
# provoke many distinct reasons must not grow the counter without bound.
_MAX_FAILURE_REASONS = 64
_OTHER_REASON = "other"


class ClosableTransport(Protocol):
    """What `ConnectionRegistry.kill` needs from a connection's transport."""

    def loseConnection(self) -> None: ...

    def abortConnection(self) -> None: ...


class QueueAccount:
    """The clear-text bytes queued before handshakes, across all connections.

    One account per registry, shared by every factory that registers
    connections in it (incoming and outgoing), so ``ct_wq_max`` bounds the
    total, as in Kamailio, and ``tls.info`` reports that same total.
    """

    __slots__ = ("queued",)

    def __init__(self) -> None:
        self.queued = 0


class ConnectionRecord:
    """What the server knows about one live TLS connection.

    ``local`` and ``remote`` are ``(host, port)``; ``created`` and
    ``last_activity`` are ``clock.seconds()`` values.  ``verification`` is
    ``"ok"``, ``"none"`` (no peer certificate) or a failure reason.  The
    protocol writes the TLS facts and counters directly; the registry owns
    ``id``, ``generation`` and ``state`` transitions it is told about.
    """

    __slots__ = (
        "id",
        "direction",
        "local",
        "remote",
        "state",
        "created",
        "last_activity",
        "domain",
        "domain_reason",
        "sni",
        "tls_version",
        "cipher",
        "cipher_bits",
        "peer_subject",
        "peer_issuer",
        "peer_serial",
        "peer_not_after",
        "verification",
        "generation",
        "bytes_in",
        "bytes_out",
        "messages_in",
        "messages_out",
        "queued_cleartext",
        "_transport",
    )

    id: int
    direction: str
    local: tuple[str, int]
    remote: tuple[str, int]
    state: str
    created: float
    last_activity: float
    domain: str | None
    domain_reason: str | None
    sni: str | None
    tls_version: str | None
    cipher: str | None
    cipher_bits: int | None
    peer_subject: str | None
    peer_issuer: str | None
    peer_serial: str | None
    peer_not_after: str | None
    verification: str | None
    generation: int
    bytes_in: int
    bytes_out: int
    messages_in: int
    messages_out: int
    queued_cleartext: int
    _transport: ClosableTransport | None

    def __init__(
        self,
        id: int,
        direction: str,
        local: tuple[str, int],
        remote: tuple[str, int],
        created: float,
        generation: int,
        transport: ClosableTransport | None = None,
    ) -> None:
        self.id = id
        self.direction = direction
        self.local = local
        self.remote = remote
        self.state = "handshaking"
        self.created = created
        self.last_activity = created
        self.domain = None
        self.domain_reason = None
        self.sni = None
        self.tls_version = None
        self.cipher = None
        self.cipher_bits = None
        self.peer_subject = None
        self.peer_issuer = None
        self.peer_serial = None
        self.peer_not_after = None
        self.verification = None
        self.generation = generation
        self.bytes_in = 0
        self.bytes_out = 0
        self.messages_in = 0
        self.messages_out = 0
        self.queued_cleartext = 0
        self._transport = transport

    def __repr__(self) -> str:
        return (
            f"<ConnectionRecord id={self.id} {self.direction} "
            f"remote={self.remote[0]}:{self.remote[1]} state={self.state} "
            f"domain={self.domain!r} generation={self.generation}>"
        )

    def as_dict(self) -> dict[str, Any]:
        """Every public field by name (``local``/``remote`` as tuples)."""
        return {name: getattr(self, name) for name in RECORD_FIELDS}


RECORD_FIELDS: tuple[str, ...] = tuple(n for n in ConnectionRecord.__slots__ if n[0] != "_")


def _peer_matches(record: ConnectionRecord, peer: str) -> bool:
    host, port = record.remote
    return peer in (host, f"{host}:{port}", f"[{host}]:{port}")


class ConnectionRegistry:
    """The live TLS connections of one server, with counters for ``tls.info``.

    Ids are assigned in increasing order and never reused during the life of
    the registry, so a listing can be paged with ``after=<last id seen>``
    without skipping connections when others close meanwhile.

    ``kill_grace`` is how long `kill` waits after ``loseConnection()`` (which
    sends close_notify and lets the buffer drain) before aborting the
    connection outright.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        max_connections: int = 2048,
        kill_grace: float = 2.0,
    ) -> None:
        self._clock = clock
        self.max_connections = max_connections
        self.kill_grace = kill_grace
        self._records: dict[int, ConnectionRecord] = {}
        # Ascending ids of live records: new ids are always the largest, so
        # appending keeps it sorted and paging is a slice, not a scan.
        self._ids: list[int] = []
        self._next_id = 1
        self._generations: dict[int, int] = {}
        self._release_waiters: dict[int, list[Deferred[None]]] = {}
        self._release_observers: list[Callable[[int], object]] = []
        self._kill_timers: dict[int, IDelayedCall] = {}
        self.opened_total = 0
        self.refused_total = 0
        self.handshakes_ok = 0
        self._handshake_failures: Counter[str] = Counter()
        self.queue_account = QueueAccount()

    # -- the protocol's side ------------------------------------------------

    def open(
        self,
        direction: str,
        local: tuple[str, int],
        remote: tuple[str, int],
        transport: ClosableTransport | None,
        generation: int,
    ) -> ConnectionRecord:
        """Register a new connection and return its record (state ``handshaking``)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"connection direction must be 'in' or 'out', not {direction!r}")
        record = ConnectionRecord(
            self._next_id,
            direction,
            local,
            remote,
            self._clock.seconds(),
            generation,
            transport,
        )
        self._next_id += 1
        self._records[record.id] = record
        self._ids.append(record.id)
        self._generations[generation] = self._generations.get(generation, 0) + 1
        self.opened_total += 1
        return record

    def close(self, record: ConnectionRecord) -> None:
        """Forget a connection; closing an already closed record does nothing."""
        if self._records.get(record.id) is not record:
            return
        del self._records[record.id]
        index = bisect_left(self._ids, record.id)
        del self._ids[index]
        timer = self._kill_timers.pop(record.id, None)
        if timer is not None and timer.active():
            timer.cancel()
        record.state = "closing"
        # Drop the transport so a closed record does not keep the protocol alive.
        record._transport = None
        remaining = self._generations[record.generation] - 1
        if remaining:
            self._generations[record.generation] = remaining
        else:
            del self._generations[record.generation]
            self._generation_released(record.generation)

    def at_capacity(self) -> bool:
        """Whether another connection would exceed ``max_connections`` (<= 0: no limit)."""
        return 0 < self.max_connections <= len(self._records)

    def refused(self) -> None:
        """Count a connection refused at accept (for example because `at_capacity`)."""
        self.refused_total += 1

    def handshake_done(self, record: ConnectionRecord) -> None:
        """Mark the connection established and count a successful handshake."""
        record.state = "established"
        record.last_activity = self._clock.seconds()
        self.handshakes_ok += 1

    def handshake_failed(self, record: ConnectionRecord, reason: str) -> None:
        """Count a failed handshake by ``reason``; the protocol still calls `close`."""
        if reason not in self._handshake_failures and (
            len(self._handshake_failures) >= _MAX_FAILURE_REASONS
        ):
            reason = _OTHER_REASON
        self._handshake_failures[reason] += 1
        record.state = "closing"

    # -- the control channel's side -----------------------------------------

    def get(self, id: int) -> ConnectionRecord:
        """The live record with ``id``, or `UnknownConnectionError`."""
        try:
            return self._records[id]
        except KeyError:
            raise UnknownConnectionError(f"no TLS connection with id {id}", id) from None

    def kill(self, id: int) -> ConnectionRecord:
        """Close connection ``id``: ``loseConnection()`` now, abort after ``kill_grace``.

        Killing a connection that is already being killed aborts it at once.
        """
        record = self.get(id)
        transport = record._transport
        self._log.info(
            "Killing TLS connection {connection_id} to {peer_host}:{peer_port}",
            connection_id=record.id,
            peer_host=record.remote[0],
            peer_port=record.remote[1],
            domain=record.domain,
        )
        if transport is None:
            self.close(record)
            return record
        if record.id in self._kill_timers:
            self._kill_timers.pop(record.id).cancel()
            transport.abortConnection()
            return record
        record.state = "closing"
        transport.loseConnection()
        # loseConnection may have closed it synchronously (and called close()).
        if self._records.get(record.id) is record:
            self._kill_timers[record.id] = self._clock.callLater(
                self.kill_grace, self._abort, record
            )
        return record

    def _abort(self, record: ConnectionRecord) -> None:
        self._kill_timers.pop(record.id, None)
        transport = record._transport
        if transport is not None:
            transport.abortConnection()

    def query(
        self,
        offset: int = 0,
        limit: int = 100,
        peer: str | None = None,
        domain: str | None = None,
        sni: str | None = None,
        after: int | None = None,
    ) -> tuple[list[ConnectionRecord], int]:
        """One page of records in id order, and how many records match in all.

        ``peer`` matches the remote host, ``host:port`` or ``[host]:port``;
        ``domain`` matches the domain name exactly; ``sni`` matches the server
        name without regard to case.  ``after`` keeps only ids greater than it
        (a cursor that stays correct while connections close); ``offset``
        then skips that many matches.
        """
        if offset < 0 or limit < 0:
            raise ControlError(
                f"offset and limit must not be negative (got offset={offset}, limit={limit})."
            )
        start = 0 if after is None else bisect_right(self._ids, after)
        if peer is None and domain is None and sni is None:
            total = len(self._ids) - start
            first = start + offset
            page_ids = self._ids[first : first + limit]
            return [self._records[i] for i in page_ids], total
        wanted_sni = sni.casefold() if sni is not None else None
        page: list[ConnectionRecord] = []
        total = 0
        for i in self._ids[start:]:
            record = self._records[i]
            if peer is not None and not _peer_matches(record, peer):
                continue
            if domain is not None and record.domain != domain:
                continue
            if wanted_sni is not None and (
                record.sni is None or record.sni.casefold() != wanted_sni
            ):
                continue
            if offset <= total < offset + limit:
                page.append(record)
            total += 1
        return page, total

    def info(self) -> dict[str, Any]:
        """Counters for ``tls.info``."""
        return {
            "max_connections": self.max_connections,
            "opened_connections": len(self._records),
            "clear_text_write_queued_bytes": self.queue_account.queued,
            "handshakes_ok": self.handshakes_ok,
            "handshakes_failed": dict(self._handshake_failures),
            "refused": self.refused_total,
            "opened_total": self.opened_total,
        }

    # -- generations --------------------------------------------------------

    def by_generation(self) -> dict[int, int]:
        """Live connections per configuration generation (only generations in use)."""
        return dict(self._generations)

    def when_generation_released(self, generation: int) -> Deferred[None]:
        """A Deferred that fires once no live connection uses ``generation``.

        It fires at once if none does now.  Ask only about generations that
        are no longer current: a current generation can drop to zero
        connections and then be used again.
        """
        if generation not in self._generations:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._release_waiters.setdefault(generation, []).append(d)
        return d

    def add_release_observer(self, observer: Callable[[int], object]) -> None:
        """Call ``observer(generation)`` each time a generation's last connection closes."""
        self._release_observers.append(observer)

    def _generation_released(self, generation: int) -> None:
        for observer in list(self._release_observers):
            try:
                observer(generation)
            except Exception:
                self._log.failure(
                    "Generation release observer failed for generation {generation}",
                    generation=generation,
                )
        for d in self._release_waiters.pop(generation, []):
            d.callback(None)

    # -- container protocol -------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[ConnectionRecord]:
        # A snapshot, so the caller may kill or close while iterating.
        return iter([self._records[i] for i in self._ids])

    def __contains__(self, id: object) -> bool:
        return id in self._records
