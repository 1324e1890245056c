from twisted.application.service import ServiceMaker

siptls = ServiceMaker(
    "siptls", "siptls.tap", "SIP over TLS with Kamailio-compatible TLS domains.", "siptls"
)
