"""Tests for siptls.config: module parameters and the tls.cfg grammar."""

from __future__ import annotations

import os
from collections.abc import Mapping

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from siptls import config as cfgmod
from siptls.config import (
    DOMAIN_KEY_ALIASES,
    IGNORED_PARAMS,
    METHODS,
    LoadedConfig,
    check_listeners,
    config_from_sections,
    load_config,
    load_config_text,
    parse_tls_cfg,
)
from siptls.errors import ConfigError

DEFAULT_CERT = "/gen/siptls-selfsigned.pem"
DEFAULT_KEY = "/gen/siptls-selfsigned.key"

SAMPLE = """\
#
# Kamailio TLS configuration file (the installed sample, examples enabled)
#

[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = kamailio-selfsigned.key
certificate = kamailio-selfsigned.pem
#ca_list = /usr/local/etc/kamailio/ca.pem

[client:default]
verify_certificate = yes
require_certificate = yes

[server:10.0.0.10:5061]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
private_key = kamailio_key.pem
certificate = kamailio_cert.pem
ca_list = local_ca.pem
crl = local_crl.pem
server_name = kamailio.sip-server.net
server_id = kamailio.sip-server.net

[client:10.0.0.10:5061]
verify_certificate = yes
require_certificate = yes
private_key = default_key.pem
certificate = default_cert.pem
ca_list = default_ca.pem
crl = default_crl.pem

[server:any]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
private_key = kamailio_key.pem
certificate = kamailio_cert.pem
server_name = kamailio.sip-server.net
server_name_mode = 1

[server:any]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
private_key = kamailio_key.pem
certificate = kamailio_cert.pem
server_name = sip-server.net
server_name_mode = 2
"""


def load(
    text: str,
    params: Mapping[str, str] | None = None,
    *,
    base_dir: str = "/etc/kamailio",
    check_files: bool = False,
) -> LoadedConfig:
    return load_config_text(
        text,
        params,
        base_dir=base_dir,
        default_certificate=DEFAULT_CERT,
        default_private_key=DEFAULT_KEY,
        cwd="/run/siptls",
        check_files=check_files,
    )


def load_params(params: Mapping[str, str], cwd: str = "/run/siptls") -> LoadedConfig:
    return load_config(
        params,
        default_certificate=DEFAULT_CERT,
        default_private_key=DEFAULT_KEY,
        cwd=cwd,
        check_files=False,
    )


def only(loaded: LoadedConfig, section: str) -> cfgmod.Domain:
    matches = [d for d in loaded.config.domains if d.section == section]
    assert len(matches) == 1, matches
    return matches[0]


class ConfigErrorAssertions(SynchronousTestCase):
    def assertConfigError(
        self,
        text: str,
        where: str,
        *fragments: str,
        key: str | None = None,
        check_files: bool = False,
        base_dir: str = "/etc/kamailio",
    ) -> ConfigError:
        """Loading *text* fails with one line starting with *where* and naming *fragments*."""
        err = self.assertRaises(ConfigError, load, text, base_dir=base_dir, check_files=check_files)
        message = str(err)
        self.assertTrue(message.startswith(where), message)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        if key is not None:
            self.assertEqual(err.key, key)
        return err


class SampleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        for name in (
            "kamailio-selfsigned.key",
            "kamailio-selfsigned.pem",
            "kamailio_key.pem",
            "kamailio_cert.pem",
            "local_ca.pem",
            "local_crl.pem",
            "default_key.pem",
            "default_cert.pem",
            "default_ca.pem",
            "default_crl.pem",
        ):
            with open(os.path.join(self.dir, name), "w"):
                pass

    def test_sample_parses(self) -> None:
        """The Kamailio sample tls.cfg, examples uncommented, loads with file checks on."""
        loaded = load(SAMPLE, base_dir=self.dir, check_files=True)
        ids = [d.id for d in loaded.config.domains]
        self.assertEqual(
            ids,
            [
                "TLSs<default>",
                "TLSc<default>",
                "TLSs<10.0.0.10:5061>",
                "TLSc<10.0.0.10:5061>",
                "TLSs<any:kamailio.sip-server.net>",
                "TLSs<any:sip-server.net>",
            ],
        )
        server = loaded.config.server_default
        self.assertEqual(server.method, "TLSv1.2+")
        self.assertEqual(server.certificate, os.path.join(self.dir, "kamailio-selfsigned.pem"))
        self.assertEqual(server.private_key, os.path.join(self.dir, "kamailio-selfsigned.key"))
        self.assertFalse(server.verify_peer)
        client = loaded.config.client_default
        self.assertTrue(client.verify_peer)
        self.assertTrue(client.require_peer_certificate)
        self.assertEqual(client.certificate, DEFAULT_CERT)
        ip = only(loaded, "server:10.0.0.10:5061")
        self.assertEqual(ip.address, ("10.0.0.10", 5061))
        self.assertEqual(ip.crl, os.path.join(self.dir, "local_crl.pem"))
        self.assertEqual(ip.server_id, "kamailio.sip-server.net")
        anys = [d for d in loaded.config.domains if d.kind == "any"]
        self.assertEqual([d.server_name_mode for d in anys], [1, 2])
        self.assertEqual(len(loaded.warnings), 1)
        self.assertIn("server_id has no effect", loaded.warnings[0])

    def test_sample_missing_file(self) -> None:
        """A file named by the sample that does not exist is an error at its line and key."""
        os.remove(os.path.join(self.dir, "local_crl.pem"))
        err = self.assertRaises(ConfigError, load, SAMPLE, base_dir=self.dir, check_files=True)
        self.assertTrue(str(err).startswith("tls.cfg:24: [server:10.0.0.10:5061] crl:"), str(err))
        self.assertIn("does not exist", str(err))
        self.assertEqual((err.source, err.line, err.key), ("tls.cfg", 24, "crl"))


class GrammarTests(SynchronousTestCase):
    def test_role_aliases(self) -> None:
        """server/srv/s and client/cli/c, in any case, name the two roles."""
        for word, role in [
            ("server", "server"),
            ("SRV", "server"),
            ("s", "server"),
            ("Client", "client"),
            ("cli", "client"),
            ("C", "client"),
        ]:
            (section,) = parse_tls_cfg(f"[{word}:default]\n", "t", "/")
            self.assertEqual(section.role, role, word)

    def test_address_aliases(self) -> None:
        """default/def/* name the default domain, any/all the any domain."""
        for word in ("default", "DEF", "*"):
            (section,) = parse_tls_cfg(f"[server:{word}]\n", "t", "/")
            self.assertEqual((section.kind, section.address), ("default", None))
        for word in ("any", "ALL"):
            (section,) = parse_tls_cfg(f"[client:{word}]\nserver_name=a.example\n", "t", "/")
            self.assertEqual((section.kind, section.address), ("any", None))

    def test_ip_sections(self) -> None:
        """IPv4:PORT and [IPv6]:PORT sections, canonicalised; port 0 parses."""
        sections = parse_tls_cfg(
            "[server:10.0.0.1:5061]\n[server:[2001:DB8:0::1]:5061]\n[client: 10.0.0.2:0 ]\n",
            "t",
            "/",
        )
        self.assertEqual(
            [s.address for s in sections],
            [("10.0.0.1", 5061), ("2001:db8::1", 5061), ("10.0.0.2", 0)],
        )
        loaded = load("[server:[2001:db8::1]:5061]\n")
        domain = only(loaded, "server:[2001:db8::1]:5061")
        self.assertEqual(domain.id, "TLSs<2001:db8::1:5061>")

    def test_key_aliases(self) -> None:
        """Every key and alias, in any case, sets its canonical key."""
        samples = {
            "method": ("TLSv1.3", "TLSv1.3"),
            "certificate": ("c.pem", "/etc/kamailio/c.pem"),
            "private_key": ("k.pem", "/etc/kamailio/k.pem"),
            "private_key_password": ("secret", "secret"),
            "ca_list": ("ca.pem", "/etc/kamailio/ca.pem"),
            "ca_path": ("/etc/ssl/certs", "/etc/ssl/certs"),
            "crl": ("crl.pem", "/etc/kamailio/crl.pem"),
            "verify_certificate": ("yes", True),
            "require_certificate": ("on", True),
            "verify_client": ("optional", "optional"),
            "verify_depth": ("3", 3),
            "cipher_list": ("HIGH:!aNULL", "HIGH:!aNULL"),
            "server_name": ("Example.COM", "example.com"),
            "server_name_mode": ("2", 2),
            "server_id": ("Peer-1", "Peer-1"),
            "verify_identity": ("no", False),
            "identity_wildcards": ("yes", True),
        }
        self.assertEqual(set(samples), set(DOMAIN_KEY_ALIASES.values()))
        for written, canonical in DOMAIN_KEY_ALIASES.items():
            raw, expected = samples[canonical]
            for name in (written, written.upper()):
                if canonical == "server_name":
                    loaded = load(f"[client:any]\n{name} = {raw}\n")
                else:
                    loaded = load(f"[client:any]\nserver_name=x.example\n{name} = {raw}\n")
                domain = loaded.config.domains[0]
                self.assertEqual(getattr(domain, canonical), expected, name)
                self.assertEqual(domain.raw[canonical], raw)

    def test_booleans(self) -> None:
        """Every boolean spelling, in any case, is accepted."""
        for word in ("yes", "TRUE", "on", "Enable", "enabled", "1"):
            loaded = load(f"[server:default]\nverify_certificate = {word}\n")
            self.assertTrue(loaded.config.server_default.verify_certificate, word)
        for word in ("no", "false", "OFF", "disable", "Disabled", "0"):
            loaded = load(f"[server:default]\nverify_certificate = {word}\n")
            self.assertFalse(loaded.config.server_default.verify_certificate, word)

    def test_comments_and_blank_lines(self) -> None:
        """Comments on their own line, after a header and after a value are ignored."""
        loaded = load(
            "# top\n\n   # indented\n[server:default]  # header comment\n"
            "\tmethod = TLSv1.3   # trailing\n\r\n"
            'cipher_list = "A#B" # the hash inside quotes is kept\n'
        )
        self.assertEqual(loaded.config.server_default.method, "TLSv1.3")
        self.assertEqual(loaded.config.server_default.cipher_list, "A#B")

    def test_quoted_escapes(self) -> None:
        """Quoted values resolve the escapes \\" \\\\ \\n \\r \\t and backslash-newline."""
        loaded = load('[server:default]\nprivate_key_password = "a\\"b\\\\c\\nd\\re\\tf\\\ng"\n')
        self.assertEqual(loaded.config.server_default.private_key_password, 'a"b\\c\nd\re\tfg')

    def test_line_numbers_after_continuation(self) -> None:
        """A backslash-newline continuation still counts the line for later errors."""
        err = self.assertRaises(
            ConfigError, load, '[server:default]\ncipher_list = "a\\\nb"\nbogus = 1\n'
        )
        self.assertTrue(str(err).startswith("tls.cfg:4:"), str(err))

    def test_unquoted_extended_token(self) -> None:
        """Unquoted values may hold Kamailio's extended-mode delimiter characters."""
        value = "ECDHE+AESGCM:!aNULL:@STRENGTH;a.b,c?[d]/e@f$g%h&i*(j)-k|l'm=n"
        loaded = load(f"[server:default]\ncipher_list = {value}\n")
        self.assertEqual(loaded.config.server_default.cipher_list, value)

    def test_empty_string_means_no_certificate(self) -> None:
        """certificate = "" means the domain presents no certificate."""
        loaded = load('[client:default]\ncertificate = ""\nprivate_key=""\n', check_files=True)
        self.assertIsNone(loaded.config.client_default.certificate)
        self.assertIsNone(loaded.config.client_default.private_key)

    def test_paths_relative_to_file(self) -> None:
        """Relative paths in tls.cfg resolve against the file's directory; absolute stay."""
        loaded = load(
            "[server:default]\ncertificate = certs/../a.pem\nca_list = /abs/ca.pem\n",
            base_dir="/etc/k",
        )
        self.assertEqual(loaded.config.server_default.certificate, "/etc/k/a.pem")
        self.assertEqual(loaded.config.server_default.ca_list, "/abs/ca.pem")

    def test_methods(self) -> None:
        """Each method name maps to its (min, max) versions; TLSv1.3(+) ciphers are suites."""
        expected = {
            "SSLv23": ("TLSv1", None),
            "TLSv1": ("TLSv1", "TLSv1"),
            "TLSv1.0": ("TLSv1", "TLSv1"),
            "TLSv1+": ("TLSv1", None),
            "TLSv1.0+": ("TLSv1", None),
            "TLSv1.1": ("TLSv1.1", "TLSv1.1"),
            "TLSv1.1+": ("TLSv1.1", None),
            "TLSv1.2": ("TLSv1.2", "TLSv1.2"),
            "TLSv1.2+": ("TLSv1.2", None),
            "TLSv1.3": ("TLSv1.3", "TLSv1.3"),
            "TLSv1.3+": ("TLSv1.3", None),
        }
        self.assertEqual(dict(METHODS), expected)
        for name, (low, high) in expected.items():
            domain = load(f"[server:default]\ntls_method = {name.lower()}\n").config.server_default
            self.assertEqual(
                (domain.method, domain.min_version, domain.max_version), (name, low, high)
            )
            self.assertEqual(domain.cipher_list_tls13, name.startswith("TLSv1.3"))

    def test_default_method(self) -> None:
        """Without any method setting every domain uses TLSv1.2+."""
        loaded = load("[server:1.2.3.4:5061]\n")
        self.assertEqual({d.method for d in loaded.config.domains}, {"TLSv1.2+"})
        self.assertEqual(loaded.config.tls_method, "TLSv1.2+")

    def test_verify_truth_table(self) -> None:
        """verify_client is OR-ed with the booleans; require implies verify (reference 4.1)."""
        cases = [
            # verify, require, verify_client -> verify_peer, require_peer, accept_unknown
            ("no", "no", "off", (False, False, False)),
            ("yes", "no", "off", (True, False, False)),
            ("no", "yes", "off", (True, True, False)),
            ("yes", "yes", "off", (True, True, False)),
            ("no", "no", "on", (True, True, False)),
            ("no", "no", "optional", (True, False, False)),
            ("no", "no", "optional_no_ca", (True, False, True)),
            ("no", "yes", "optional_no_ca", (True, True, True)),
            ("yes", "no", "OPTIONAL", (True, False, False)),
        ]
        for verify, require, client, flags in cases:
            domain = load(
                f"[server:default]\nverify_cert={verify}\nrequire_cert={require}\n"
                f"verify_client={client}\n"
            ).config.server_default
            self.assertEqual(
                (domain.verify_peer, domain.require_peer_certificate, domain.accept_unknown_ca),
                flags,
                (verify, require, client),
            )

    def test_server_name_normalised(self) -> None:
        """server_name is lower-cased and IDNA-encoded; one trailing dot is dropped."""
        loaded = load(
            "[server:any]\nserver_name = Bücher.Example.\n"
            "[server:all]\nserver_name = SIP_Proxy.Example.COM\n"
        )
        names = [d.server_name for d in loaded.config.domains if d.kind == "any"]
        self.assertEqual(names, ["xn--bcher-kva.example", "sip_proxy.example.com"])
        self.assertEqual(loaded.config.domains[0].id, "TLSs<any:xn--bcher-kva.example>")

    def test_defaults_always_present(self) -> None:
        """An empty file still yields one server default and one client default."""
        loaded = load("")
        self.assertEqual([d.id for d in loaded.config.domains], ["TLSs<default>", "TLSc<default>"])
        self.assertTrue(all(d.implicit for d in loaded.config.domains))
        self.assertEqual(loaded.config.server_default.certificate, DEFAULT_CERT)
        self.assertEqual(loaded.config.server_default.private_key, DEFAULT_KEY)
        self.assertTrue(loaded.config.client_default.verify_identity)
        self.assertFalse(loaded.config.server_default.verify_identity)

    def test_sections_inherit_module_params(self) -> None:
        """Unset section keys take the module parameter values, with their origin."""
        loaded = load(
            "[server:1.2.3.4:5061]\nverify_depth = 4\n",
            {"certificate": "c.pem", "verify_depth": "7", "tls_method": "TLSv1.3"},
        )
        domain = only(loaded, "server:1.2.3.4:5061")
        self.assertEqual(domain.certificate, "/run/siptls/c.pem")
        self.assertEqual(domain.private_key, "/run/siptls/c.pem")
        self.assertEqual(domain.method, "TLSv1.3")
        self.assertEqual(domain.verify_depth, 4)
        self.assertEqual(domain.origin("verify_depth"), ("tls.cfg", 2))
        self.assertEqual(domain.origin("certificate"), ("--param", None))
        self.assertEqual(domain.origin("ca_list"), ("<default>", None))
        self.assertEqual(loaded.config.server_default.verify_depth, 7)

    def test_section_certificate_without_key(self) -> None:
        """A section certificate without a private_key reads the key from the same file."""
        domain = load("[server:default]\ncertificate = both.pem\n").config.server_default
        self.assertEqual(domain.private_key, "/etc/kamailio/both.pem")
        self.assertEqual(domain.origin("private_key"), ("tls.cfg", 2))

    def test_same_address_with_distinct_names(self) -> None:
        """Several sections for one address are allowed when each has its own server_name."""
        loaded = load(
            "[server:1.2.3.4:5061]\nserver_name=a.example\n"
            "[server:1.2.3.4:5061]\nserver_name=b.example\n"
            "[server:any]\nserver_name=a.example\nserver_name_mode=0\n"
            "[server:any]\nserver_name=a.example\nserver_name_mode=2\n"
        )
        self.assertEqual(len(loaded.config.server_domains), 5)

    def test_domain_error_helper(self) -> None:
        """Domain.error locates a later (OpenSSL-layer) problem at the line of the value."""
        domain = load("[server:default]\n\nprivate_key = k.pem\n").config.server_default
        err = domain.error("private_key", "private_key: key does not match the certificate")
        self.assertTrue(str(err).startswith("tls.cfg:3: [server:default] private_key:"), str(err))
        implicit = load("").config.server_default
        self.assertEqual(implicit.error("certificate", "x").source, "<default>")

    def test_equal_configs(self) -> None:
        """Loading the same text twice gives equal, hashable domain records."""
        a = load(SAMPLE).config
        b = load(SAMPLE).config
        self.assertEqual(a.domains, b.domains)
        self.assertEqual(len({*a.domains, *b.domains}), len(a.domains))


class GrammarErrorTests(ConfigErrorAssertions):
    def test_unknown_key(self) -> None:
        """An unknown key is named, with the closest known key suggested."""
        self.assertConfigError(
            "[server:default]\ncertifcate = a.pem\n",
            "tls.cfg:2: [server:default] ",
            "unknown option 'certifcate'",
            "did you mean 'certificate'?",
            key="certifcate",
        )

    def test_dual_certificate_keys(self) -> None:
        """certificate2 and friends are refused with the reason."""
        self.assertConfigError(
            "[server:default]\ncertificate2 = a.pem\n",
            "tls.cfg:2: [server:default] ",
            "certificate2",
            "not supported",
        )

    def test_option_before_section(self) -> None:
        """An option line before the first section header is an error."""
        self.assertConfigError(
            "\nmethod = TLSv1.2\n[server:default]\n",
            "tls.cfg:2: ",
            "'method'",
            "before the first section",
            key="method",
        )

    def test_bad_method(self) -> None:
        """An unknown method lists the valid ones."""
        self.assertConfigError(
            "[server:default]\n" * 1 + "\n" * 10 + "method = TLSv9\n",
            "tls.cfg:12: [server:default] method: unknown method 'TLSv9' (expected one of SSLv23,",
            key="method",
        )

    def test_ssl_methods_refused(self) -> None:
        """SSLv2 and SSLv3 are refused as insecure."""
        for name in ("SSLv2", "sslv3"):
            self.assertConfigError(
                f"[client:default]\ntls_method = {name}\n",
                "tls.cfg:2: [client:default] tls_method:",
                "insecure",
                key="tls_method",
            )

    def test_bad_boolean(self) -> None:
        """A word that is not a boolean is refused, naming the key and the value."""
        self.assertConfigError(
            "[server:default]\nrequire_cert = maybe\n",
            "tls.cfg:2: [server:default] require_cert:",
            "'maybe' is not a boolean",
        )

    def test_bad_integers(self) -> None:
        """Non-integers and out-of-range integers are refused."""
        self.assertConfigError(
            "[server:default]\nverify_depth = ten\n",
            "tls.cfg:2: [server:default] verify_depth:",
            "not a decimal integer",
        )
        self.assertConfigError(
            "[server:default]\nverify_depth = 101\n",
            "tls.cfg:2: [server:default] verify_depth:",
            "out of range",
        )
        self.assertConfigError(
            "[server:any]\nserver_name=a.b\nserver_name_mode = 3\n",
            "tls.cfg:3: [server:any] server_name_mode:",
            "out of range",
        )
        self.assertConfigError(
            "[server:default]\nverify_depth = -1\n",
            "tls.cfg:2: [server:default] verify_depth:",
            "out of range",
        )

    def test_bad_verify_client(self) -> None:
        """An unknown verify_client value lists the valid ones."""
        self.assertConfigError(
            "[server:default]\nverify_client = sometimes\n",
            "tls.cfg:2: [server:default] verify_client:",
            "off, on, optional, optional_no_ca",
        )

    def test_wildcard_server_name(self) -> None:
        """A '*' in server_name is refused with a pointer to server_name_mode."""
        self.assertConfigError(
            "[server:any]\nserver_name = *.example.com\n",
            "tls.cfg:2: [server:any] server_name:",
            "server_name_mode",
        )

    def test_bad_server_name(self) -> None:
        """A server_name IDNA refuses is an error."""
        self.assertConfigError(
            '[server:any]\nserver_name = "b\u00fccher\u200d.example"\n',
            "tls.cfg:2: [server:any] server_name:",
        )

    def test_duplicate_key(self) -> None:
        """A key set twice in one section (even through an alias) is an error."""
        self.assertConfigError(
            "[server:default]\ncertificate = a\ncert_file = b\n",
            "tls.cfg:3: [server:default] ",
            "'cert_file' is set twice",
            "line 2",
        )

    def test_missing_bracket(self) -> None:
        """A section header without ']' is an error."""
        self.assertConfigError("[server:default\n", "tls.cfg:1: ", "closing ']' missing")
        self.assertConfigError("[server:[::1]:5061\n", "tls.cfg:1: ", "closing ']' missing")
        self.assertConfigError("[server:[::1\n", "tls.cfg:1: ", "closing ']' missing")

    def test_missing_colon(self) -> None:
        """A section header without ':' is an error."""
        self.assertConfigError("[server]\n", "tls.cfg:1: ", "':' expected")

    def test_unknown_type(self) -> None:
        """An unknown domain type is an error listing the valid ones."""
        self.assertConfigError("[proxy:default]\n", "tls.cfg:1: ", "unknown domain type 'proxy'")

    def test_bad_addresses(self) -> None:
        """Bad IPv4, bad IPv6, host names, unbracketed IPv6 and bad ports are errors."""
        self.assertConfigError("[server:10.0.0.300:5061]\n", "tls.cfg:1: ", "invalid IPv4")
        self.assertConfigError("[server:sip.example.com:5061]\n", "tls.cfg:1: ", "host names")
        self.assertConfigError("[server:[2001:db8::g]:5061]\n", "tls.cfg:1: ", "invalid IPv6")
        self.assertConfigError("[server:2001:db8::1:5061]\n", "tls.cfg:1: ", "brackets")
        self.assertConfigError("[server:10.0.0.1]\n", "tls.cfg:1: ", "not default, any or IP:PORT")
        self.assertConfigError("[server:10.0.0.1:65536]\n", "tls.cfg:1: ", "invalid port")
        self.assertConfigError("[server:10.0.0.1:50x]\n", "tls.cfg:1: ", "invalid port")
        self.assertConfigError("[server:[::1]5061]\n", "tls.cfg:1: ", "port expected")
        self.assertConfigError("[server:default:5061]\n", "tls.cfg:1: ", "takes no port")

    def test_text_after_header(self) -> None:
        """Text after a section header's ']' is an error."""
        self.assertConfigError("[server:default] extra\n", "tls.cfg:1: ", "unexpected text 'extra'")

    def test_missing_equals(self) -> None:
        """An option without '=' is an error."""
        self.assertConfigError(
            "[server:default]\nmethod TLSv1.2\n", "tls.cfg:2: [server:default] ", "'=' expected"
        )

    def test_missing_value(self) -> None:
        """An option with nothing after '=' is an error."""
        self.assertConfigError(
            "[server:default]\ncrl =   # none\n", "tls.cfg:2: [server:default] ", "missing value"
        )

    def test_unterminated_quote(self) -> None:
        """A quoted value without its closing quote is an error at the line it starts."""
        self.assertConfigError(
            '[server:default]\ncipher_list = "HIGH\nmethod = TLSv1.2\n',
            "tls.cfg:2: [server:default] ",
            "unterminated",
        )
        self.assertConfigError(
            '[server:default]\ncipher_list = "HIGH', "tls.cfg:2: ", "unterminated"
        )

    def test_text_after_value(self) -> None:
        """A second word after a value is an error (end of line expected)."""
        self.assertConfigError(
            "[server:default]\nmethod = TLSv1.2 TLSv1.3\n",
            "tls.cfg:2: [server:default] ",
            "end of line expected",
        )

    def test_bad_character(self) -> None:
        """Characters outside the extended token set need quotes."""
        self.assertConfigError(
            "[server:default]\ncipher_list = a<b\n", "tls.cfg:2: ", "'<'", "double quotes"
        )
        self.assertConfigError("[server:default]\n=x\n", "tls.cfg:2: ", "unexpected character")

    def test_duplicate_default(self) -> None:
        """Two default sections of one role are an error naming both places."""
        self.assertConfigError(
            "[server:default]\n[client:default]\n[server:def]\n",
            "tls.cfg:3: [server:default] ",
            "duplicate",
            "tls.cfg:1",
        )

    def test_duplicate_last_section(self) -> None:
        """A duplicate in the last section of a file is detected too."""
        self.assertConfigError(
            "[server:1.2.3.4:5061]\nmethod=TLSv1.3\n[server:1.2.3.4:5061]\n",
            "tls.cfg:3: [server:1.2.3.4:5061] ",
            "duplicate",
        )

    def test_duplicate_address_one_unnamed(self) -> None:
        """Several sections for one address fail when any lacks a server_name."""
        self.assertConfigError(
            "[server:1.2.3.4:5061]\n[server:1.2.3.4:5061]\nserver_name=a.example\n",
            "tls.cfg:2: [server:1.2.3.4:5061] ",
            "tls.cfg:1 has none",
        )

    def test_duplicate_server_name(self) -> None:
        """Two sections with the same address and server_name are an error."""
        self.assertConfigError(
            "[server:1.2.3.4:5061]\nserver_name=a.example\n"
            "[server:1.2.3.4:5061]\nserver_name=A.example\n",
            "tls.cfg:4: [server:1.2.3.4:5061] ",
            "'a.example'",
        )
        self.assertConfigError(
            "[server:any]\nserver_name=a.example\nserver_name_mode=1\n"
            "[server:any]\nserver_name=a.example\nserver_name_mode=2\n",
            "tls.cfg:5: [server:any] ",
            "already used",
        )

    def test_any_without_server_name(self) -> None:
        """An any section must have a server_name."""
        self.assertConfigError(
            "[server:default]\n[client:any]\nverify_cert = yes\n",
            "tls.cfg:2: [client:any] ",
            "server_name",
            key="server_name",
        )

    def test_duplicate_server_id(self) -> None:
        """Two client sections with the same server_id (any case) are an error."""
        self.assertConfigError(
            "[client:1.2.3.4:5061]\nserver_id=Peer\n[client:default]\nserver_id=peer\n",
            "tls.cfg:4: [client:default] ",
            "server_id 'peer'",
        )

    def test_hsm_key_refused(self) -> None:
        """/engine: and /uri: key references are refused."""
        self.assertConfigError(
            "[server:default]\nprivate_key = /uri:pkcs11:object=k\n",
            "tls.cfg:2: [server:default] private_key:",
            "not supported",
        )


class FileCheckTests(ConfigErrorAssertions):
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.dir, "cadir"))
        for name in ("cert.pem", "key.pem"):
            with open(os.path.join(self.dir, name), "w"):
                pass

    def test_missing_files(self) -> None:
        """Each missing certificate, key, CA file, CA dir or CRL names its line and key."""
        head = "[server:default]\ncertificate=cert.pem\nprivate_key=key.pem\n"
        for key, value in [
            ("certificate", "nope.pem"),
            ("private_key", "nope.key"),
            ("ca_list", "ca.pem"),
            ("ca_path", "nodir"),
            ("crl", "crl.pem"),
        ]:
            text = "[client:default]\n" + f"{key} = {value}\n"
            self.assertConfigError(
                head + text,
                f"tls.cfg:5: [client:default] {key}:",
                os.path.join(self.dir, value),
                key=key,
                check_files=True,
                base_dir=self.dir,
            )

    def test_wrong_kind_of_path(self) -> None:
        """A directory where a file is expected, and a file as ca_path, are errors."""
        self.assertConfigError(
            "[server:default]\ncertificate = cadir\nprivate_key = key.pem\n",
            "tls.cfg:2: [server:default] certificate:",
            "is a directory",
            check_files=True,
            base_dir=self.dir,
        )
        self.assertConfigError(
            "[server:default]\ncertificate = cert.pem\nprivate_key=key.pem\nca_path = key.pem\n",
            "tls.cfg:4: [server:default] ca_path:",
            "not a directory",
            check_files=True,
            base_dir=self.dir,
        )

    def test_existing_files_pass(self) -> None:
        """Existing files and a CA directory pass the checks; the generated default is exempt."""
        loaded = load(
            "[server:default]\ncertificate=cert.pem\nprivate_key=key.pem\nca_path=cadir\n",
            base_dir=self.dir,
            check_files=True,
        )
        self.assertEqual(loaded.config.server_default.ca_path, os.path.join(self.dir, "cadir"))
        self.assertEqual(loaded.config.client_default.certificate, DEFAULT_CERT)

    def test_missing_param_file(self) -> None:
        """A missing file named by a module parameter is a --param error naming it."""
        err = self.assertRaises(
            ConfigError,
            load_config,
            {"ca_list": "missing.pem"},
            default_certificate=DEFAULT_CERT,
            default_private_key=DEFAULT_KEY,
            cwd=self.dir,
        )
        self.assertEqual((err.source, err.key), ("--param", "ca_list"))
        self.assertTrue(str(err).startswith("--param: ca_list: file '"), str(err))


class DirectoryConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.top = os.path.abspath(self.mktemp())
        self.dir = os.path.join(self.top, "tls.d")
        os.makedirs(self.dir)

    def write(self, name: str, text: str) -> None:
        with open(os.path.join(self.dir, name), "w", encoding="utf-8") as f:
            f.write(text)

    def test_directory_sorted_dotfiles_skipped(self) -> None:
        """A config directory's files are read in name order, skipping dotfiles."""
        self.write("20-client.cfg", "[client:default]\ncertificate = c.pem\n")
        self.write("10-server.cfg", "[server:default]\ncertificate = s.pem\n")
        self.write(".hidden", "this is not a valid file\n")
        os.makedirs(os.path.join(self.dir, "subdir"))
        loaded = load_config(
            {"config": "tls.d"},
            default_certificate=DEFAULT_CERT,
            default_private_key=DEFAULT_KEY,
            cwd=self.top,
            check_files=False,
        )
        config = loaded.config
        self.assertEqual([d.id for d in config.domains], ["TLSs<default>", "TLSc<default>"])
        self.assertEqual(config.server_default.certificate, os.path.join(self.dir, "s.pem"))
        self.assertEqual(config.server_default.origin("certificate"), ("tls.d/10-server.cfg", 2))
        self.assertEqual(
            config.config_files,
            (os.path.join(self.dir, "10-server.cfg"), os.path.join(self.dir, "20-client.cfg")),
        )
        self.assertEqual(config.config, self.dir)

    def test_directory_error_names_real_file(self) -> None:
        """An error inside a directory's file names that file and its own line."""
        self.write("a.cfg", "[server:default]\n")
        self.write("b.cfg", "[client:default]\n\nverify_depth = x\n")
        err = self.assertRaises(
            ConfigError,
            load_config,
            {"config": "tls.d"},
            default_certificate=DEFAULT_CERT,
            default_private_key=DEFAULT_KEY,
            cwd=self.top,
        )
        self.assertTrue(str(err).startswith("tls.d/b.cfg:3: [client:default] verify_depth:"))

    def test_duplicate_across_files(self) -> None:
        """A duplicate default across two files of a directory names both files."""
        self.write("a.cfg", "[server:default]\n")
        self.write("b.cfg", "[server:default]\n")
        err = self.assertRaises(
            ConfigError,
            load_config,
            {"config": "tls.d"},
            default_certificate=DEFAULT_CERT,
            default_private_key=DEFAULT_KEY,
            cwd=self.top,
        )
        self.assertIn("tls.d/b.cfg:1:", str(err))
        self.assertIn("tls.d/a.cfg:1", str(err))

    def test_missing_config_file(self) -> None:
        """A config parameter naming a missing file is a --param error."""
        err = self.assertRaises(
            ConfigError,
            load_config,
            {"config": "nope.cfg"},
            default_certificate=DEFAULT_CERT,
            default_private_key=DEFAULT_KEY,
            cwd=self.top,
        )
        self.assertEqual((err.source, err.key), ("--param", "config"))
        self.assertIn("nope.cfg", str(err))

    def test_not_utf8(self) -> None:
        """A tls.cfg that is not UTF-8 is a clean error naming the file."""
        with open(os.path.join(self.top, "bad.cfg"), "wb") as f:
            f.write(b"[server:default]\n\xff\n")
        err = self.assertRaises(
            ConfigError,
            load_config,
            {"config": "bad.cfg"},
            default_certificate=DEFAULT_CERT,
            default_private_key=DEFAULT_KEY,
            cwd=self.top,
        )
        self.assertEqual(err.source, "bad.cfg")


class ModuleParamTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """With no parameters: defaults, and two domains using the generated certificate."""
        loaded = load_params({})
        config = loaded.config
        self.assertEqual(loaded.warnings, ())
        self.assertEqual(
            (
                config.tls_method,
                config.connection_timeout,
                config.tls_disable_compression,
                config.session_cache,
                config.renegotiation,
                config.send_close_notify,
                config.ssl_max_send_fragment,
                config.ssl_release_buffers,
                config.con_ct_wq_max,
                config.ct_wq_max,
                config.config,
                config.keylog_file,
                config.sni_strict,
                config.handshake_timeout,
                config.tls_max_connections,
                config.max_send_buffer,
                config.watch_certificates,
                config.identity_check_ip,
            ),
            (
                "TLSv1.2+",
                600,
                True,
                False,
                False,
                False,
                -1,
                1,
                65536,
                10485760,
                None,
                None,
                False,
                10.0,
                2048,
                1048576,
                False,
                False,
            ),
        )
        self.assertEqual([d.id for d in config.domains], ["TLSs<default>", "TLSc<default>"])
        for domain in config.domains:
            self.assertEqual((domain.certificate, domain.private_key), (DEFAULT_CERT, DEFAULT_KEY))
            self.assertEqual(domain.verify_depth, 9)
            self.assertEqual(domain.verify_client, "off")

    def test_global_values(self) -> None:
        """Every global parameter parses its string value into the typed field."""
        params = {
            "connection_timeout": "-1",
            "tls_disable_compression": "no",
            "session_cache": "1",
            "session_id": "my-sip",
            "renegotiation": "yes",
            "send_close_notify": "on",
            "ssl_max_send_fragment": "4096",
            "ssl_release_buffers": "-1",
            "con_ct_wq_max": "1024",
            "ct_wq_max": "0",
            "keylog_file": "keys.log",
            "sni_strict": "true",
            "handshake_timeout": "2.5",
            "tls_max_connections": "10",
            "max_send_buffer": "65536",
            "watch_certificates": "enabled",
            "identity_check_ip": "1",
        }
        config = load_params(params, cwd="/srv").config
        self.assertEqual(config.connection_timeout, -1)
        self.assertFalse(config.tls_disable_compression)
        self.assertTrue(config.session_cache)
        self.assertEqual(config.session_id, "my-sip")
        self.assertTrue(config.renegotiation)
        self.assertTrue(config.send_close_notify)
        self.assertEqual(config.ssl_max_send_fragment, 4096)
        self.assertEqual(config.ssl_release_buffers, -1)
        self.assertEqual((config.con_ct_wq_max, config.ct_wq_max), (1024, 0))
        self.assertEqual(config.keylog_file, "/srv/keys.log")
        self.assertTrue(config.sni_strict)
        self.assertEqual(config.handshake_timeout, 2.5)
        self.assertEqual(config.tls_max_connections, 10)
        self.assertEqual(config.max_send_buffer, 65536)
        self.assertTrue(config.watch_certificates)
        self.assertTrue(config.identity_check_ip)
        self.assertEqual(dict(config.params), params)

    def test_domain_params(self) -> None:
        """Per-domain parameters set both implicit default domains, paths from cwd."""
        params = {
            "tls_method": "tlsv1.3+",
            "certificate": "c.pem",
            "private_key": "/k/k.pem",
            "private_key_password": "pw",
            "ca_list": "ca.pem",
            "ca_path": "cas",
            "crl": "crl.pem",
            "verify_certificate": "yes",
            "verify_depth": "2",
            "require_certificate": "no",
            "verify_client": "optional_no_ca",
            "cipher_list": "TLS_AES_256_GCM_SHA384",
            "server_name": "Sip.Example",
        }
        config = load_params(params, cwd="/srv").config
        for domain in config.domains:
            self.assertEqual(domain.method, "TLSv1.3+")
            self.assertTrue(domain.cipher_list_tls13)
            self.assertEqual(domain.certificate, "/srv/c.pem")
            self.assertEqual(domain.private_key, "/k/k.pem")
            self.assertEqual(domain.private_key_password, "pw")
            self.assertEqual(domain.ca_list, "/srv/ca.pem")
            self.assertEqual(domain.ca_path, "/srv/cas")
            self.assertEqual(domain.crl, "/srv/crl.pem")
            self.assertEqual(domain.verify_depth, 2)
            self.assertTrue(domain.accept_unknown_ca)
            self.assertTrue(domain.verify_peer)
            self.assertEqual(domain.server_name, "sip.example")
            self.assertEqual(domain.origin("certificate"), ("--param", None))

    def test_empty_certificate_param(self) -> None:
        """certificate="" as a parameter means no certificate."""
        config = load_params({"certificate": "", "private_key": ""}).config
        self.assertIsNone(config.client_default.certificate)

    def test_ignored_params_warn(self) -> None:
        """Parameters with no meaning here are accepted, each with a warning saying why."""
        loaded = load_params({name: "1" for name in IGNORED_PARAMS})
        self.assertEqual(len(loaded.warnings), len(IGNORED_PARAMS))
        for name, warning in zip(IGNORED_PARAMS, loaded.warnings, strict=True):
            self.assertIn(f"--param {name} is ignored: {IGNORED_PARAMS[name]}", warning)
        for name in ("low_mem_threshold1", "tls_force_run", "engine", "xavp_cfg", "keylog_peer"):
            self.assertIn(name, IGNORED_PARAMS)

    def test_unknown_param(self) -> None:
        """An unknown parameter is named, with the closest known name suggested."""
        err = self.assertRaises(ConfigError, load_params, {"verify_certificat": "1"})
        self.assertEqual((err.source, err.key), ("--param", "verify_certificat"))
        self.assertIn("did you mean 'verify_certificate'?", str(err))
        err = self.assertRaises(ConfigError, load_params, {"zzzzzz": "1"})
        self.assertNotIn("did you mean", str(err))

    def test_bad_values(self) -> None:
        """Bad values are --param errors naming the parameter."""
        for name, value, fragment in [
            ("verify_depth", "x", "not a decimal integer"),
            ("verify_depth", "101", "out of range"),
            ("connection_timeout", "-2", "out of range"),
            ("ssl_max_send_fragment", "100", "out of range"),
            ("con_ct_wq_max", "99999999", "out of range"),
            ("session_cache", "perhaps", "not a boolean"),
            ("tls_method", "TLSv2", "unknown method"),
            ("tls_method", "SSLv3", "insecure"),
            ("verify_client", "maybe", "unknown verify_client"),
            ("handshake_timeout", "0", "out of range"),
            ("handshake_timeout", "soon", "not a number"),
            ("session_id", "x" * 33, "1 to 32 bytes"),
            ("tls_max_connections", "0", "out of range"),
        ]:
            err = self.assertRaises(ConfigError, load_params, {name: value})
            self.assertEqual((err.source, err.key, err.line), ("--param", name, None))
            self.assertTrue(str(err).startswith(f"--param: {name}: "), str(err))
            self.assertIn(fragment, str(err))


class ListenerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.config = load(
            "[server:default]\n[server:10.0.0.1:5061]\n\n[server:[::1]:5062]\n"
            "[client:10.9.9.9:5061]\n"
        ).config

    def test_exact_listeners(self) -> None:
        """Every server IP domain has a listener: no error; client domains are exempt."""
        check_listeners(self.config, [("10.0.0.1", 5061), ("::1", 5062)])

    def test_wildcard_listeners(self) -> None:
        """0.0.0.0 serves IPv4 domains and :: any domain on the same port."""
        check_listeners(self.config, [("0.0.0.0", 5061), ("::", 5062)])
        check_listeners(self.config, [("::", 5061), ("::", 5062)])

    def test_missing_listener(self) -> None:
        """A server IP domain without a listener is an error at its section line."""
        err = self.assertRaises(
            ConfigError, check_listeners, self.config, [("10.0.0.1", 5061), ("0.0.0.0", 5062)]
        )
        self.assertTrue(str(err).startswith("tls.cfg:4: [server:[::1]:5062] "), str(err))
        self.assertIn("no listening socket for [::1]:5062", str(err))
        err = self.assertRaises(ConfigError, check_listeners, self.config, [("10.0.0.1", 5060)])
        self.assertTrue(str(err).startswith("tls.cfg:2: [server:10.0.0.1:5061] "), str(err))

    def test_port_zero_domain(self) -> None:
        """A domain with port 0 is served by a listener on its IP with any port."""
        config = load("[server:10.0.0.1:0]\n").config
        check_listeners(config, [("10.0.0.1", 5061)])
        self.assertRaises(ConfigError, check_listeners, config, [("10.0.0.2", 5061)])


_CFG_ALPHABET = st.sampled_from(
    list("[]:=#\"\\\n \t.*01259aAbcdefSsvV+-_/'@!$%&<>\r\x00é")
    + ["server", "client", "default", "any", "method", "TLSv1.2+", "server_name", "yes", "::"]
)


class FuzzTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(_CFG_ALPHABET, max_size=60).map("".join))
    def test_tokens_give_config_or_config_error(self, text: str) -> None:
        """tls.cfg-like text gives a configuration or a ConfigError, never another exception."""
        try:
            load(text)
        except ConfigError as e:
            self.assertNotIn("\n", e.message.split("'")[0])

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.text(max_size=200))
    def test_arbitrary_text(self, text: str) -> None:
        """Arbitrary text gives a configuration or a ConfigError, never another exception."""
        try:
            sections = parse_tls_cfg(text, "fuzz.cfg", "/")
            config_from_sections(
                sections,
                default_certificate=DEFAULT_CERT,
                default_private_key=DEFAULT_KEY,
                cwd="/",
                check_files=True,
            )
        except ConfigError:
            pass
