"""The refuse-real-AWS guard, for the platform's own process and for every container it runs handlers in.

``refuse_real_aws()`` (never removed) makes botocore refuse any request to a host that is not loopback and
resolve no credentials but dummy ones (no profile, file, credential process or metadata service is consulted),
so code that outlives the platform, or a handler that lost its ``AWS_ENDPOINT_URL``, gets an error instead of
the developer's account. ``isolate_from_real_aws()`` also replaces the AWS environment with dummy values for the
rest of the process (``python -m infra.serve`` does it first).

Standard library and botocore only, and no ``infra`` import: ``infra/container.py`` (a process without moto, with
no ``infra`` package on its path) loads this file by its path.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import threading
from collections.abc import Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import botocore.credentials
from botocore.httpsession import URLLib3Session

DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
#: the AWS environment of code the platform runs (None: removed): dummy keys, which botocore takes before any
#: other source, and none of the others (profiles, shared files, web identity, instance or container metadata)
ISOLATED_AWS_ENVIRONMENT: dict[str, str | None] = {
    **DUMMY_CREDENTIALS,
    "AWS_SESSION_TOKEN": None,
    "AWS_SECURITY_TOKEN": None,
    "AWS_PROFILE": None,
    "AWS_DEFAULT_PROFILE": None,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_WEB_IDENTITY_TOKEN_FILE": None,
    "AWS_ROLE_ARN": None,
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None,
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
    "AWS_CONTAINER_AUTHORIZATION_TOKEN": None,
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": None,
    "AWS_EC2_METADATA_DISABLED": "true",
}


class RealAwsRefused(RuntimeError):
    """botocore was about to send a request beyond loopback (real AWS, instance metadata) from this process."""


def is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1); names that merely resolve there are not."""
    if not host:
        return False
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _DummyCredentials(botocore.credentials.CredentialProvider):
    METHOD = CANONICAL_NAME = "callsight-local-platform"

    def load(self) -> botocore.credentials.Credentials:
        return botocore.credentials.Credentials(DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                                DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], method=self.METHOD)


def _dummy_credential_resolver(session: Any, cache: Any = None,
                               region_name: str | None = None) -> botocore.credentials.CredentialResolver:
    return botocore.credentials.CredentialResolver(providers=[_DummyCredentials()])


_guard_lock = threading.Lock()


def refuse_real_aws() -> None:
    """From now on, for the life of the process, botocore sends nothing to a host that is not loopback and
    resolves no credentials but dummy ones.

    Every botocore request (any session or client, credential providers' metadata look-ups included) goes
    through ``URLLib3Session.send``; the guard checks the request's host before any DNS look-up or connection
    and raises RealAwsRefused (not retried by botocore). A session that needs credentials builds its resolver
    with ``botocore.credentials.create_credential_resolver``: it gets the dummy keys only, so no profile, shared
    file, ``credential_process``, SSO cache or metadata service is read. Idempotent; there is no way back, on
    purpose.
    """
    with _guard_lock:
        original: Callable[[Any, Any], Any] = URLLib3Session.send
        if getattr(original, "_callsight_original", None) is not None:
            return
        botocore.credentials.create_credential_resolver = _dummy_credential_resolver

        @functools.wraps(original)
        def send(self: Any, request: Any) -> Any:
            host = urlsplit(str(request.url)).hostname
            if not is_loopback(host):
                raise RealAwsRefused(f"the local platform sends AWS requests to loopback only; refused one to {host} "
                                     "(no AWS_ENDPOINT_URL: a handler outliving the platform?)")
            return original(self, request)

        send._callsight_original = original  # type: ignore[attr-defined]
        URLLib3Session.send = send  # type: ignore[method-assign]


def isolate_from_real_aws(environ: MutableMapping[str, str] | None = None) -> None:
    """``refuse_real_aws()``, and the AWS environment of ISOLATED_AWS_ENVIRONMENT for the rest of the process
    (for a process that exists to run the platform: nothing restores the developer's values)."""
    refuse_real_aws()
    target = os.environ if environ is None else environ
    for name, value in ISOLATED_AWS_ENVIRONMENT.items():
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value
