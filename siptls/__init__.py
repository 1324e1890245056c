"""siptls: SIP over TLS for Twisted.

The public API lives in :mod:`siptls.service` (composing siptls into an
application) and :mod:`siptls.interfaces` (the seams an application implements).
"""

__version__ = "0.1.0"
