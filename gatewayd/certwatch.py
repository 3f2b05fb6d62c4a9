"""Days until the gateway certificate expires, for status and metrics."""

from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING, Any

from gatewayd.config.schema import IdentityConfig

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger(__name__)


class CertificateWatch:
    """Days until the gateway certificate expires, for status and metrics.

    The file is parsed again only when it changes (size or mtime); a new
    certificate that is due within ``warning_days`` is logged once.
    """

    def __init__(self, identity: IdentityConfig) -> None:
        self.identity = identity
        self._stamp: tuple[int, int] | None = None
        self._cert: x509.Certificate | None = None
        self._error: str | None = None

    def _load(self) -> None:
        path = self.identity.cert_file
        try:
            st = path.stat()
        except OSError as err:
            self._stamp, self._cert = None, None
            self._error = (f"{path} does not exist" if isinstance(err, FileNotFoundError)
                           else f"{path}: {err.strerror or err}")
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        # Imported only once there is a certificate to read: cryptography is about 8 MiB.
        from gatewayd.identity import IdentityError, load_certificates, not_after

        try:
            self._cert = load_certificates(path)[0]
            self._error = None
        except IdentityError as err:
            self._cert, self._error = None, str(err)
            return
        days = (not_after(self._cert) - datetime.datetime.now(datetime.UTC)
                ).total_seconds() / 86400
        if days <= self.identity.expiry_warning_days:
            log.warning("identity: certificate %s expires in %.1f days", path, days)

    def status(self, now: datetime.datetime | None = None) -> dict[str, Any]:
        now = now or datetime.datetime.now(datetime.UTC)
        self._load()
        out: dict[str, Any] = {"cert_file": str(self.identity.cert_file),
                               "present": self._cert is not None, "error": self._error}
        if self._cert is not None:
            from gatewayd.identity import not_after

            days = (not_after(self._cert) - now).total_seconds() / 86400
            out.update(subject=self._cert.subject.rfc4514_string(),
                       not_after=not_after(self._cert).strftime("%Y-%m-%dT%H:%M:%SZ"),
                       days_left=round(days, 2),
                       warning_days=self.identity.expiry_warning_days,
                       expiry_warning=days <= self.identity.expiry_warning_days)
        return out
