"""RFC 3263 resolution of a SIP-over-TLS target to addresses, with twisted.names.

Glue: the parsing lives in the pure :mod:`siptls.target`; this module only
asks DNS.  The resolver (an ``IResolver``, e.g. from
``twisted.names.client.createResolver``) is passed in, so tests point it at a
DNS server on loopback.

Steps for a :class:`~siptls.target.Target` (RFC 3263 §4.2, TLS only, so the
NAPTR step is skipped: the transport is already chosen):

1. an IP literal is used as it is, port 5061 unless given;
2. with an explicit port, the host's A and AAAA records are used;
3. otherwise SRV ``_sips._tcp.<host>`` (``sip:...;transport=tls`` too), ordered
   by priority then weight (RFC 2782), each SRV target resolved to A/AAAA;
4. without SRV records, the host's A and AAAA records with port 5061.

The peer certificate must still be checked against ``Target.server_name``
(the SIP domain), never against the SRV target names found here.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IResolver
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.python.failure import Failure

from siptls.errors import ResolutionError
from siptls.target import DEFAULT_PORT, Target, parse_target

__all__ = ["Address", "SrvRecord", "Target", "TargetResolver", "order_srv", "parse_target"]

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """One SRV answer; ``target`` is ``""`` for RFC 2782's "." (no service)."""

    priority: int
    weight: int
    port: int
    target: str


def order_srv(records: Sequence[SrvRecord], rng: random.Random | None) -> list[SrvRecord]:
    """Order SRV records for trying, per RFC 2782.

    Lower priority first.  Within one priority, records are picked one by one
    at random, each with a chance proportional to its weight; zero-weight
    records are put first before picking, so they keep a small chance of
    going early, as RFC 2782 asks.  With ``rng=None`` the order is
    deterministic instead: priority, then weight (heaviest first), then target
    name and port, which is what tests and reproducible setups want.
    """
    if rng is None:
        return sorted(records, key=lambda r: (r.priority, -r.weight, r.target, r.port))
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        group.sort(key=lambda r: r.weight != 0)
        while group:
            pick = rng.randint(0, sum(r.weight for r in group))
            running = 0
            chosen = len(group) - 1
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    chosen = index
                    break
            ordered.append(group.pop(chosen))
    return ordered


def _describe(failure: Failure) -> str:
    value = failure.value
    return f"{type(value).__name__}: {value}" if str(value) else type(value).__name__


class TargetResolver:
    """Resolve :class:`~siptls.target.Target` objects to ``(ip, port)`` lists.

    ``rng`` drives the weighted SRV shuffle; ``deterministic=True`` replaces
    the shuffle by a fixed order (see :func:`order_srv`).  ``timeout`` is
    handed to every lookup (the resolver's retry intervals in seconds;
    ``None`` keeps the resolver's default).
    """

    def __init__(
        self,
        resolver: IResolver,
        *,
        rng: random.Random | None = None,
        deterministic: bool = False,
        timeout: Sequence[int] | None = None,
    ) -> None:
        self._resolver = resolver
        self._timeout = timeout
        self._rng: random.Random | None = None if deterministic else (rng or random.Random())

    def resolve(self, target: Target | str) -> Deferred[list[Address]]:
        """Return addresses to try, in order, for ``target`` (a Target or a string).

        Fails with :class:`~siptls.errors.ResolutionError`, whose message
        names the target or DNS name that could not be resolved.
        """
        return Deferred.fromCoroutine(self._resolve(target))

    async def _resolve(self, target: Target | str) -> list[Address]:
        if isinstance(target, str):
            target = parse_target(target)
        if target.is_ip:
            return [(target.host, target.port or DEFAULT_PORT)]
        if target.port is not None:
            port = target.port
            return [(ip, port) for ip in await self._addresses(target.host)]

        service = f"_sips._tcp.{target.host}"
        records = await self._srv(service)
        if not records:
            return [(ip, DEFAULT_PORT) for ip in await self._addresses(target.host)]
        if all(r.target == "" for r in records):
            raise ResolutionError(
                f"The SRV records of {service!r} say the domain {target.host!r} offers no "
                "SIP over TLS service (target '.').",
                name=service,
            )
        ordered = [r for r in order_srv(records, self._rng) if r.target]
        outcomes: list[tuple[bool, Any]] = await DeferredList(
            [Deferred.fromCoroutine(self._addresses(r.target)) for r in ordered],
            consumeErrors=True,
        )
        found: list[Address] = []
        problems: list[str] = []
        for record, (ok, result) in zip(ordered, outcomes, strict=True):
            if ok:
                found.extend((ip, record.port) for ip in result)
            else:
                problems.append(result.getErrorMessage())
        if not found:
            raise ResolutionError(
                f"None of the SRV targets of {service!r} resolved to an address: "
                + " ".join(problems),
                name=service,
            )
        return found

    def _lookup(self, method: Callable[..., Deferred[Any]], name: str) -> Deferred[Any]:
        # IResolver declares timeout as required, but Twisted's resolvers take
        # None (or no argument) to mean "my own default", which we want to keep.
        if self._timeout is None:
            return method(name)
        return method(name, self._timeout)

    async def _srv(self, service: str) -> list[SrvRecord]:
        try:
            result: tuple[Any, Any, Any] = await self._lookup(self._resolver.lookupService, service)
        except DNSNameError:
            return []
        except Exception as exc:
            raise ResolutionError(
                f"The SRV lookup of {service!r} failed: {type(exc).__name__}: {exc}",
                name=service,
            ) from exc
        records = []
        for rr in result[0]:
            if rr.type == dns.SRV:
                payload = rr.payload
                records.append(
                    SrvRecord(
                        priority=payload.priority,
                        weight=payload.weight,
                        port=payload.port,
                        target=payload.target.name.decode("ascii").rstrip(".").lower(),
                    )
                )
        return records

    async def _addresses(self, name: str) -> list[str]:
        outcomes: list[tuple[bool, Any]] = await DeferredList(
            [
                self._lookup(self._resolver.lookupAddress, name),
                self._lookup(self._resolver.lookupIPV6Address, name),
            ],
            consumeErrors=True,
        )
        found: list[str] = []
        missing = 0
        problems: list[str] = []
        for ok, result in outcomes:
            if not ok:
                if result.check(DNSNameError):
                    missing += 1
                else:
                    problems.append(_describe(result))
                continue
            answers = result[0]
            for rr in answers:
                if rr.type == dns.A:
                    found.append(rr.payload.dottedQuad())
                elif rr.type == dns.AAAA:
                    found.append(socket.inet_ntop(socket.AF_INET6, rr.payload.address))
        if found:
            return found
        if missing == len(outcomes):
            raise ResolutionError(f"The domain {name!r} does not exist (NXDOMAIN).", name=name)
        if problems:
            raise ResolutionError(
                f"Looking up the addresses of {name!r} failed: {'; '.join(problems)}.", name=name
            )
        raise ResolutionError(f"The domain {name!r} has no A or AAAA records.", name=name)
