"""Reading CloudFormation ``DescribeStacks`` results into Clara deployments (pure: no boto3, no network).

The Quick Start's stacks carry the output ``ClaraServiceUrl``: the bare load-balancer DNS name, with a
trailing '/' on the root stack and without it on the nested cluster stack. The scheme is not in the
output; it follows the stack's ``UseHTTPS`` parameter (default HTTPS).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from ..core.errors import InputError

OUTPUT_KEY = "ClaraServiceUrl"
#: The outputs read by default; a MONAI Label deployment may publish its URL under another key, which
#: the user names (``output_keys``; the first key a stack has wins).
DEFAULT_OUTPUT_KEYS = (OUTPUT_KEY,)
USE_HTTPS_PARAMETER = "UseHTTPS"
#: States in which a stack's resources exist and its outputs are current.
USABLE_STATES = frozenset(
    {
        "CREATE_COMPLETE",
        "UPDATE_COMPLETE",
        "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
        "UPDATE_ROLLBACK_COMPLETE",
        "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
        "IMPORT_COMPLETE",
        "IMPORT_ROLLBACK_COMPLETE",
    }
)

_ELB_SUFFIXES = (".elb.amazonaws.com", ".elb.amazonaws.com.cn")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Deployment:
    """One Clara server found in CloudFormation."""

    stack_name: str
    stack_id: str
    region: str
    url: str  # scheme included, no trailing '/'
    protocol: str  # "https" or "http"
    created: datetime  # timezone-aware, UTC
    elb_host: str  # the load balancer's DNS name, as in the stack output
    note: Optional[str] = None
    alias: Optional[str] = None

    def as_dict(self) -> dict:
        return {
            "stack_name": self.stack_name,
            "stack_id": self.stack_id,
            "region": self.region,
            "url": self.url,
            "protocol": self.protocol,
            "created": self.created.isoformat(),
            "elb_host": self.elb_host,
            "note": self.note,
            "alias": self.alias,
        }


def normalise_alias(text: str) -> str:
    """``host[:port]`` from a DNS alias as typed (``clara.example.org``, ``https://clara.example.org/``)."""
    value = (text or "").strip()
    if "://" not in value:
        value = "//" + value
    try:
        parts = urlsplit(value)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        host, port = "", None
    labels = host.rstrip(".").split(".")
    valid = (
        bool(host)
        and len(host) <= 253
        and all(_HOST_LABEL.match(label) for label in labels)
        and parts.path in ("", "/")
        and not parts.query
        and not parts.username
    )
    if not valid:
        raise InputError(
            f"'{text}' is not a DNS host name: enter the alias that points at the load balancer, "
            "for example clara.example.org."
        )
    host = host.rstrip(".").lower()
    return f"{host}:{port}" if port else host


def name_matches(stack_name: str, stack_filter: Optional[str]) -> bool:
    """Case-insensitive: a filter with * ? [ is a wildcard pattern, any other filter a substring."""
    if not stack_filter:
        return True
    pattern = stack_filter.strip().lower()
    if any(char in pattern for char in "*?["):
        return fnmatch.fnmatchcase(stack_name.lower(), pattern)
    return pattern in stack_name.lower()


def checked_output_keys(keys: Optional[Sequence[str]]) -> Tuple[str, ...]:
    """The output keys to read, default ClaraServiceUrl; InputError for an empty or malformed key."""
    if not keys:
        return DEFAULT_OUTPUT_KEYS
    checked = []
    for key in keys:
        key = str(key).strip()
        if not re.fullmatch(r"[A-Za-z0-9]{1,255}", key):
            raise InputError(f"'{key}' is not a CloudFormation output key (letters and digits only), e.g. ClaraServiceUrl.")
        if key not in checked:
            checked.append(key)
    return tuple(checked)


def _output_value(stack: Mapping[str, Any], keys: Sequence[str] = DEFAULT_OUTPUT_KEYS) -> Optional[str]:
    outputs = {output.get("OutputKey"): output.get("OutputValue") for output in stack.get("Outputs") or ()}
    for key in keys:
        if key in outputs:
            return (outputs[key] or "").strip() or None
    return None


def _parameter(stack: Mapping[str, Any], key: str) -> Optional[str]:
    for parameter in stack.get("Parameters") or ():
        if parameter.get("ParameterKey") == key:
            return parameter.get("ParameterValue")
    return None


def stack_rejection(stack: Mapping[str, Any], output_keys: Sequence[str] = DEFAULT_OUTPUT_KEYS) -> Optional[str]:
    """Why a stack is not a usable Clara deployment (a phrase), or None when it is one."""
    if _output_value(stack, output_keys) is None:
        if tuple(output_keys) == DEFAULT_OUTPUT_KEYS:
            return f"has no {OUTPUT_KEY} output, so it is not a Clara Quick Start stack"
        return f"has none of the outputs {', '.join(output_keys)}, so it is not a Clara or MONAI Label deployment"
    status = stack.get("StackStatus", "")
    if status not in USABLE_STATES:
        return f"is in state {status}, in which its server is not usable"
    return None


def service_address(output_value: str, use_https: Optional[str]) -> tuple[str, str]:
    """``(protocol, address)`` for a ``ClaraServiceUrl`` value: the address has no scheme, no trailing '/' and
    no ``user:password@`` (a deployment's address is shown, listed and logged, so it never carries credentials)."""
    value = output_value.strip()
    scheme, separator, rest = value.partition("://")
    if separator and scheme.lower() in ("http", "https"):
        protocol, address = scheme.lower(), rest  # a scheme written into the output wins
    else:
        protocol = "http" if (use_https or "").strip().upper() == "HTTP" else "https"
        address = value
    return protocol, _without_userinfo(address).rstrip("/")


def _authority_and_rest(address: str) -> Tuple[str, str]:
    """``host[:port]`` with any user-info, and the path/query that follows, of an address without scheme."""
    end = min((index for index in map(address.find, "/?#") if index >= 0), default=len(address))
    return address[:end], address[end:]


def _without_userinfo(address: str) -> str:
    """``address`` (no scheme) without the ``user:password@`` of its authority; the rule of
    ``backends.transport.without_userinfo``, which this ring may not import."""
    authority, rest = _authority_and_rest(address)
    return authority.rpartition("@")[2] + rest


def carries_credentials(output_value: str) -> bool:
    """Whether a ``ClaraServiceUrl`` value has a ``user:password@`` (or ``user@``) before its host."""
    value = output_value.strip()
    return "@" in _authority_and_rest(value.partition("://")[2] if "://" in value else value)[0]


def credentials_note(stack_name: str) -> str:
    return (
        f"Stack {stack_name} publishes its server address with credentials (user:password@) in it, which "
        "ClaraAWS neither shows nor uses: anyone allowed to describe the stack can read them, so change that "
        "password and publish the address without it."
    )


def alias_note(stack_name: str, elb_host: str) -> str:
    return (
        f"Stack {stack_name} serves HTTPS under the load balancer's own name {elb_host}, which its "
        "certificate does not cover, so certificate verification needs your DNS alias (the CNAME that "
        f"points at this load balancer): enter it in the panel's DNS alias field or with --alias {stack_name}=HOST."
    )


@dataclass(frozen=True)
class _Candidate:
    stack: Mapping[str, Any]
    protocol: str
    address: str
    output_keys: Tuple[str, ...] = DEFAULT_OUTPUT_KEYS

    @property
    def stack_id(self) -> str:
        return self.stack.get("StackId") or self.stack.get("StackName", "")

    @property
    def is_nested(self) -> bool:
        return bool(self.stack.get("ParentId"))

    def preference(self) -> tuple:
        # Root stacks first; the root's output is the one that ends in '/'; then the oldest stack.
        ends_with_slash = (_output_value(self.stack, self.output_keys) or "").endswith("/")
        return (self.is_nested, not ends_with_slash, _created(self.stack), self.stack.get("StackName", ""))


def _created(stack: Mapping[str, Any]) -> datetime:
    created = stack.get("CreationTime")
    if not isinstance(created, datetime):
        return datetime.fromtimestamp(0, timezone.utc)
    if created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    return created.astimezone(timezone.utc)


def _deployment(candidate: _Candidate, region: str, alias: Optional[str]) -> Deployment:
    stack = candidate.stack
    host_port = candidate.address.split("/", 1)[0]
    elb_host = host_port.rsplit(":", 1)[0] if host_port.count(":") == 1 else host_port
    name = stack.get("StackName", "")
    if alias:
        url, note = f"{candidate.protocol}://{alias}", None
    else:
        url = f"{candidate.protocol}://{candidate.address}"
        on_elb_name = elb_host.lower().endswith(_ELB_SUFFIXES)
        note = alias_note(name, elb_host) if candidate.protocol == "https" and on_elb_name else None
    if carries_credentials(_output_value(stack, candidate.output_keys) or ""):
        # The address already lost them (service_address); say why a server behind a login may now refuse.
        note = " ".join(filter(None, (credentials_note(name), note)))
    return Deployment(
        stack_name=name,
        stack_id=candidate.stack_id,
        region=region,
        url=url,
        protocol=candidate.protocol,
        created=_created(stack),
        elb_host=elb_host,
        note=note,
        alias=alias,
    )


def checked_aliases(aliases: Optional[Mapping[str, str]]) -> dict:
    """The aliases with each host normalised; InputError names the first unusable one."""
    return {name: normalise_alias(host) for name, host in (aliases or {}).items() if host and host.strip()}


def deployments_from_stacks(
    stacks: Iterable[Mapping[str, Any]],
    *,
    region: str,
    stack_filter: Optional[str] = None,
    aliases: Optional[Mapping[str, str]] = None,
    output_keys: Optional[Sequence[str]] = None,
) -> list[Deployment]:
    """The Clara deployments among DescribeStacks ``Stacks`` entries, one per server, newest first."""
    alias_hosts = checked_aliases(aliases)
    keys = checked_output_keys(output_keys)
    candidates = []
    for stack in stacks:
        if stack_rejection(stack, keys) is not None or not name_matches(stack.get("StackName", ""), stack_filter):
            continue
        protocol, address = service_address(_output_value(stack, keys) or "", _parameter(stack, USE_HTTPS_PARAMETER))
        candidates.append(_Candidate(stack, protocol, address, keys))

    # A nested stack whose root (or parent) was found is the same deployment seen again.
    found_ids = {candidate.stack_id for candidate in candidates}
    candidates = [
        c
        for c in candidates
        if not (c.is_nested and (c.stack.get("RootId") in found_ids or c.stack.get("ParentId") in found_ids))
    ]
    # Some endpoints list the nested stack as a top-level one without ParentId: same server address.
    by_address: dict = {}
    for candidate in sorted(candidates, key=_Candidate.preference):
        by_address.setdefault(candidate.address.lower(), candidate)

    deployments = [
        _deployment(c, region, alias_hosts.get(c.stack.get("StackName", ""))) for c in by_address.values()
    ]
    deployments.sort(key=lambda d: (-d.created.timestamp(), d.stack_name))
    return deployments


def unusable_clara_stacks(
    stacks: Iterable[Mapping[str, Any]], stack_filter: Optional[str] = None,
    output_keys: Sequence[str] = DEFAULT_OUTPUT_KEYS,
) -> list[str]:
    """``"name (STATE)"`` for stacks that carry the Clara output but are in an unusable state."""
    return [
        f"{stack.get('StackName')} ({stack.get('StackStatus')})"
        for stack in stacks
        if _output_value(stack, output_keys) is not None
        and stack.get("StackStatus") not in USABLE_STATES
        and name_matches(stack.get("StackName", ""), stack_filter)
    ]
