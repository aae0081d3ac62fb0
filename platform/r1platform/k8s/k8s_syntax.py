"""The Kubernetes syntax checks KubeRay's validation relies on, as Python predicates.

Counterparts of k8s.io/apimachinery's validation.IsDNS1035Label / IsDNS1123Label /
IsQualifiedName / IsValidLabelValue, version.ParseGeneric, and Go's time.ParseDuration. Each
returns a list of problems (empty = valid), like the Go functions do.
"""

from __future__ import annotations

import re

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_MAX = 63
_SUBDOMAIN_MAX = 253


def _short_match(value: str, pattern: re.Pattern[str], form: str) -> list[str]:
    """Kubernetes' label-style checks: at most 63 characters, and the pattern's form."""
    errs = []
    if len(value) > _LABEL_MAX:
        errs.append(f"must be no more than {_LABEL_MAX} characters")
    if not pattern.match(value):
        errs.append(form)
    return errs


def dns1035_label(value: str) -> list[str]:
    return _short_match(
        value,
        _DNS1035,
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
        "start with an alphabetic character, and end with an alphanumeric character",
    )


def dns1123_label(value: str) -> list[str]:
    return _short_match(
        value,
        _DNS1123_LABEL,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
        "'-', and must start and end with an alphanumeric character",
    )


def qualified_name(value: str) -> list[str]:
    """An optional DNS-subdomain prefix and '/', then a name of at most 63 characters."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
        errs: list[str] = []
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs = ["prefix part must be non-empty"]
        elif len(prefix) > _SUBDOMAIN_MAX or not _DNS1123_SUBDOMAIN.match(prefix):
            errs = ["prefix part must be a lowercase RFC 1123 subdomain"]
        else:
            errs = []
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', "
            "with an optional DNS subdomain prefix and '/'"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > _LABEL_MAX:
        errs.append(f"name part must be no more than {_LABEL_MAX} characters")
    elif not _QUALIFIED_NAME.match(name):
        errs.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character"
        )
    return errs


def label_value(value: str) -> list[str]:
    return _short_match(
        value,
        _LABEL_VALUE,
        "a valid label must be an empty string or consist of alphanumeric characters, "
        "'-', '_' or '.', and must start and end with an alphanumeric character",
    )


_GENERIC_VERSION = re.compile(r"^\s*v?([0-9]+(?:\.[0-9]+)*)(.*)$", re.DOTALL)


def parse_generic_version(value: str) -> tuple[int, ...]:
    """apimachinery's version.ParseGeneric: at least major.minor, an optional leading 'v', no
    zero-prefixed major, and anything after the numbers ignored. Raises ValueError."""
    m = _GENERIC_VERSION.match(value)
    if not m:
        raise ValueError(f"could not parse {value!r} as version")
    comps = m.group(1).split(".")
    if len(comps) < 2:
        raise ValueError(f"illegal version string {value!r}")
    if comps[0].startswith("0") and comps[0] != "0":
        raise ValueError(f"illegal zero-prefixed version component {comps[0]!r} in {value!r}")
    return tuple(int(c) for c in comps)


def version_less(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    n = max(len(a), len(b))
    return a + (0,) * (n - len(a)) < b + (0,) * (n - len(b))


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(value: str) -> float:
    """Go's time.ParseDuration in seconds ("1h30m", "-5s", "0"). Raises ValueError."""
    s = value
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {value!r}")
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m or m.group(1) in ("", "."):
            raise ValueError(f"invalid duration {value!r}")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def parse_go_int(value: str) -> int:
    """strconv.Atoi: optional sign and decimal digits only. Raises ValueError."""
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise ValueError(f"invalid integer {value!r}")
    return int(value)
