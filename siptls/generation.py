"""Configuration generations: parameters and tls.cfg turned into live contexts.

A :class:`ConfigLoader` reads the module parameters and the ``tls.cfg`` they
name, builds every domain's context, and returns a complete
:class:`~siptls.contexts.ContextGeneration`, or raises
:class:`~siptls.errors.ConfigError` having changed nothing.  Startup and
``tls.reload`` use the same loader, so a reload is validated exactly as a
start is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from siptls.config import SERVER, Domain, LoadedConfig, TLSConfig, check_listeners, load_config
from siptls.contexts import (
    ContextGeneration,
    ContextSettings,
    DomainContext,
    KeyLogWriter,
    build_context,
)
from siptls.domains import DomainTable
from siptls.errors import ConfigError
from siptls.selfsigned import CERTIFICATE_NAME, KEY_NAME, ensure_self_signed

__all__ = ["ConfigLoader", "LoadResult", "build_generation", "settings_for"]


def settings_for(domain: Domain, config: TLSConfig) -> ContextSettings:
    """The context settings of one configured domain."""
    return ContextSettings(
        name=domain.id,
        section=domain.section,
        role="server" if domain.role == SERVER else "client",
        certificate=domain.certificate or None,
        private_key=domain.private_key or None,
        private_key_password=domain.private_key_password,
        min_version=domain.min_version,
        max_version=domain.max_version,
        cipher_list=domain.cipher_list,
        cipher_list_is_tls13=domain.cipher_list_tls13,
        ca_list=domain.ca_list,
        ca_path=domain.ca_path,
        crl=domain.crl,
        verify_peer=domain.verify_peer,
        require_peer_certificate=domain.require_peer_certificate,
        accept_unknown_ca=domain.accept_unknown_ca,
        verify_depth=domain.verify_depth,
        session_cache=config.session_cache,
        session_id=config.session_id.encode("utf-8"),
        renegotiation=config.renegotiation,
        release_buffers=config.ssl_release_buffers != 0,
        origins=dict(domain.origins),
    )


def build_generation(
    config: TLSConfig, number: int, keylog: KeyLogWriter | None = None
) -> ContextGeneration:
    """Build every domain's context; raise ConfigError if any cannot be built."""
    table = DomainTable(config)
    contexts: dict[int, DomainContext] = {}
    for domain in config.domains:
        contexts[id(domain)] = build_context(settings_for(domain, config), keylog, record=domain)

    # Accepted connections come from a handful of local addresses: remember
    # the answer instead of parsing the address for every connection.
    by_socket: dict[tuple[str, int], tuple[DomainContext, str]] = {}

    def select_socket(host: str, port: int) -> tuple[DomainContext, str]:
        choice = by_socket.get((host, port))
        if choice is None:
            domain, reason = table.server_for_socket(host, port)
            choice = contexts[id(domain)], reason
            if len(by_socket) < 1024:
                by_socket[(host, port)] = choice
        return choice

    def select_name(initial: DomainContext, name: str) -> tuple[DomainContext, str] | None:
        choice = table.server_for_sni(initial.record, name)
        if choice is None:
            return None
        return contexts[id(choice[0])], choice[1]

    def select_client(
        host: str, port: int, server_name: str | None = None, server_id: str | None = None
    ) -> tuple[DomainContext, str]:
        domain, reason = table.client_for(host, port, server_name, server_id)
        return contexts[id(domain)], reason

    return ContextGeneration(
        number,
        select_socket,
        select_name,
        tuple(contexts.values()),
        refuse_unknown_names=config.sni_strict,
        select_client=select_client,
        config=config,
    )


@dataclass(frozen=True, slots=True)
class LoadResult:
    """A validated generation with the configuration and warnings behind it."""

    generation: ContextGeneration
    loaded: LoadedConfig
    self_signed: Any = None

    @property
    def config(self) -> TLSConfig:
        return self.loaded.config


class ConfigLoader:
    """Loads parameters + tls.cfg into a generation, the same way every time.

    ``params`` are Kamailio module parameters by name.  ``workdir`` is
    where relative parameter paths start and where the self-signed
    certificate lives.  ``listen`` are the listening sockets, against which
    IP domains are checked.
    """

    def __init__(
        self,
        params: Mapping[str, str],
        listen: Sequence[tuple[str, int]] = (),
        workdir: str | None = None,
    ) -> None:
        self.params = dict(params)
        self.listen = list(listen)
        self.workdir = os.path.abspath(workdir or os.getcwd())
        self._keylog: KeyLogWriter | None = None

    def load(self, number: int) -> LoadResult:
        default_certificate = os.path.join(self.workdir, CERTIFICATE_NAME)
        default_private_key = os.path.join(self.workdir, KEY_NAME)
        loaded = load_config(
            self.params,
            default_certificate=default_certificate,
            default_private_key=default_private_key,
            cwd=self.workdir,
        )
        config = loaded.config
        check_listeners(config, self.listen)
        generated = None
        if any(d.certificate == default_certificate for d in config.domains):
            generated = ensure_self_signed(self.workdir)
        keylog = self._keylog_for(config)
        generation = build_generation(config, number, keylog)
        return LoadResult(generation, loaded, generated)

    def _keylog_for(self, config: TLSConfig) -> KeyLogWriter | None:
        path = config.keylog_file
        if not path:
            return None
        if self._keylog is None or self._keylog.path != path:
            try:
                self._keylog = KeyLogWriter(path)
            except OSError as error:
                raise ConfigError(
                    f"cannot open the key log file '{path}': {error.strerror or error}.",
                    source="--param",
                    key="keylog_file",
                ) from None
        return self._keylog
