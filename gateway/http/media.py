"""Media types: Content-Type matching for request bodies and Accept negotiation for responses."""

from __future__ import annotations

from functools import lru_cache


def media_type(header: str | None) -> str | None:
    """`application/json; charset=utf-8` -> `application/json` (lower case), None when absent or empty."""
    if not header:
        return None
    value = header.split(";", 1)[0].strip().lower()
    return value or None


def is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def match_media(media: str, declared: tuple[str, ...]) -> str | None:
    """The declared media type (possibly a range like `application/*`) that covers `media`, or None."""
    if media in declared:
        return media
    main = media.split("/", 1)[0]
    for d in declared:
        if d == "*/*" or d == f"{main}/*":
            return d
    return None


@lru_cache(maxsize=512)
def _accept_ranges(accept: str) -> tuple[tuple[str, float], ...]:
    ranges = []
    for part in accept.split(","):
        fields = part.strip().split(";")
        rng = fields[0].strip().lower()
        if not rng:
            continue
        q = 1.0
        for param in fields[1:]:
            k, _, v = param.strip().partition("=")
            if k.strip() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        ranges.append((rng, q))
    return tuple(ranges)


def acceptable(accept: str | None, produces: tuple[str, ...]) -> bool:
    """Whether a client sending `accept` can take at least one of `produces` (or anything, if none declared)."""
    if not accept or not produces:
        return True
    ranges = _accept_ranges(accept)
    if not ranges:
        return True
    for produced in produces:
        main = produced.split("/", 1)[0]
        for rng, q in ranges:
            if q > 0 and (rng == produced or rng == "*/*" or rng == f"{main}/*"):
                return True
    return False
