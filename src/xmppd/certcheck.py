"""``xmppd cert check``: for each served domain, which certificate file is used, whether its
names cover the domain and the service domains served for it (``conference.<domain>``,
``pubsub.<domain>``, components), when it expires and how many days are left; a warning
under ``warn_days``.  It reads only the configuration and the files, so it works whether
the server runs or not.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from xmppd.core.config import Config
from xmppd.core.manager import plan
from xmppd.transport.tls import _covers, certificate_names


@dataclass
class DomainReport:
    """What ``cert check`` found for one served domain."""

    domain: str
    path: Path
    configured: bool
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def service_domains(config: Config, domain: str) -> list[str]:
    """The domains served on behalf of ``domain``: the modules' services and the
    configured components under it."""
    out: list[str] = []
    for planned in plan(config):
        out += planned.cls.service_domains(planned.options, domain)
    out += sorted(c for c in config.components if c.endswith("." + domain))
    return list(dict.fromkeys(out))


def check_domain(config: Config, domain: str, warn_days: int,
                 now: datetime.datetime | None = None) -> DomainReport:
    """Check ``domain``'s certificate (see the module docstring)."""
    now = now or datetime.datetime.now(datetime.UTC)
    pair = config.certificate_for(domain)
    configured = domain in config.certificates
    report = DomainReport(domain, pair.cert, configured)
    source = f'certificates."{domain}"' if configured else "self-signed, generated"
    report.lines.append(f"certificate: {pair.cert} ({source})")
    if not pair.cert.exists():
        if configured:
            report.problems.append(f"certificate file {pair.cert} is missing")
        else:
            report.lines.append("not generated yet: a self-signed one is made on first start")
        return report
    try:
        cert = x509.load_pem_x509_certificates(pair.cert.read_bytes())[0]
    except (ValueError, OSError) as exc:
        report.problems.append(f"certificate {pair.cert} cannot be read: {exc}")
        return report
    names = certificate_names(cert)
    report.lines.append(f"subject: {cert.subject.rfc4514_string() or '(empty)'}")
    report.lines.append(f"names: {', '.join(names) or '(none)'}")
    for name in [domain, *service_domains(config, domain)]:
        covered = any(_covers(n, name) for n in names)
        report.lines.append(f"covers {name}: {'yes' if covered else 'NO'}")
        if not covered:
            report.problems.append(f"the certificate does not cover {name}")
    expires = cert.not_valid_after_utc
    days = (expires - now).days
    report.lines.append(f"expires: {expires:%Y-%m-%d %H:%M} UTC ({days} days left)")
    if expires < now:
        report.problems.append(f"the certificate expired on {expires:%Y-%m-%d}")
    elif days < warn_days:
        report.warnings.append(f"the certificate expires in {days} days (under {warn_days})")
    if cert.not_valid_before_utc > now:
        report.problems.append(f"the certificate is not valid before "
                               f"{cert.not_valid_before_utc:%Y-%m-%d}")
    return report


def check_all(config: Config, warn_days: int) -> list[DomainReport]:
    return [check_domain(config, domain, warn_days) for domain in config.domains]
