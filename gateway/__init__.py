"""contract-gateway: a contract-first API gateway and vendor adapter layer."""

__version__ = "0.1.0"
