"""Kamailio TLS module parameters and ``tls.cfg`` text, parsed into frozen records.

This module is pure: it reads files with plain ``open`` and checks that the
files a domain names exist, but it imports neither Twisted nor OpenSSL.  The
OpenSSL layer turns each :class:`Domain` into a context and, for the checks it
alone can make (key/certificate mismatch, wrong password, unparsable CRL),
raises :class:`~siptls.errors.ConfigError` at the place recorded in
:attr:`Domain.origins`.

Theory of operation: module parameters (``--param NAME=VALUE``) are parsed
first; the per-domain ones (``certificate``, ``tls_method``, ...) become the
parent values of every domain.  ``tls.cfg`` (a file, or a directory of files)
is scanned into :class:`Section` records, one :class:`Entry` per option line.
:func:`load_config` then checks the sections against each other (duplicates,
``any`` without ``server_name``), fills every unset key from the parents, adds
implicit ``[server:default]``/``[client:default]`` domains when the file lacks
them, checks that named files exist, and returns a :class:`TLSConfig`.

Deliberate differences from Kamailio (see the reference, section 11):

* the default method is ``TLSv1.2+`` everywhere, and ``SSLv2``/``SSLv3`` are refused;
* a section's unset keys take the module parameter values (which default to
  the generated self-signed certificate), not fixed built-in parents;
  ``private_key_password`` and ``ca_path`` work as module parameters too;
* a level that sets ``certificate`` but not ``private_key`` reads the key from
  the certificate file (a combined PEM), instead of inheriting a key that
  cannot match;
* duplicate sections are errors wherever they are, including two defaults and
  the last section of a file;
* a duplicate key inside one section is an error, not a silent override;
* ``config`` naming a directory reads its files in sorted order, skipping
  dotfiles, and errors name the real file and line.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs
import idna

from siptls.errors import ConfigError

# --- vocabulary -------------------------------------------------------------

SERVER = "server"
CLIENT = "client"

KIND_DEFAULT = "default"
KIND_ANY = "any"
KIND_ADDRESS = "address"

#: Where a value came from: the command line, or the built-in default.
PARAM_SOURCE = "--param"
DEFAULT_SOURCE = "<default>"

TLS1 = "TLSv1"
TLS1_1 = "TLSv1.1"
TLS1_2 = "TLSv1.2"
TLS1_3 = "TLSv1.3"

#: Method name -> (minimum version, maximum version or None for "highest").
METHODS: Mapping[str, tuple[str, str | None]] = MappingProxyType(
    {
        "SSLv23": (TLS1, None),
        "TLSv1": (TLS1, TLS1),
        "TLSv1.0": (TLS1, TLS1),
        "TLSv1+": (TLS1, None),
        "TLSv1.0+": (TLS1, None),
        "TLSv1.1": (TLS1_1, TLS1_1),
        "TLSv1.1+": (TLS1_1, None),
        "TLSv1.2": (TLS1_2, TLS1_2),
        "TLSv1.2+": (TLS1_2, None),
        "TLSv1.3": (TLS1_3, TLS1_3),
        "TLSv1.3+": (TLS1_3, None),
    }
)
_METHODS_BY_LOWER = {name.lower(): name for name in METHODS}
DEFAULT_METHOD = "TLSv1.2+"

VERIFY_CLIENT_VALUES = ("off", "on", "optional", "optional_no_ca")

_TRUE_WORDS = frozenset({"yes", "true", "on", "enable", "enabled", "1"})
_FALSE_WORDS = frozenset({"no", "false", "off", "disable", "disabled", "0"})

# Section header words (reference section 2.2).
_ROLE_WORDS = {
    "server": SERVER,
    "srv": SERVER,
    "s": SERVER,
    "client": CLIENT,
    "cli": CLIENT,
    "c": CLIENT,
}
_DEFAULT_WORDS = frozenset({"default", "def", "*"})
_ANY_WORDS = frozenset({"any", "all"})

#: tls.cfg key (and alias) -> canonical key.
DOMAIN_KEY_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "method": "method",
        "tls_method": "method",
        "certificate": "certificate",
        "cert_file": "certificate",
        "private_key": "private_key",
        "pkey_file": "private_key",
        "private_key_password": "private_key_password",
        "pkey_password": "private_key_password",
        "ca_list": "ca_list",
        "calist_file": "ca_list",
        "ca_path": "ca_path",
        "crl": "crl",
        "verify_certificate": "verify_certificate",
        "verify_cert": "verify_certificate",
        "require_certificate": "require_certificate",
        "require_cert": "require_certificate",
        "verify_client": "verify_client",
        "verify_depth": "verify_depth",
        "cipher_list": "cipher_list",
        "server_name": "server_name",
        "server_name_mode": "server_name_mode",
        "server_id": "server_id",
        "verify_identity": "verify_identity",
        "identity_wildcards": "identity_wildcards",
    }
)

_UNSUPPORTED_DOMAIN_KEYS = {
    "certificate2": "dual certificates (certificate2/private_key2) are not supported by siptls",
    "cert_file2": "dual certificates (certificate2/private_key2) are not supported by siptls",
    "private_key2": "dual certificates (certificate2/private_key2) are not supported by siptls",
    "pkey_file2": "dual certificates (certificate2/private_key2) are not supported by siptls",
    "private_key_password2": "dual certificates are not supported by siptls",
    "pkey_password2": "dual certificates are not supported by siptls",
}

#: Canonical keys whose value is a path, and what the path must be.
_FILE_KEYS = ("certificate", "private_key", "ca_list", "crl")
_DIR_KEYS = ("ca_path",)

#: Per-domain module parameter -> canonical domain key.
_DOMAIN_PARAMS: Mapping[str, str] = MappingProxyType(
    {
        "tls_method": "method",
        "certificate": "certificate",
        "private_key": "private_key",
        "private_key_password": "private_key_password",
        "ca_list": "ca_list",
        "ca_path": "ca_path",
        "crl": "crl",
        "verify_certificate": "verify_certificate",
        "verify_depth": "verify_depth",
        "require_certificate": "require_certificate",
        "verify_client": "verify_client",
        "cipher_list": "cipher_list",
        "server_name": "server_name",
    }
)

#: Accepted module parameters that do nothing here, and why.
IGNORED_PARAMS: Mapping[str, str] = MappingProxyType(
    {
        "low_mem_threshold1": "it guards an OpenSSL shared-memory bug that siptls does not have",
        "low_mem_threshold2": "it guards an OpenSSL shared-memory bug that siptls does not have",
        "tls_force_run": "siptls runs no OpenSSL version-skew check to override",
        "engine": "OpenSSL ENGINE keys are not supported",
        "engine_config": "OpenSSL ENGINE keys are not supported",
        "engine_algorithms": "OpenSSL ENGINE keys are not supported",
        "ssl_freelist_max_len": "OpenSSL buffer freelists no longer exist (OpenSSL >= 1.1)",
        "ssl_read_ahead": "read-ahead is left to OpenSSL",
        "rand_engine": "the random generator is OpenSSL's own",
        "init_mode": "siptls runs in one process and needs no shared-memory locking",
        "tls_log": "logging goes through twisted.logger with its own levels",
        "tls_debug": "logging goes through twisted.logger with its own levels",
        "provider_quirks": "OpenSSL providers are not reloaded in child processes (no fork)",
        "provider_quirks_config": "OpenSSL providers are not reloaded in child processes (no fork)",
        "ct_wq_blk_size": "the clear-text queue does not allocate fixed blocks",
        "key_password_mode": "console password prompts are not supported; use private_key_password",
        "keylog_mode": "the key log is written whenever keylog_file is set",
        "keylog_peer": "sending key-log lines over UDP is not supported; use keylog_file",
        "xavp_cfg": "there is no routing script; applications pass server_name/server_id",
        "event_callback": "there is no routing script; applications observe connections directly",
    }
)


# --- records ----------------------------------------------------------------

Origin = tuple[str, "int | None"]


def _frozen_map(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@attrs.frozen
class Entry:
    """One ``key = value`` line of a tls.cfg section, as parsed."""

    key: str  # canonical key
    written_key: str  # the key as written (an alias, any case)
    raw: str  # the value as written, quotes and escapes resolved
    value: Any  # the parsed value (paths made absolute)
    source: str
    line: int


@attrs.frozen
class Section:
    """One ``[role:address]`` section of a tls.cfg file, before inheritance."""

    role: str
    kind: str
    address: tuple[str, int] | None
    source: str
    line: int
    entries: tuple[Entry, ...] = ()

    @property
    def name(self) -> str:
        """The section name used in messages, e.g. ``server:[::1]:5061``."""
        return section_name(self.role, self.kind, self.address)

    def entry(self, key: str) -> Entry | None:
        """The entry for canonical *key*, or None when the section lacks it."""
        for entry in self.entries:
            if entry.key == key:
                return entry
        return None


@attrs.frozen
class Domain:
    """One effective TLS domain: a section with every unset key filled in.

    ``verify_peer``, ``require_peer_certificate`` and ``accept_unknown_ca``
    resolve Kamailio's ``verify_certificate``/``require_certificate``/
    ``verify_client`` truth table (reference section 4.1).  ``origins`` maps
    each canonical key to the (source, line) where its value was set;
    ``raw`` holds the values as written, for display.  ``source`` and
    ``line`` locate the section header (``None`` for implicit defaults).
    """

    role: str
    kind: str
    address: tuple[str, int] | None
    method: str
    min_version: str
    max_version: str | None
    cipher_list: str | None
    cipher_list_tls13: bool
    certificate: str | None
    private_key: str | None
    private_key_password: str | None = attrs.field(repr=False)
    ca_list: str | None
    ca_path: str | None
    crl: str | None
    verify_certificate: bool
    require_certificate: bool
    verify_client: str
    verify_depth: int
    verify_peer: bool
    require_peer_certificate: bool
    accept_unknown_ca: bool
    server_name: str | None
    server_name_mode: int
    server_id: str | None
    verify_identity: bool
    identity_wildcards: bool
    source: str | None
    line: int | None
    origins: Mapping[str, Origin] = attrs.field(hash=False, converter=_frozen_map)
    raw: Mapping[str, str] = attrs.field(hash=False, converter=_frozen_map, repr=False)

    @property
    def implicit(self) -> bool:
        """True for a default domain built from module parameters alone."""
        return self.source is None

    @property
    def section(self) -> str:
        """The section name, e.g. ``server:default`` or ``client:10.0.0.1:5061``."""
        return section_name(self.role, self.kind, self.address)

    @property
    def id(self) -> str:
        """Kamailio's display id: ``TLSs<default>``, ``TLSs<any:name>``, ``TLSc<ip:port>``."""
        prefix = "TLSs" if self.role == SERVER else "TLSc"
        if self.kind == KIND_DEFAULT:
            inner = "default"
        elif self.kind == KIND_ANY:
            inner = f"any:{self.server_name}"
        else:
            assert self.address is not None
            inner = f"{self.address[0]}:{self.address[1]}"
        return f"{prefix}<{inner}>"

    def origin(self, key: str) -> Origin:
        """Where the value of canonical *key* was set: (source, line)."""
        return self.origins.get(key, (DEFAULT_SOURCE, None))

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError about *key* of this domain, located where the value was set."""
        source, line = self.origin(key)
        section = None if source in (PARAM_SOURCE, DEFAULT_SOURCE) else self.section
        return ConfigError(message, source=source, line=line, key=key, section=section)


@attrs.frozen
class TLSConfig:
    """The whole TLS configuration: global settings and every domain.

    There is always exactly one server default and one client default domain.
    ``params`` keeps the module parameters as given, ``config_files`` the
    absolute paths of the tls.cfg files read (for reload and watching).
    """

    domains: tuple[Domain, ...]
    tls_method: str = DEFAULT_METHOD
    connection_timeout: int = 600
    tls_disable_compression: bool = True
    session_cache: bool = False
    session_id: str = "siptls"
    renegotiation: bool = False
    send_close_notify: bool = False
    ssl_max_send_fragment: int = -1
    ssl_release_buffers: int = 1
    con_ct_wq_max: int = 65536
    ct_wq_max: int = 10 * 1024 * 1024
    config: str | None = None
    keylog_file: str | None = None
    sni_strict: bool = False
    handshake_timeout: float = 10.0
    tls_max_connections: int = 2048
    max_send_buffer: int = 1024 * 1024
    watch_certificates: bool = False
    watch_interval: float = 5.0
    identity_check_ip: bool = False
    keepalive_interval: float = 0.0
    keepalive_timeout: float = 10.0
    log_connections: bool = True
    # Not in repr: the parameters may hold private_key_password.
    params: Mapping[str, str] = attrs.field(
        default=MappingProxyType({}), hash=False, converter=_frozen_map, repr=False
    )
    config_files: tuple[str, ...] = ()

    @property
    def server_default(self) -> Domain:
        return next(d for d in self.domains if d.role == SERVER and d.kind == KIND_DEFAULT)

    @property
    def client_default(self) -> Domain:
        return next(d for d in self.domains if d.role == CLIENT and d.kind == KIND_DEFAULT)

    @property
    def server_domains(self) -> tuple[Domain, ...]:
        return tuple(d for d in self.domains if d.role == SERVER)

    @property
    def client_domains(self) -> tuple[Domain, ...]:
        return tuple(d for d in self.domains if d.role == CLIENT)


@attrs.frozen
class LoadedConfig:
    """The result of :func:`load_config`: the configuration and warning sentences."""

    config: TLSConfig
    warnings: tuple[str, ...] = ()


# --- small helpers ------------------------------------------------------------


def section_name(role: str, kind: str, address: tuple[str, int] | None) -> str:
    """The canonical section name, as used in error messages."""
    if kind == KIND_DEFAULT:
        return f"{role}:default"
    if kind == KIND_ANY:
        return f"{role}:any"
    assert address is not None
    return f"{role}:{format_address(address)}"


def format_address(address: tuple[str, int]) -> str:
    """``ip:port``, with an IPv6 address in brackets."""
    ip, port = address
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def canonical_ip(text: str) -> str | None:
    """The canonical text of an IP address, or None when *text* is not one.

    IPv4-mapped IPv6 addresses (what a dual-stack socket reports for an IPv4
    peer) are given as the IPv4 address, so they match IPv4 domains.
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def normalize_server_name(name: str) -> str:
    """Lower-case *name* and turn a Unicode name into its IDNA A-label form.

    ASCII names are only lower-cased (so names with ``_`` still work); one
    trailing dot is dropped.  Raises ValueError for a name IDNA refuses.
    """
    if name.endswith("."):
        name = name[:-1]
    if name.isascii():
        return name.lower()
    try:
        return idna.encode(name, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as e:
        raise ValueError(f"'{name}' is not a valid internationalised domain name ({e})") from e


def _closest(word: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


class _BadValue(Exception):
    """A value parser's complaint; the caller adds where the value was written."""


# --- value parsers ------------------------------------------------------------


def _parse_bool(raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise _BadValue(
        f"'{raw}' is not a boolean (expected yes/no, true/false, on/off, "
        "enable(d)/disable(d) or 1/0)"
    )


_INT_RE = re.compile(r"-?[0-9]+")


def _int_parser(low: int, high: int, *, also: tuple[int, ...] = ()) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        text = raw.strip()
        if not _INT_RE.fullmatch(text) or len(text) > 20:
            raise _BadValue(f"'{raw}' is not a decimal integer")
        value = int(text)
        if value in also or low <= value <= high:
            return value
        extra = "".join(f" or {a}" for a in also)
        raise _BadValue(f"{value} is out of range (expected {low} to {high}{extra})")

    return parse


def _parse_seconds(raw: str) -> float:
    text = raw.strip()
    if not re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", text) or len(text) > 20:
        raise _BadValue(f"'{raw}' is not a number of seconds")
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise _BadValue(f"{raw} is out of range (expected a number of seconds above 0)")
    return value


def _parse_seconds_or_off(raw: str) -> float:
    """A number of seconds, or 0 for "off"."""
    if raw.strip() in ("0", "0.0", "off"):
        return 0.0
    return _parse_seconds(raw)


def _parse_method(raw: str) -> str:
    word = raw.strip().lower()
    if word in ("sslv2", "sslv3"):
        raise _BadValue(
            f"method '{raw}' is refused: SSL 2.0 and 3.0 are broken and insecure "
            "(use TLSv1.2+ or TLSv1.3+)"
        )
    try:
        return _METHODS_BY_LOWER[word]
    except KeyError:
        raise _BadValue(f"unknown method '{raw}' (expected one of {', '.join(METHODS)})") from None


def _parse_verify_client(raw: str) -> str:
    word = raw.strip().lower()
    if word in VERIFY_CLIENT_VALUES:
        return word
    raise _BadValue(
        f"unknown verify_client value '{raw}' (expected one of {', '.join(VERIFY_CLIENT_VALUES)})"
    )


def _parse_text(raw: str) -> str | None:
    if "\x00" in raw:
        raise _BadValue("the value contains a NUL character")
    return raw if raw != "" else None


def _parse_session_id(raw: str) -> str:
    if raw == "" or len(raw.encode("utf-8", "surrogatepass")) > 32:
        raise _BadValue(f"session_id '{raw}' must be 1 to 32 bytes long")
    return raw


def _path_parser(base_dir: str) -> Callable[[str], str | None]:
    def parse(raw: str) -> str | None:
        if raw == "":
            return None
        if "\x00" in raw:
            raise _BadValue("the path contains a NUL character")
        if raw.startswith(("/engine:", "/uri:")):
            raise _BadValue(f"'{raw}': HSM key references (/engine:, /uri:) are not supported")
        return os.path.normpath(os.path.join(base_dir, raw))

    return parse


_WILDCARD_HINT = (
    "'*' wildcards are not supported in server_name; write the parent domain and "
    "set server_name_mode = 1 (domain and subdomains) or 2 (subdomains only)"
)


def _parse_server_name(raw: str) -> str | None:
    text = raw.strip()
    if text == "":
        return None
    if "*" in text:
        raise _BadValue(_WILDCARD_HINT)
    if any(c.isspace() or c in "\x00/\\:" for c in text) or ".." in text or text == ".":
        raise _BadValue(f"'{raw}' is not a domain name")
    try:
        name = normalize_server_name(text)
    except ValueError as e:
        raise _BadValue(str(e)) from None
    if name == "" or name.startswith("."):
        raise _BadValue(f"'{raw}' is not a domain name")
    return name


def _domain_value_parsers(base_dir: str) -> dict[str, Callable[[str], Any]]:
    path = _path_parser(base_dir)
    return {
        "method": _parse_method,
        "certificate": path,
        "private_key": path,
        "private_key_password": _parse_text,
        "ca_list": path,
        "ca_path": path,
        "crl": path,
        "verify_certificate": _parse_bool,
        "require_certificate": _parse_bool,
        "verify_client": _parse_verify_client,
        "verify_depth": _int_parser(0, 100),
        "cipher_list": _parse_text,
        "server_name": _parse_server_name,
        "server_name_mode": _int_parser(0, 2),
        "server_id": _parse_text,
        "verify_identity": _parse_bool,
        "identity_wildcards": _parse_bool,
    }


def _global_value_parsers(cwd: str) -> dict[str, Callable[[str], Any]]:
    path = _path_parser(cwd)
    return {
        "connection_timeout": _int_parser(0, 2**31 - 1, also=(-1,)),
        "tls_disable_compression": _parse_bool,
        "session_cache": _parse_bool,
        "session_id": _parse_session_id,
        "renegotiation": _parse_bool,
        "send_close_notify": _parse_bool,
        "ssl_max_send_fragment": _int_parser(512, 16384, also=(-1,)),
        "ssl_release_buffers": _int_parser(-1, 1),
        "con_ct_wq_max": _int_parser(0, 4 * 1024 * 1024),
        "ct_wq_max": _int_parser(0, 2**30),
        "config": path,
        "keylog_file": path,
        "sni_strict": _parse_bool,
        "handshake_timeout": _parse_seconds,
        "tls_max_connections": _int_parser(1, 10_000_000),
        "max_send_buffer": _int_parser(1024, 2**31 - 1),
        "watch_certificates": _parse_bool,
        "watch_interval": _parse_seconds,
        "identity_check_ip": _parse_bool,
        "keepalive_interval": _parse_seconds_or_off,
        "keepalive_timeout": _parse_seconds,
        "log_connections": _parse_bool,
    }


#: Every module parameter siptls knows (used or ignored).
KNOWN_PARAMS: frozenset[str] = frozenset(
    set(_DOMAIN_PARAMS) | set(_global_value_parsers("/")) | set(IGNORED_PARAMS)
)


# --- tls.cfg scanner ------------------------------------------------------------

# Unquoted values are read like Kamailio's "extended" tokens: letters, digits,
# "_" and these delimiters; whitespace or "#" ends the token.
_EXTENDED_PUNCT = frozenset("=:;.,?[]/@!$%&*()-+|'_")
_BLANKS = " \t\r\f\v"
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


class _Scanner:
    """Reads tls.cfg text into sections, tracking line numbers."""

    def __init__(self, text: str, source: str, base_dir: str) -> None:
        self.text = text.replace("\r\n", "\n")
        self.source = source
        self.pos = 0
        self.line = 1
        self.parsers = _domain_value_parsers(base_dir)

    def error(
        self,
        message: str,
        *,
        line: int | None = None,
        key: str | None = None,
        section: str | None = None,
    ) -> ConfigError:
        return ConfigError(
            message,
            source=self.source,
            line=self.line if line is None else line,
            key=key,
            section=section,
        )

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _skip_blanks(self) -> None:
        text = self.text
        while self.pos < len(text) and text[self.pos] in _BLANKS:
            self.pos += 1

    def _skip_comment(self) -> None:
        if self._peek() == "#":
            end = self.text.find("\n", self.pos)
            self.pos = len(self.text) if end < 0 else end

    def _end_line(self, what: str, section: str | None, key: str | None = None) -> None:
        """Require the end of the line (after blanks and a comment) and move past it."""
        self._skip_blanks()
        self._skip_comment()
        char = self._peek()
        if char == "":
            return
        if char != "\n":
            end = self.text.find("\n", self.pos)
            rest = self.text[self.pos : len(self.text) if end < 0 else end].strip()
            raise self.error(
                f"unexpected text '{rest}' after {what} (end of line expected)",
                key=key,
                section=section,
            )
        self.pos += 1
        self.line += 1

    def sections(self) -> tuple[Section, ...]:
        done: list[Section] = []
        current: Section | None = None
        entries: list[Entry] = []
        while True:
            self._skip_blanks()
            self._skip_comment()
            char = self._peek()
            if char == "":
                break
            if char == "\n":
                self.pos += 1
                self.line += 1
                continue
            if char == "[":
                if current is not None:
                    done.append(attrs.evolve(current, entries=tuple(entries)))
                current = self._header()
                entries = []
                continue
            entry = self._option(current, entries)
            entries.append(entry)
        if current is not None:
            done.append(attrs.evolve(current, entries=tuple(entries)))
        return tuple(done)

    # Section header (reference 2.2):
    #   "[" TYPE ":" ( "default" | "def" | "*" | "any" | "all"
    #                | IPv4 ":" PORT | "[" IPv6 "]" ":" PORT ) "]" EOL
    def _header(self) -> Section:
        line = self.line
        end = self.text.find("\n", self.pos)
        end = len(self.text) if end < 0 else end
        header = self.text[self.pos : end]
        hash_at = header.find("#")
        if hash_at >= 0:
            header = header[:hash_at]
        header = header.rstrip(_BLANKS)
        shown = header.strip()
        inner = header[1:]
        type_word, colon, rest = inner.partition(":")
        if not colon:
            if "]" in type_word:
                raise self.error(
                    f"section header '{shown}': ':' expected after the domain type "
                    "(e.g. [server:default])"
                )
            raise self.error(f"section header '{shown}': closing ']' missing")
        role = _ROLE_WORDS.get(type_word.strip(_BLANKS).lower())
        if role is None:
            raise self.error(
                f"section header '{shown}': unknown domain type '{type_word.strip()}' "
                "(expected server, srv, s, client, cli or c)"
            )
        rest = rest.lstrip(_BLANKS)
        kind = KIND_ADDRESS
        address: tuple[str, int] | None = None
        if rest.startswith("["):
            close6 = rest.find("]")
            if close6 < 0:
                raise self.error(f"section header '{shown}': closing ']' missing")
            ip_text = rest[1:close6].strip(_BLANKS)
            after = rest[close6 + 1 :].lstrip(_BLANKS)
            try:
                ip6 = ipaddress.IPv6Address(ip_text)
            except ValueError:
                raise self.error(
                    f"section header '{shown}': invalid IPv6 address '{ip_text}'"
                ) from None
            if not after.startswith(":"):
                raise self.error(
                    f"section header '{shown}': ':' and a port expected after the IPv6 address"
                )
            port_text, close, trailing = after[1:].partition("]")
            if not close:
                raise self.error(f"section header '{shown}': closing ']' missing")
            port = self._port(port_text, shown)
            ip = canonical_ip(str(ip6)) or str(ip6)
            address = (ip, port)
        else:
            address_text, close, trailing = rest.partition("]")
            if not close:
                raise self.error(f"section header '{shown}': closing ']' missing")
            word = address_text.strip(_BLANKS)
            if word.lower() in _DEFAULT_WORDS:
                kind = KIND_DEFAULT
            elif word.lower() in _ANY_WORDS:
                kind = KIND_ANY
            else:
                host, colon, port_text = word.rpartition(":")
                host = host.strip(_BLANKS)
                if not colon:
                    raise self.error(
                        f"section header '{shown}': '{word}' is not default, any or IP:PORT"
                    )
                if host.lower() in _DEFAULT_WORDS | _ANY_WORDS:
                    raise self.error(f"section header '{shown}': '{host}' takes no port")
                if ":" in host:
                    raise self.error(
                        f"section header '{shown}': an IPv6 address must be written in "
                        "brackets, e.g. [server:[2001:db8::1]:5061]"
                    )
                try:
                    ip4 = ipaddress.IPv4Address(host)
                except ValueError:
                    raise self.error(
                        f"section header '{shown}': invalid IPv4 address '{host}' "
                        "(host names are not accepted)"
                    ) from None
                address = (str(ip4), self._port(port_text, shown))
        if trailing.strip(_BLANKS):
            raise self.error(
                f"section header '{shown}': unexpected text '{trailing.strip()}' after ']'"
            )
        self.pos = end
        self._end_line("the section header", None)
        return Section(role=role, kind=kind, address=address, source=self.source, line=line)

    def _port(self, text: str, shown: str) -> int:
        text = text.strip(_BLANKS)
        if not re.fullmatch(r"[0-9]{1,5}", text) or int(text) > 65535:
            raise self.error(
                f"section header '{shown}': invalid port number '{text}' (expected 0 to 65535)"
            )
        return int(text)

    # Option line (reference 2.1):  NAME "=" VALUE [ "#" comment ] EOL
    # where VALUE is a double-quoted string or an extended-mode token.
    def _option(self, section: Section | None, entries: Sequence[Entry]) -> Entry:
        line = self.line
        start = self.pos
        text = self.text
        while self.pos < len(text) and (text[self.pos].isalnum() or text[self.pos] == "_"):
            self.pos += 1
        name = text[start : self.pos]
        where = None if section is None else section.name
        if not name:
            raise self.error(
                f"unexpected character '{text[self.pos]}' (expected an option name "
                "or a [section] header)",
                section=where,
            )
        if section is None:
            raise self.error(
                f"option '{name}' appears before the first section header "
                "(start the file with e.g. [server:default])",
                key=name,
            )
        key = DOMAIN_KEY_ALIASES.get(name.lower())
        if key is None:
            if name.lower() in _UNSUPPORTED_DOMAIN_KEYS:
                raise self.error(
                    f"option '{name}': {_UNSUPPORTED_DOMAIN_KEYS[name.lower()]}",
                    key=name,
                    section=where,
                )
            raise self.error(
                f"unknown option '{name}'{_closest(name, DOMAIN_KEY_ALIASES)}",
                key=name,
                section=where,
            )
        self._skip_blanks()
        if self._peek() != "=":
            raise self.error(f"'=' expected after option '{name}'", key=name, section=where)
        self.pos += 1
        self._skip_blanks()
        raw = self._value(name, where)
        self._end_line(f"the value of '{name}'", where, key=name)
        for previous in entries:
            if previous.key == key:
                raise self.error(
                    f"option '{name}' is set twice in this section "
                    f"(first as '{previous.written_key}' on line {previous.line})",
                    line=line,
                    key=name,
                    section=where,
                )
        try:
            value = self.parsers[key](raw)
        except _BadValue as e:
            raise self.error(f"{name}: {e}", line=line, key=name, section=where) from None
        return Entry(key=key, written_key=name, raw=raw, value=value, source=self.source, line=line)

    def _value(self, name: str, where: str | None) -> str:
        char = self._peek()
        if char == '"':
            return self._quoted(name, where)
        if char in ("", "\n", "#"):
            raise self.error(
                f"missing value for option '{name}' (write {name} = \"\" for an empty value)",
                key=name,
                section=where,
            )
        text = self.text
        start = self.pos
        while self.pos < len(text):
            char = text[self.pos]
            if char in _BLANKS or char in "\n#":
                break
            if not (char.isalnum() or char in _EXTENDED_PUNCT):
                raise self.error(
                    f"character '{char}' is not allowed in the unquoted value of '{name}' "
                    "(put the value in double quotes)",
                    key=name,
                    section=where,
                )
            self.pos += 1
        return text[start : self.pos]

    def _quoted(self, name: str, where: str | None) -> str:
        line = self.line
        text = self.text
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= len(text) or text[self.pos] == "\n":
                raise self.error(
                    f"unterminated quoted value of '{name}' (closing '\"' missing)",
                    line=line,
                    key=name,
                    section=where,
                )
            char = text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(out)
            if char == "\\" and self.pos + 1 < len(text):
                following = text[self.pos + 1]
                if following == "\n":  # backslash-newline continues the string
                    self.pos += 2
                    self.line += 1
                    continue
                if following in _ESCAPES:
                    out.append(_ESCAPES[following])
                    self.pos += 2
                    continue
            out.append(char)
            self.pos += 1


def parse_tls_cfg(text: str, source_name: str, base_dir: str) -> tuple[Section, ...]:
    """Parse tls.cfg *text* into sections, in file order.

    *source_name* names the file in errors; relative paths in values are
    resolved against *base_dir*.  Each value is checked on its own; the
    checks between sections (duplicates, ``any`` without ``server_name``) are
    made by :func:`load_config` and :func:`config_from_sections`.
    """
    return _Scanner(text, source_name, base_dir).sections()


# --- module parameters -------------------------------------------------------------


@attrs.frozen
class _Params:
    """Module parameters, parsed."""

    settings: Mapping[str, Any]  # global field name -> value
    parents: Mapping[str, tuple[Any, Origin, str]]  # domain key -> (value, origin, raw)
    written: Mapping[str, str]  # domain key -> parameter name
    raw: Mapping[str, str]
    warnings: tuple[str, ...]


def _parse_params(
    params: Mapping[str, str],
    *,
    default_certificate: str,
    default_private_key: str,
    cwd: str,
) -> _Params:
    domain_parsers = _domain_value_parsers(cwd)
    global_parsers = _global_value_parsers(cwd)
    settings: dict[str, Any] = {}
    parents: dict[str, tuple[Any, Origin, str]] = {
        "method": (DEFAULT_METHOD, (DEFAULT_SOURCE, None), DEFAULT_METHOD),
        "certificate": (default_certificate, (DEFAULT_SOURCE, None), default_certificate),
        "private_key": (default_private_key, (DEFAULT_SOURCE, None), default_private_key),
        "private_key_password": (None, (DEFAULT_SOURCE, None), ""),
        "ca_list": (None, (DEFAULT_SOURCE, None), ""),
        "ca_path": (None, (DEFAULT_SOURCE, None), ""),
        "crl": (None, (DEFAULT_SOURCE, None), ""),
        "verify_certificate": (False, (DEFAULT_SOURCE, None), "no"),
        "require_certificate": (False, (DEFAULT_SOURCE, None), "no"),
        "verify_client": ("off", (DEFAULT_SOURCE, None), "off"),
        "verify_depth": (9, (DEFAULT_SOURCE, None), "9"),
        "cipher_list": (None, (DEFAULT_SOURCE, None), ""),
        "server_name": (None, (DEFAULT_SOURCE, None), ""),
    }
    written: dict[str, str] = {}
    warnings: list[str] = []
    for name, raw in params.items():
        lower = name.lower()
        if lower in IGNORED_PARAMS:
            warnings.append(f"--param {name} is ignored: {IGNORED_PARAMS[lower]}.")
            continue
        try:
            if lower in _DOMAIN_PARAMS:
                key = _DOMAIN_PARAMS[lower]
                parents[key] = (domain_parsers[key](raw), (PARAM_SOURCE, None), raw)
                written[key] = name
            elif lower in global_parsers:
                settings[lower] = global_parsers[lower](raw)
            else:
                raise ConfigError(
                    f"unknown module parameter '{name}'{_closest(name, KNOWN_PARAMS)}",
                    source=PARAM_SOURCE,
                    key=name,
                )
        except _BadValue as e:
            raise ConfigError(f"{name}: {e}", source=PARAM_SOURCE, key=name) from None
    if "method" in written:
        settings["tls_method"] = parents["method"][0]
    # A certificate given without a key is taken to be a combined PEM file.
    if "certificate" in written and "private_key" not in written:
        parents["private_key"] = parents["certificate"]
        written["private_key"] = written["certificate"]
    return _Params(
        settings=settings,
        parents=parents,
        written=written,
        raw=dict(params),
        warnings=tuple(warnings),
    )


# --- assembling domains ----------------------------------------------------------

_INHERITED = (
    "method",
    "certificate",
    "private_key",
    "private_key_password",
    "ca_list",
    "ca_path",
    "crl",
    "verify_certificate",
    "require_certificate",
    "verify_client",
    "verify_depth",
    "cipher_list",
)


def _build_domain(section: Section, parents: _Params) -> Domain:
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    raw: dict[str, str] = {}
    for key in _INHERITED:
        value, origin, text = parents.parents[key]
        values[key], origins[key], raw[key] = value, origin, text
    if section.entry("certificate") is not None and section.entry("private_key") is None:
        # A section certificate without a key: read the key from the same file.
        cert = section.entry("certificate")
        assert cert is not None
        values["private_key"] = cert.value
        origins["private_key"] = (cert.source, cert.line)
        raw["private_key"] = cert.raw
    values.update(
        server_name=None,
        server_name_mode=0,
        server_id=None,
        verify_identity=section.role == CLIENT,
        identity_wildcards=False,
    )
    if section.kind == KIND_DEFAULT and section.source == DEFAULT_SOURCE:
        value, origin, text = parents.parents["server_name"]
        values["server_name"], origins["server_name"], raw["server_name"] = value, origin, text
    for entry in section.entries:
        values[entry.key] = entry.value
        origins[entry.key] = (entry.source, entry.line)
        raw[entry.key] = entry.raw
    minimum, maximum = METHODS[values["method"]]
    verify_client = values["verify_client"]
    require = bool(values["require_certificate"]) or verify_client == "on"
    verify = (
        require
        or bool(values["verify_certificate"])
        or verify_client in ("optional", "optional_no_ca")
    )
    implicit = section.source == DEFAULT_SOURCE
    return Domain(
        role=section.role,
        kind=section.kind,
        address=section.address,
        method=values["method"],
        min_version=minimum,
        max_version=maximum,
        cipher_list=values["cipher_list"],
        cipher_list_tls13=minimum == TLS1_3,
        certificate=values["certificate"],
        private_key=values["private_key"],
        private_key_password=values["private_key_password"],
        ca_list=values["ca_list"],
        ca_path=values["ca_path"],
        crl=values["crl"],
        verify_certificate=values["verify_certificate"],
        require_certificate=values["require_certificate"],
        verify_client=verify_client,
        verify_depth=values["verify_depth"],
        verify_peer=verify,
        require_peer_certificate=require,
        accept_unknown_ca=verify_client == "optional_no_ca",
        server_name=values["server_name"],
        server_name_mode=values["server_name_mode"],
        server_id=values["server_id"],
        verify_identity=values["verify_identity"],
        identity_wildcards=values["identity_wildcards"],
        source=None if implicit else section.source,
        line=None if implicit else section.line,
        origins=origins,
        raw=raw,
    )


def _modes_overlap(mode_a: int, mode_b: int) -> bool:
    """Whether two server_name_modes can both match some name for one server_name."""
    exact = {0: True, 1: True, 2: False}
    subdomains = {0: False, 1: True, 2: True}
    return (exact[mode_a] and exact[mode_b]) or (subdomains[mode_a] and subdomains[mode_b])


def _where(section: Section) -> str:
    return f"{section.source}:{section.line}"


def _check_sections(sections: Sequence[Section]) -> None:
    """The checks between sections: duplicates, names, ids."""
    defaults: dict[str, Section] = {}
    named: dict[tuple[str, tuple[str, int] | None], list[tuple[Section, str, int]]] = {}
    by_address: dict[tuple[str, tuple[str, int]], list[Section]] = {}
    server_ids: dict[str, Section] = {}
    for section in sections:
        name_entry = section.entry("server_name")
        server_name = None if name_entry is None else name_entry.value
        mode_entry = section.entry("server_name_mode")
        mode = 0 if mode_entry is None else mode_entry.value
        if section.kind == KIND_DEFAULT:
            first = defaults.get(section.role)
            if first is not None:
                raise ConfigError(
                    f"duplicate [{section.name}] section (the first is at {_where(first)})",
                    source=section.source,
                    line=section.line,
                    section=section.name,
                )
            defaults[section.role] = section
        elif section.kind == KIND_ANY:
            if server_name is None:
                raise ConfigError(
                    "an 'any' section needs a server_name: it is matched only by name",
                    source=section.source,
                    line=section.line,
                    key="server_name",
                    section=section.name,
                )
        else:
            assert section.address is not None
            group = by_address.setdefault((section.role, section.address), [])
            if group:
                unnamed = next(
                    (s for s in [*group, section] if s.entry("server_name") is None), None
                )
                if unnamed is not None:
                    other = group[0] if unnamed is section else section
                    raise ConfigError(
                        f"duplicate [{section.name}] section (another is at {_where(other)}); "
                        f"several sections for one address need a server_name each, "
                        f"and the one at {_where(unnamed)} has none",
                        source=section.source,
                        line=section.line,
                        key="server_name",
                        section=section.name,
                    )
            group.append(section)
        if server_name is not None and section.kind != KIND_DEFAULT:
            scope = (section.role, section.address)
            for other_section, other_name, other_mode in named.get(scope, []):
                if other_name == server_name and _modes_overlap(mode, other_mode):
                    raise ConfigError(
                        f"duplicate [{section.name}] section: server_name '{server_name}' "
                        f"is already used by the section at {_where(other_section)}",
                        source=section.source,
                        line=name_entry.line if name_entry else section.line,
                        key="server_name",
                        section=section.name,
                    )
            named.setdefault(scope, []).append((section, server_name, mode))
        id_entry = section.entry("server_id")
        if section.role == CLIENT and id_entry is not None and id_entry.value is not None:
            lowered = id_entry.value.lower()
            first = server_ids.get(lowered)
            if first is not None:
                raise ConfigError(
                    f"server_id '{id_entry.value}' is already used by the section at "
                    f"{_where(first)}",
                    source=section.source,
                    line=id_entry.line,
                    key="server_id",
                    section=section.name,
                )
            server_ids[lowered] = section


def _section_warnings(sections: Sequence[Section]) -> list[str]:
    warnings = []
    for section in sections:
        entry = section.entry("server_id")
        if section.role == SERVER and entry is not None:
            warnings.append(
                f"{entry.source}:{entry.line}: [{section.name}] server_id has no effect "
                "on a server domain (it selects client domains)."
            )
    return warnings


def _check_files(domains: Sequence[Domain], params: _Params) -> None:
    """Check that every file a domain names exists and can be read."""
    seen: set[tuple[str, str]] = set()
    for domain in domains:
        for key in (*_FILE_KEYS, *_DIR_KEYS):
            path = getattr(domain, key)
            source, line = domain.origin(key)
            if path is None or source == DEFAULT_SOURCE or (key, path) in seen:
                continue
            seen.add((key, path))
            problem = _file_problem(path, directory=key in _DIR_KEYS)
            if problem is None:
                continue
            if source == PARAM_SOURCE:
                name = params.written.get(key, key)
                raise ConfigError(f"{name}: {problem}", source=PARAM_SOURCE, key=name)
            raise ConfigError(
                f"{key}: {problem}",
                source=source,
                line=line,
                key=key,
                section=domain.section,
            )


def _file_problem(path: str, *, directory: bool) -> str | None:
    what = "directory" if directory else "file"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return f"{what} '{path}' does not exist"
    except (OSError, ValueError) as e:
        return f"cannot read {what} '{path}' ({getattr(e, 'strerror', None) or e})"
    if directory:
        if not stat.S_ISDIR(info.st_mode):
            return f"'{path}' is not a directory"
        if not os.access(path, os.R_OK | os.X_OK):
            return f"directory '{path}' is not readable"
        return None
    if stat.S_ISDIR(info.st_mode):
        return f"'{path}' is a directory, not a file"
    if not os.access(path, os.R_OK):
        return f"file '{path}' is not readable (check its permissions)"
    return None


def config_from_sections(
    sections: Sequence[Section],
    params: Mapping[str, str] | None = None,
    *,
    default_certificate: str,
    default_private_key: str,
    cwd: str | None = None,
    config_files: Sequence[str] = (),
    check_files: bool = True,
) -> LoadedConfig:
    """Build the configuration from parsed *sections* and module *params*.

    Unset keys of each section take the module parameter values; implicit
    default domains are added for a role whose default section is missing.
    With *check_files*, every certificate, key, CA file, CA directory and
    CRL a domain names must exist and be readable (the generated default
    certificate is not checked: it may not exist yet).
    """
    cwd = os.getcwd() if cwd is None else cwd
    parsed = _parse_params(
        params or {},
        default_certificate=default_certificate,
        default_private_key=default_private_key,
        cwd=cwd,
    )
    _check_sections(sections)
    warnings = list(parsed.warnings) + _section_warnings(sections)
    domains = [_build_domain(section, parsed) for section in sections]
    for role in (SERVER, CLIENT):
        if not any(d.role == role and d.kind == KIND_DEFAULT for d in domains):
            implicit = Section(
                role=role, kind=KIND_DEFAULT, address=None, source=DEFAULT_SOURCE, line=0
            )
            domains.append(_build_domain(implicit, parsed))
    if check_files:
        _check_files(domains, parsed)
    config = TLSConfig(
        domains=tuple(domains),
        params=parsed.raw,
        config_files=tuple(config_files),
        **parsed.settings,
    )
    return LoadedConfig(config=config, warnings=tuple(warnings))


def read_tls_cfg(
    path: str, *, name: str | None = None
) -> tuple[tuple[Section, ...], tuple[str, ...]]:
    """Read a tls.cfg file, or every regular file of a directory in name order.

    Returns the sections and the absolute paths of the files read.  *name* is
    how the path is shown in errors (as the operator wrote it); files inside a
    directory are shown as ``name/file``.  Dotfiles in a directory are skipped.
    """
    shown = path if name is None else name
    try:
        is_dir = os.path.isdir(path)
    except ValueError:
        is_dir = False
    if is_dir:
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            raise ConfigError(
                f"cannot read tls.cfg directory '{shown}' ({e.strerror})",
                source=PARAM_SOURCE,
                key="config",
            ) from None
        files = [
            (os.path.join(path, n), os.path.join(shown, n))
            for n in names
            if not n.startswith(".") and os.path.isfile(os.path.join(path, n))
        ]
    else:
        files = [(path, shown)]
    sections: list[Section] = []
    read: list[str] = []
    for real, display in files:
        try:
            with open(real, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise ConfigError(
                f"tls.cfg file '{display}' does not exist", source=PARAM_SOURCE, key="config"
            ) from None
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"file is not valid UTF-8 text (byte offset {e.start})", source=display
            ) from None
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"cannot read tls.cfg file '{display}' ({getattr(e, 'strerror', None) or e})",
                source=PARAM_SOURCE,
                key="config",
            ) from None
        real = os.path.abspath(real)
        sections.extend(parse_tls_cfg(text, display, os.path.dirname(real)))
        read.append(real)
    return tuple(sections), tuple(read)


def load_config(
    params: Mapping[str, str],
    *,
    default_certificate: str,
    default_private_key: str,
    cwd: str | None = None,
    check_files: bool = True,
) -> LoadedConfig:
    """Parse module parameters and the tls.cfg they name (``config``), if any.

    *default_certificate* and *default_private_key* are the generated
    self-signed certificate, used where nothing else is configured.  Relative
    module parameter paths are resolved against *cwd* (default: the current
    directory); paths inside tls.cfg against the directory of their file.
    """
    cwd = os.getcwd() if cwd is None else cwd
    sections: tuple[Section, ...] = ()
    files: tuple[str, ...] = ()
    config_name = next((k for k in params if k.lower() == "config"), None)
    if config_name is not None and params[config_name] != "":
        written = params[config_name]
        if "\x00" in written:
            raise ConfigError(
                "config: the path contains a NUL character", source=PARAM_SOURCE, key="config"
            )
        path = os.path.normpath(os.path.join(cwd, written))
        sections, files = read_tls_cfg(path, name=written)
    return config_from_sections(
        sections,
        params,
        default_certificate=default_certificate,
        default_private_key=default_private_key,
        cwd=cwd,
        config_files=files,
        check_files=check_files,
    )


def load_config_text(
    text: str,
    params: Mapping[str, str] | None = None,
    *,
    source_name: str = "tls.cfg",
    base_dir: str,
    default_certificate: str,
    default_private_key: str,
    cwd: str | None = None,
    check_files: bool = True,
) -> LoadedConfig:
    """Like :func:`load_config`, with the tls.cfg content given as *text*."""
    return config_from_sections(
        parse_tls_cfg(text, source_name, base_dir),
        params,
        default_certificate=default_certificate,
        default_private_key=default_private_key,
        cwd=cwd,
        check_files=check_files,
    )


def check_listeners(config: TLSConfig, listen_addresses: Sequence[tuple[str, int]]) -> None:
    """Raise ConfigError for a server IP domain that no listening socket serves.

    A listener on ``0.0.0.0`` serves every IPv4 domain on its port, one on
    ``::`` every domain on its port; a domain with port 0 matches any port.
    """
    listeners = set()
    for host, port in listen_addresses:
        listeners.add((canonical_ip(host) or host, port))
    ports = {port for _, port in listeners}
    for domain in config.domains:
        if domain.role != SERVER or domain.kind != KIND_ADDRESS:
            continue
        assert domain.address is not None
        ip, port = domain.address
        wanted_ports = ports if port == 0 else {port}
        wildcard = "0.0.0.0" if ":" not in ip else "::"
        if any(
            (ip, p) in listeners or (wildcard, p) in listeners or ("::", p) in listeners
            for p in wanted_ports
        ):
            continue
        shown = ", ".join(sorted(f"{h}:{p}" for h, p in listeners)) or "none"
        raise ConfigError(
            f"no listening socket for {format_address(domain.address)} (listening on: {shown})",
            source=domain.source,
            line=domain.line,
            section=domain.section,
        )
