"""Domain selection: which TLS domain serves a connection.

Pure: a :class:`DomainTable` is built once per :class:`~siptls.config.TLSConfig`
from dictionaries, so each lookup (run per connection) costs a few dict probes,
at most one per label of the name looked up.

Unlike Kamailio, which scans sections in reverse file order and takes the
first match, the most specific domain wins whatever the file order:

* server, by local socket: exact ``ip:port``, then ``ip:0``, then the default;
* server, by SNI: among the named domains of the initial domain's address and
  the ``any`` domains, an exact-name match beats a suffix match, a longer
  suffix beats a shorter one, and an IP-specific domain beats ``any``.  When
  nothing matches, the caller keeps the socket's domain (or, with
  ``sni_strict``, refuses the handshake);
* client: ``server_id``, then ``server_name`` among the domains for the
  destination, then the destination ``ip:port`` (or ``ip:0``), then ``any``
  domains by name, then the default.  Client address domains match the
  **destination** (Kamailio matches the local socket).

Among several named domains for one address, the socket lookup (no SNI yet)
takes the first in file order.
"""

from __future__ import annotations

import attrs

from siptls.config import (
    CLIENT,
    KIND_ADDRESS,
    KIND_DEFAULT,
    SERVER,
    Domain,
    TLSConfig,
    canonical_ip,
    normalize_server_name,
)

Address = tuple[str, int]

#: Reasons returned with a selected domain.
REASON_SOCKET = "socket"
REASON_DEFAULT = "default"
REASON_SERVER_NAME = "server_name"
REASON_ANY = "any"
REASON_SERVER_ID = "server_id"
REASON_DESTINATION = "destination"


def normalize_lookup_name(name: str | bytes | None) -> str | None:
    """The form of a requested name that domain server_names are compared with.

    Lower-case, IDNA A-labels, no trailing dot.  None for no name, an empty
    name, or one that cannot be a domain name (it then matches nothing).
    """
    if name is None:
        return None
    if isinstance(name, bytes):
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError:
            return None
    try:
        normalized = normalize_server_name(name)
    except ValueError:
        return None
    return normalized or None


def _suffixes(name: str) -> list[str]:
    """The proper parent domains of *name*, longest first: a.b.c -> [b.c, c]."""
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(1, len(labels))]


@attrs.define
class _NameIndex:
    """Named domains of one scope (one address, or ``any``), by match kind."""

    exact: dict[str, Domain] = attrs.field(factory=dict)  # modes 0 and 1
    parents: dict[str, Domain] = attrs.field(factory=dict)  # modes 1 and 2

    def add(self, domain: Domain) -> None:
        assert domain.server_name is not None
        if domain.server_name_mode in (0, 1):
            self.exact.setdefault(domain.server_name, domain)
        if domain.server_name_mode in (1, 2):
            self.parents.setdefault(domain.server_name, domain)


def _best(name: str, indexes: tuple[_NameIndex | None, ...]) -> tuple[Domain, int] | None:
    """The most specific match of *name* and the position of its index, or None."""
    for position, index in enumerate(indexes):
        if index is not None and name in index.exact:
            return index.exact[name], position
    for suffix in _suffixes(name):
        for position, index in enumerate(indexes):
            if index is not None and suffix in index.parents:
                return index.parents[suffix], position
    return None


class DomainTable:
    """Lookups over the domains of one configuration, built once."""

    def __init__(self, config: TLSConfig) -> None:
        self.config = config
        self._server_default = config.server_default
        self._client_default = config.client_default
        self._server_by_address: dict[Address, Domain] = {}
        self._server_names: dict[Address | None, _NameIndex] = {}
        self._client_by_id: dict[str, Domain] = {}
        self._client_unnamed: dict[Address, Domain] = {}
        self._client_first: dict[Address, Domain] = {}
        self._client_names: dict[Address | None, _NameIndex] = {}
        for domain in config.domains:
            if domain.role == SERVER:
                self._add_server(domain)
            elif domain.role == CLIENT:
                self._add_client(domain)

    def _add_server(self, domain: Domain) -> None:
        if domain.kind == KIND_ADDRESS:
            assert domain.address is not None
            self._server_by_address.setdefault(domain.address, domain)
        if domain.server_name is not None and domain.kind != KIND_DEFAULT:
            scope = domain.address if domain.kind == KIND_ADDRESS else None
            self._server_names.setdefault(scope, _NameIndex()).add(domain)

    def _add_client(self, domain: Domain) -> None:
        if domain.server_id is not None:
            self._client_by_id.setdefault(domain.server_id.lower(), domain)
        if domain.kind == KIND_ADDRESS:
            assert domain.address is not None
            self._client_first.setdefault(domain.address, domain)
            if domain.server_name is None:
                self._client_unnamed.setdefault(domain.address, domain)
        if domain.server_name is not None and domain.kind != KIND_DEFAULT:
            scope = domain.address if domain.kind == KIND_ADDRESS else None
            self._client_names.setdefault(scope, _NameIndex()).add(domain)

    @staticmethod
    def _addresses(ip: str, port: int) -> tuple[Address, Address]:
        canonical = canonical_ip(ip) or ip
        return (canonical, port), (canonical, 0)

    def server_for_socket(self, local_ip: str, local_port: int) -> tuple[Domain, str]:
        """The initial server domain for a connection accepted on *local_ip*:*local_port*.

        Reason ``"socket"`` for an IP domain, ``"default"`` for the server default.
        """
        for address in self._addresses(local_ip, local_port):
            domain = self._server_by_address.get(address)
            if domain is not None:
                return domain, REASON_SOCKET
        return self._server_default, REASON_DEFAULT

    def server_for_sni(
        self, initial_domain: Domain, sni: str | bytes | None
    ) -> tuple[Domain, str] | None:
        """The server domain for the SNI name *sni*, or None when none matches.

        Candidates are the named domains with the initial domain's address
        and the ``any`` domains.  Reason ``"server_name"`` for an IP domain,
        ``"any"`` for an ``any`` domain.
        """
        name = normalize_lookup_name(sni)
        if name is None:
            return None
        scoped = None
        if initial_domain.kind == KIND_ADDRESS:
            scoped = self._server_names.get(initial_domain.address)
        found = _best(name, (scoped, self._server_names.get(None)))
        if found is None:
            return None
        domain, position = found
        return domain, REASON_SERVER_NAME if position == 0 else REASON_ANY

    def client_for(
        self,
        destination_ip: str,
        destination_port: int,
        server_name: str | bytes | None = None,
        server_id: str | None = None,
    ) -> tuple[Domain, str]:
        """The client domain for a connection to *destination_ip*:*destination_port*.

        Order: ``server_id`` (case-insensitive), ``server_name`` among the
        domains for the destination, the destination address, ``any``
        domains by ``server_name``, the client default.  The reason names
        the step that matched.
        """
        if server_id:
            domain = self._client_by_id.get(server_id.lower())
            if domain is not None:
                return domain, REASON_SERVER_ID
        addresses = self._addresses(destination_ip, destination_port)
        name = normalize_lookup_name(server_name)
        if name is not None:
            for address in addresses:
                found = _best(name, (self._client_names.get(address),))
                if found is not None:
                    return found[0], REASON_SERVER_NAME
        for address in addresses:
            domain = self._client_unnamed.get(address)
            if domain is not None:
                return domain, REASON_DESTINATION
        if name is None:
            for address in addresses:
                domain = self._client_first.get(address)
                if domain is not None:
                    return domain, REASON_DESTINATION
        else:
            found = _best(name, (self._client_names.get(None),))
            if found is not None:
                return found[0], REASON_ANY
        return self._client_default, REASON_DEFAULT

    def domain_by_id(self, domain_id: str) -> tuple[Domain, ...]:
        """Every domain whose display id is *domain_id* (named IP domains share one)."""
        return tuple(d for d in self.config.domains if d.id == domain_id)
