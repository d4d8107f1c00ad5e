"""Route prefix validation: a prefix ``serve.run`` accepts is one a request can actually reach.

Ray Serve's rules (``ray.serve._private.utils.validate_route_prefix``): it starts with '/', has no
trailing '/' except the root '/', and no wildcards. serve_nb adds one more so that a typo cannot
deploy an app that shows RUNNING yet is unreachable: only characters valid in a URL path
(RFC 3986 ``pchar``; a '?' starts the query string, a '#' the fragment, a space ends the request
line), no '%' escapes (the proxy matches the decoded path, so a prefix is written decoded), and
no '.'/'..' segments (clients resolve those before sending). A prefix is never
rewritten: "/a/" is refused, not turned into "/a", so what is deployed is what was asked for.

Pure: no Ray, no I/O.
"""

from __future__ import annotations

import string

#: ASCII characters allowed in a prefix: unreserved, sub-delims, ':', '@' and '/'.
_PATH_CHARS = frozenset(string.ascii_letters + string.digits + "-._~" + "!$&'()*+,;=" + ":@" + "/")
_WHY = {
    " ": "a space ends the request line",
    "?": "'?' starts the query string",
    "#": "'#' starts the fragment, which clients never send",
    "%": "requests are matched decoded, so write the character itself, not its '%' escape",
}


def _describe(char: str) -> str:
    if char == " ":
        return "' ' (space)"
    if not char.isprintable():
        return f"{char!r} (non-printing character U+{ord(char):04X})"
    return repr(char)


def _invalid_chars(route_prefix: str) -> list[str]:
    """Characters of ``route_prefix`` that are not valid in a URL path, in order, each once.

    Non-ASCII printable characters are allowed: a request for ``/caf%C3%A9`` reaches the proxy
    decoded as ``/café``, which is what the prefix is matched against.
    """
    bad: list[str] = []
    for char in route_prefix:
        allowed = char in _PATH_CHARS if char.isascii() else (char.isprintable() and not char.isspace())
        if not allowed and char not in bad:
            bad.append(char)
    return bad


def validate_route_prefix(route_prefix: object) -> str | None:
    """Return ``route_prefix`` unchanged if a request can reach it (None: no HTTP); else raise ValueError saying why."""
    if route_prefix is None:
        return None
    if not isinstance(route_prefix, str) or not route_prefix.startswith("/"):
        raise ValueError(
            f"Invalid route_prefix '{route_prefix}', must start with a forward slash ('/'). Use a string such as "
            "'/api', or None to serve the app without HTTP."
        )
    if route_prefix != "/" and route_prefix.endswith("/"):
        raise ValueError(
            f"Invalid route_prefix '{route_prefix}', may not end with a trailing '/'. Only the root prefix '/' "
            f"does; use {route_prefix.rstrip('/') or '/'!r}."
        )
    if "{" in route_prefix or "}" in route_prefix:
        raise ValueError(
            f"Invalid route_prefix '{route_prefix}', may not contain wildcards. A prefix is matched literally; "
            "read path parameters inside the app (e.g. with @serve.ingress(FastAPI()))."
        )
    bad = _invalid_chars(route_prefix)
    if bad:
        reasons = [_WHY[char] for char in bad if char in _WHY]
        because = f" ({'; '.join(reasons)})" if reasons else ""
        raise ValueError(
            f"Invalid route_prefix {route_prefix!r}: {', '.join(_describe(c) for c in bad)} "
            f"{'is' if len(bad) == 1 else 'are'} not valid in a URL path{because}, so no request could reach it. "
            "Use letters, digits and - . _ ~ ! $ & ' ( ) * + , ; = : @ between the '/'s."
        )
    if any(segment in (".", "..") for segment in route_prefix.split("/")):
        raise ValueError(
            f"Invalid route_prefix {route_prefix!r}: '.' and '..' segments are resolved by clients before a "
            "request is sent, so no request could reach it. Use a plain name such as '/api'."
        )
    return route_prefix
