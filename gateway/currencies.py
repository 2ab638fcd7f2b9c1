"""ISO 4217 minor units: how many decimals an amount in a currency has (the one table: orders v2's mapping and the
declarative adapters' money converters read it).

Most currencies have 2; the ones below have 0, 3 or 4 (ISO 4217's list, including the funds codes CLF and UYW).
"""

from __future__ import annotations

ZERO_DECIMALS = frozenset({"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
                           "VUV", "XAF", "XOF", "XPF"})
THREE_DECIMALS = frozenset({"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"})
FOUR_DECIMALS = frozenset({"CLF", "UYW"})


def exponent(currency: str) -> int:
    """The number of decimals of an amount in `currency` (an upper-case ISO 4217 code)."""
    if currency in ZERO_DECIMALS:
        return 0
    if currency in THREE_DECIMALS:
        return 3
    return 4 if currency in FOUR_DECIMALS else 2
