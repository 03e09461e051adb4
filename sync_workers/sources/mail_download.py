"""One export link downloaded into the export folder: allowed hosts only, streamed, never half a zip.

Redirects are followed by hand (at most 5), each hop checked against the allowed hosts, so a link
cannot bounce the worker to another host. The body is streamed to ``.<name>.part`` in the export
folder and renamed once whole and recognised as a zip by its signature; anything else (an HTML
login page, a 401/403) is :class:`LoginNeeded`. No error message holds the link's query.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urljoin

import httpx

from sync_workers.exports.archive import ZIP_SIGNATURES
from sync_workers.sources.mail import allowed, redacted

__all__ = ["LoginNeeded", "download"]


class LoginNeeded(Exception):
    """The link answered with a login page or 401/403: only the user's browser session can fetch it."""


def download(url: str, folder: Path, hosts: set[str], name: str, limit: int, timeout: float = 60.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = folder / name
    partial = folder / f".{name}.part"
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for _ in range(6):
            if not allowed(url, hosts):
                raise ValueError(f"the link leads to a host that is not allowed: {redacted(url)}")
            with client.stream("GET", url) as response:
                if response.is_redirect:
                    url = urljoin(url, response.headers.get("location", ""))
                    continue
                if response.status_code in (401, 403):
                    raise LoginNeeded(f"{response.status_code} from {redacted(url)}")
                if response.status_code in (404, 410):
                    raise ValueError(f"the link has expired or is gone ({response.status_code} from {redacted(url)})")
                if response.status_code != 200:
                    raise ValueError(f"{response.status_code} from {redacted(url)}")
                return _save(response, partial, target, url, limit)
    raise ValueError(f"too many redirects from {redacted(url)}")


def _save(response: httpx.Response, partial: Path, target: Path, url: str, limit: int) -> Path:
    size = 0
    first = b""
    try:
        with open(partial, "wb") as out:
            for chunk in response.iter_bytes(1024 * 1024):
                if not first:
                    first = chunk[:4]
                    if first not in ZIP_SIGNATURES:
                        raise LoginNeeded(f"{redacted(url)} answered with"
                                          f" {response.headers.get('content-type', 'something')} instead of a zip")
                size += len(chunk)
                if size > limit:
                    raise ValueError(f"more than {limit} bytes from {redacted(url)}")
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if not first:
            raise ValueError(f"an empty answer from {redacted(url)}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
