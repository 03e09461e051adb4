"""The export-ready email: found over IMAP, its zip downloaded into the export folder.

At each check (before the folder is read) the worker logs in, opens ``folder`` read-only and
looks at the messages it has not looked at before (remembered by UID and Message-ID in the
state's acknowledged-digests table, so no email is fetched twice). An export-ready email is one
from exactly ``noreply@tm.openai.com`` whose subject says the ChatGPT data export is ready, with
a link to a ``.zip`` on an allowed host (format notes, chatgpt.md §1): other mail from the same
sender (codes, receipts), lookalike senders and links elsewhere are remembered as ignored and
never downloaded. The link is fetched with httpx over https only (plain http only to a loopback
host), redirects followed only to allowed hosts, streamed to ``.<name>.part`` and renamed when
whole, so the folder never shows half a zip; its mtime is then set to the email's date (when the
export was made, not when it was fetched).

OpenAI's link may need the signed-in browser session: a 401/403 or an HTML page instead of a
zip is reported once, as a failure ``status`` lists, saying where to save the zip by hand (the
email's date, that the link lasts about 24 hours; never the link's query). The notice stands until
an export at least as new as the email (by its file's mtime, ``SLACK`` aside) is picked up: read
from the folder (the openai source calls :meth:`ExportMail.picked_up`) or downloaded from a later
email's link; when one was picked up before the email was looked at, none is given. A wrong
password, an unreachable server or an expired link is a failure too; the worker goes on and tries
again at the next check. The password comes from ``OPENAI_EMAIL_PASSWORD`` or ``password_file``
and is never logged.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import time
from collections.abc import Mapping
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sync_workers.config import is_loopback, read_token_file
from sync_workers.errors import ConfigError
from sync_workers.sources.files import ScanContext
from sync_workers.state import Advance, FileFailure

__all__ = ["MAIL_KEY", "NOTICES_KEY", "SENDER", "ExportMail", "allowed", "redacted"]

MAIL_KEY = "#mail"
"""Acknowledged-digests "conversation": message id = Message-ID or ``uid:<validity>:<uid>``, digest = outcome."""
NOTICES_KEY = "#mail-notices"
"""Acknowledged-digests "conversation" of the login-link notices: message id = the notice's path in
``status``, digest = its email's time (epoch seconds) while it stands, else ``cleared``; under
``#newest``, the time of the newest export picked up."""
_NEWEST = "#newest"
_CLEARED = "cleared"
SLACK = 3600.0
"""Seconds an export may be dated before its email and still count as that export: the email's Date
is the sender's clock, a zip saved by hand is dated by this machine's, and the files of an unpacked
export keep the time OpenAI zipped them, before it sent the email."""
SENDER = "noreply@tm.openai.com"
SUBJECT = re.compile(r"chatgpt data export is ready", re.IGNORECASE)
_LINK = re.compile(r"""https?://[^\s"'<>]+""")
_KEYS = {"enabled", "host", "port", "ssl", "folder", "username", "password_file", "allowed_link_hosts"}
_MAX_ZIP = 64 * 1024**3


class ExportMail:
    """``sources.openai.email`` (see config.yaml.example), checked when the worker starts."""

    def __init__(self, settings: Mapping[str, Any], export_dir: Path, worker: str) -> None:
        from sync_workers.sources.openai import EMAIL_DEFAULTS

        where = f"sources.{worker}.email"
        unknown = sorted(str(k) for k in settings if k not in _KEYS)
        if unknown:
            raise ConfigError(f"unknown key '{where}.{unknown[0]}' (known: {', '.join(sorted(_KEYS))})")
        merged = {**EMAIL_DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
        if not isinstance(merged["host"], str) or not merged["host"]:
            raise ConfigError(f"{where}.host: the IMAP server's name is needed when {where}.enabled is true")
        hosts = merged["allowed_link_hosts"]
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise ConfigError(f"{where}.allowed_link_hosts: expected a list of host names")
        self.host, self.ssl, self.folder = merged["host"], bool(merged["ssl"]), str(merged["folder"])
        self.port = int(merged["port"] or (993 if self.ssl else 143))
        self.allowed = {h.lower().rstrip(".") for h in hosts}
        self.username = os.environ.get("OPENAI_EMAIL_USERNAME") or merged["username"]
        if not self.username:
            raise ConfigError(f"{where}: no user name: set OPENAI_EMAIL_USERNAME or {where}.username")
        if os.environ.get("OPENAI_EMAIL_PASSWORD"):
            self._password = os.environ["OPENAI_EMAIL_PASSWORD"]
        elif merged["password_file"]:
            self._password = read_token_file(merged["password_file"], f"{where}.password_file")
        else:
            raise ConfigError(f"{where}: no password: set OPENAI_EMAIL_PASSWORD or {where}.password_file")
        self.export_dir = export_dir
        self.where = f"imap://{self.host}:{self.port}/{self.folder}"
        self._notices: dict[str, str] = {}
        """What this process wrote under ``NOTICES_KEY``, ahead of the state (it commits with a batch)."""

    def __repr__(self) -> str:  # never the password
        return f"ExportMail({self.where}, user={self.username!r})"

    def poll(self, context: ScanContext) -> tuple[list[Path], Advance]:
        """New export zips in the folder, and the emails to remember; failures go to the stats."""
        from imapclient import IMAPClient
        from imapclient.exceptions import IMAPClientError

        advance = Advance()
        saved: list[Path] = []
        known = context.acked(MAIL_KEY)
        try:
            with IMAPClient(self.host, port=self.port, ssl=self.ssl, timeout=30) as client:
                client.login(self.username, self._password)
                status = client.select_folder(self.folder, readonly=True)
                validity = status.get(b"UIDVALIDITY", 0)
                fresh = [uid for uid in client.search(["FROM", SENDER]) if f"uid:{validity}:{uid}" not in known]
                for uid, data in client.fetch(fresh, ["BODY.PEEK[]"]).items() if fresh else []:
                    outcome, path = self._handle(data.get(b"BODY[]", b""), known, context, advance)
                    message_id = outcome.pop("message_id")
                    advance.acked.append((MAIL_KEY, f"uid:{validity}:{uid}", outcome["result"]))
                    if message_id:
                        advance.acked.append((MAIL_KEY, message_id, outcome["result"]))
                        known[message_id] = outcome["result"]
                    if path is not None:
                        saved.append(path)
                        self.picked_up(path.stat().st_mtime, context, advance)  # a later email's link worked
        except (IMAPClientError, OSError) as exc:
            reason = str(exc).replace(self._password, "<password>") if self._password else str(exc)
            context.stats.failures.append(FileFailure(self.where, f"mail: {type(exc).__name__}: {reason}"[:500]))
        return saved, advance

    def picked_up(self, dated: float, context: ScanContext, advance: Advance) -> None:
        """An export dated ``dated`` (epoch seconds) was read or downloaded: the notices of emails
        not newer than it (``SLACK`` aside) leave ``status``, one given in this check too."""
        standing = self._standing(context)
        if dated > float(standing.pop(_NEWEST, "0")):
            self._note(_NEWEST, repr(dated), advance)
        done = {place for place, since in standing.items() if since != _CLEARED and float(since) <= dated + SLACK}
        for place in sorted(done):
            self._note(place, _CLEARED, advance)
            advance.cleared.append(place)
        if done:
            context.stats.failures[:] = [f for f in context.stats.failures if f.path not in done]

    def _standing(self, context: ScanContext) -> dict[str, str]:
        return {**context.acked(NOTICES_KEY), **self._notices}

    def _note(self, key: str, value: str, advance: Advance) -> None:
        self._notices[key] = value
        advance.acked.append((NOTICES_KEY, key, value))

    def _handle(self, raw: bytes, known: Mapping[str, str], context: ScanContext,
                advance: Advance) -> tuple[dict[str, Any], Path | None]:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        message_id = str(message.get("Message-ID") or "").strip()
        outcome: dict[str, Any] = {"message_id": message_id, "result": "ignored"}
        if message_id and message_id in known:
            outcome["result"] = known[message_id]
            return outcome, None  # the same email again (copied, or a new UID validity)
        sender = parseaddr(str(message.get("From") or ""))[1].lower()
        if sender != SENDER or not SUBJECT.search(str(message.get("Subject") or "")):
            return outcome, None
        link = self._link(message)
        if link is None:
            outcome["result"] = "ignored: no link to a zip on an allowed host"
            return outcome, None
        date = str(message.get("Date") or "an unknown date")
        sent = _sent(date)
        from sync_workers.sources.mail_download import LoginNeeded, download

        try:
            path = download(link, self.export_dir, self.allowed, _name(message_id, date), _MAX_ZIP)
            if sent is not None:
                os.utime(path, (sent, sent))
        except LoginNeeded as exc:
            outcome["result"] = "needs browser"
            since = time.time() if sent is None else sent
            if since <= float(self._standing(context).get(_NEWEST, "0")) + SLACK:
                return outcome, None  # an export as new was picked up already: nothing for the user to do
            place = f"{self.export_dir} (ChatGPT export email of {date})"
            self._note(place, repr(since), advance)
            context.stats.failures.append(FileFailure(
                place,
                f"the download link needs your signed-in browser session ({exc}): open OpenAI's email of {date}"
                f" in a browser signed in to ChatGPT (the link expires about 24 hours after the email) and save"
                f" the zip into {self.export_dir}; it is picked up from there"))
            return outcome, None
        except Exception as exc:  # expired link, server error, network: said once, the email is not tried again
            context.stats.failures.append(FileFailure(f"{self.export_dir} (ChatGPT export email of {date})",
                                                      f"download failed: {exc}"[:500]))
            outcome["result"] = "failed"
            return outcome, None
        outcome["result"] = f"downloaded {path.name}"
        return outcome, path

    def _link(self, message: Any) -> str | None:
        """The first link to a ``.zip`` on an allowed host, in the email's HTML or text."""
        for part in message.walk():
            if part.get_content_type() not in ("text/html", "text/plain"):
                continue
            text = part.get_content()
            for link in _LINK.findall(text.replace("&amp;", "&")):
                if allowed(link, self.allowed) and ".zip" in link:
                    return link
        return None


def allowed(url: str, hosts: set[str]) -> bool:
    """https to an allowed host; plain http only when that host is loopback (tests, a local mirror)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    if host not in hosts or parts.username or parts.password:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback(host))


def redacted(url: str) -> str:
    """``url`` without its query and fragment (where the signature lives): what may be shown."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _sent(date: str) -> float | None:
    """The email's Date as epoch seconds, None when it cannot be read."""
    try:
        return parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return None


def _name(message_id: str, date: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "-", message_id or date).strip("-")[:60] or "export"
    return f"chatgpt-export-{stem}.zip"

