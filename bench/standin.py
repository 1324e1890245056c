"""A minimal Twisted SIP-over-TLS responder: the benchmark's "floor" reference.

It frames requests by their blank line and Content-Length, answers every
OPTIONS with ``200 OK`` (or with ``--status``, so tests can check that the
load generator notices a wrong answer) and anything else with 501.  It does
nothing else, so the cost it shows is roughly Twisted + pyOpenSSL alone.

    python bench/standin.py --port 5061 --certificate C.pem --private-key K.pem
"""

from __future__ import annotations

import argparse

from OpenSSL import SSL, crypto
from twisted.internet import protocol, reactor, ssl

_COPIED = (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq")


class OptionsResponder(protocol.Protocol):
    def connectionMade(self) -> None:
        # Without this, Nagle + delayed ACKs stall the handshake's last flight.
        self.transport.setTcpNoDelay(True)
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        replies = []
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buffer[:end].split(b"\r\n")
            length = 0
            kept = []
            for line in head[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name in (b"content-length", b"l"):
                    length = int(value)
                elif name in _COPIED:
                    kept.append(line + b";tag=standin" if name in (b"to", b"t") else line)
            if len(self.buffer) < end + 4 + length:
                break
            self.buffer = self.buffer[end + 4 + length :]
            status = (
                self.factory.status if head[0].startswith(b"OPTIONS ") else b"501 Not Implemented"
            )
            replies.append(
                b"\r\n".join([b"SIP/2.0 " + status, *kept, b"Content-Length: 0", b"", b""])
            )
        if replies:
            self.transport.write(b"".join(replies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certificate", required=True)
    parser.add_argument("--private-key", required=True)
    parser.add_argument("--status", default="200 OK", help="status line answered to OPTIONS")
    args = parser.parse_args()
    with open(args.certificate, "rb") as f:
        cert = crypto.load_certificate(crypto.FILETYPE_PEM, f.read())
    with open(args.private_key, "rb") as f:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, f.read())
    options = ssl.CertificateOptions(
        privateKey=key, certificate=cert, raiseMinimumTo=ssl.TLSVersion.TLSv1_2
    )
    options.getContext().set_mode(SSL.MODE_RELEASE_BUFFERS)
    factory = protocol.Factory.forProtocol(OptionsResponder)
    factory.status = args.status.encode("ascii")
    reactor.listenSSL(args.port, factory, options, backlog=1024, interface=args.host)
    reactor.run()


if __name__ == "__main__":
    main()
