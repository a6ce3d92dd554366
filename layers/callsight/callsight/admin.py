"""``callsight-admin``: operator commands, run with the deployment's AWS credentials.

    callsight-admin register-client --client-id clinic42 --subdomain clinic42 \
        --timezone Asia/Yekaterinburg --token-file token.txt
    callsight-admin register-client --client-id clinic42 --subdomain clinic42 \
        --oauth-file oauth.json        # {"access_token", "refresh_token", "oauth_client_id", "redirect_uri", ...}
    callsight-admin sync-postgres --client-id clinic42 --start-date 2026-11-01 --end-date 2026-11-30
    callsight-admin create-key --name "clinic42 frontend" --client-id clinic42    # prints the key, this once
    callsight-admin create-key --name "agency operator" --all-clients
    callsight-admin list-keys
    callsight-admin revoke-key --key-id 1a2b3c4d5e6f

The table name, the bucket and the secrets come from CALLSIGHT_TABLE_NAME, CALLSIGHT_BUCKET,
CALLSIGHT_AMOCRM_SECRET_PREFIX and CALLSIGHT_DATABASE_URL_SECRET (the stack's outputs and secret names); the usage
plan new API keys join from CALLSIGHT_USAGE_PLAN_ID (the stack's output UsagePlanId).
Tokens are read from files or stdin, never from the command line (shell history); the database URL from
--database-url, DATABASE_URL or the secret.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import ClientError
from pydantic import SecretStr, ValidationError

from callsight.access import ALL_CLINICS, API_KEY_HEADER, KEY_ID_PATTERN
from callsight.config import AdminConfig, AdminKeysConfig, AdminSyncPostgresConfig
from callsight.dal.api_keys import ApiKeyRecord, ApiKeyRepository
from callsight.dal.clients import AmoCrmCredentials, AmoCrmCredentialStore, ClientProfile, ClientRepository
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.errors import CallsightError, ClientNotFound, validation_problems
from callsight.logic.api_keys import ApiKeyIssuer
from callsight.logic.bi_sync import database_url_from_secret, sync_range_to_postgres
from callsight.models import RangeRequest


def register_client(profile: ClientProfile, credentials: AmoCrmCredentials, *, table_name: str,
                    secret_prefix: str) -> None:
    """Secrets to Secrets Manager, the rest to DynamoDB. Idempotent: re-registering updates both."""
    AmoCrmCredentialStore(secret_prefix).save(profile.client_id, credentials)
    ClientRepository(Table(table_name)).put(profile)


def _read(path: str) -> str:
    return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callsight-admin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("register-client", help="register or update a clinic")
    reg.add_argument("--client-id", required=True)
    reg.add_argument("--subdomain", required=True, help="amoCRM subdomain (<subdomain>.amocrm.ru)")
    reg.add_argument("--base-url", help="amoCRM base URL when not https://<subdomain>.amocrm.ru (Kommo)")
    reg.add_argument("--name", default="", help="the clinic's display name")
    reg.add_argument("--timezone", default="Europe/Moscow", help="IANA time zone of the clinic")
    reg.add_argument("--analysis-file", help="JSON file of per-clinic analysis settings")
    reg.add_argument("--starts-per-hour", type=int,
                     help="this clinic's own limit of process starts per hour (default: StartsPerClinicPerHour)")
    auth = reg.add_mutually_exclusive_group(required=True)
    auth.add_argument("--token-file", help="file holding a long-lived token ('-' for stdin)")
    auth.add_argument("--oauth-file", help="JSON file of an OAuth pair and the integration's keys")
    bi = sub.add_parser("sync-postgres", help="upsert a range's results into PostgreSQL (process 5, alone)")
    bi.add_argument("--client-id", required=True)
    bi.add_argument("--start-date", required=True, help="YYYY-MM-DD")
    bi.add_argument("--end-date", required=True, help="YYYY-MM-DD")
    bi.add_argument("--database-url", help="PostgreSQL URL (default: $DATABASE_URL, else the stack's secret)")
    create = sub.add_parser("create-key", help="create an API key for clinics (the key is printed this once)")
    create.add_argument("--name", required=True, help="what the key is for (list-keys shows it; up to 100 characters)")
    scope = create.add_mutually_exclusive_group(required=True)
    scope.add_argument("--client-id", action="append", dest="client_ids", metavar="ID",
                       help="a clinic the key may use (repeat the option for several)")
    scope.add_argument("--all-clients", action="store_true", help="every clinic (an agency's operator)")
    sub.add_parser("list-keys", help="list the API keys: ids, names, clinics, times (never a key)")
    revoke = sub.add_parser("revoke-key", help="revoke an API key")
    revoke.add_argument("--key-id", required=True, help="the key's key_id (list-keys shows them)")
    args = parser.parse_args(argv)
    if args.command == "sync-postgres":
        return _sync_postgres(args)
    if args.command in ("create-key", "list-keys", "revoke-key"):
        return _api_keys(args)

    try:
        config = AdminConfig()
        if args.token_file:
            credentials = AmoCrmCredentials(access_token=SecretStr(_read(args.token_file).strip()))
            mode = "long_lived"
        else:
            credentials = AmoCrmCredentials.model_validate_json(_read(args.oauth_file))
            if not credentials.can_refresh:
                parser.error("the OAuth file needs refresh_token, oauth_client_id and oauth_client_secret")
            redirect = urlsplit(credentials.redirect_uri or "")
            if redirect.scheme not in ("https", "http") or not redirect.netloc:
                parser.error("the OAuth file needs redirect_uri, the integration's redirect URI exactly as registered "
                             "in amoCRM (https://...): amoCRM refuses a token refresh that sends another")
            mode = "oauth"
        profile = ClientProfile(
            client_id=args.client_id, name=args.name, amocrm_subdomain=args.subdomain,
            amocrm_base_url=args.base_url, timezone=args.timezone, auth_mode=mode,
            analysis=json.loads(_read(args.analysis_file)) if args.analysis_file else {},
            starts_per_hour=args.starts_per_hour,
        )
    except ValidationError as exc:  # without the input: an OAuth file holds secrets
        print(f"callsight-admin: {validation_problems(exc)}", file=sys.stderr)
        return 2
    except (OSError, json.JSONDecodeError) as exc:
        print(f"callsight-admin: {exc}", file=sys.stderr)
        return 2
    register_client(profile, credentials, table_name=config.table_name, secret_prefix=config.amocrm_secret_prefix)
    print(f"registered client {profile.client_id} ({profile.base_url}, {profile.timezone}, {mode} token)")
    return 0


def _sync_postgres(args: argparse.Namespace) -> int:
    try:
        config = AdminSyncPostgresConfig()
        query = RangeRequest(client_id=args.client_id, start_date=args.start_date, end_date=args.end_date)
        url = (args.database_url or os.environ.get("DATABASE_URL")
               or database_url_from_secret(config.database_url_secret or "CALLSIGHT_DATABASE_URL_SECRET unset"))
        summary = sync_range_to_postgres(table=Table(config.table_name), store=ObjectStore(config.bucket),
                                         client_id=query.client_id, days=query.range, database_url=url,
                                         batch_size=config.postgres_batch_size)
    except ValidationError as exc:
        print(f"callsight-admin: {validation_problems(exc)}", file=sys.stderr)
        return 2
    except CallsightError as exc:  # unknown clinic, no database URL, database unreachable (never the password)
        print(f"callsight-admin: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, ensure_ascii=False, default=str))
    return 0


def _api_keys(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    try:
        config = AdminKeysConfig()
        table = Table(config.table_name)
        repo = ApiKeyRepository(table)
        if args.command == "list-keys":
            print(_key_listing(repo.list()))
            return 0
        issuer = ApiKeyIssuer(repo, boto3.client("apigateway"), config.usage_plan_id)
        if args.command == "revoke-key":
            if not re.fullmatch(KEY_ID_PATTERN, args.key_id):  # not echoed: it may be the key itself
                print("callsight-admin: --key-id takes a key's 12-character key_id (list-keys shows them), not the "
                      "key", file=sys.stderr)
                return 2
            record = issuer.revoke(args.key_id, now=now)
            print(f"revoked API key {record.key_id} ({record.name}) at {record.revoked_at}: the API refuses it once "
                  "the authorizer's cached answers expire (ApiKeyCacheSeconds)")
            return 0
        if not config.usage_plan_id:
            print("callsight-admin: CALLSIGHT_USAGE_PLAN_ID is unset: set it to the stack's output UsagePlanId (the "
                  "usage plan that throttles each key)", file=sys.stderr)
            return 2
        key, record = issuer.issue(args.name, [ALL_CLINICS] if args.all_clients else args.client_ids, now=now)
    except ValidationError as exc:
        print(f"callsight-admin: {validation_problems(exc)}", file=sys.stderr)
        return 2
    except (CallsightError, ClientError) as exc:  # an unknown key id; AWS refused (a wrong usage plan id)
        print(f"callsight-admin: {exc}", file=sys.stderr)
        return 1
    clinics = "every clinic" if ALL_CLINICS in record.client_ids else ", ".join(record.client_ids)
    print(f"created API key {record.key_id} ({record.name}) for {clinics}")
    for client_id in _unregistered(ClientRepository(table), record.client_ids):
        print(f"callsight-admin: note: clinic {client_id} is not registered (yet)", file=sys.stderr)
    print(f"The key is shown this once (Callsight keeps only its hash); send it in the {API_KEY_HEADER} header:")
    print(key)
    return 0


def _unregistered(clients: ClientRepository, client_ids: list[str]) -> list[str]:
    missing = []
    for client_id in client_ids:
        if client_id == ALL_CLINICS:
            continue
        try:
            clients.get(client_id)
        except ClientNotFound:
            missing.append(client_id)
    return missing


def _key_listing(records: list[ApiKeyRecord]) -> str:
    """The keys as a table: id, name, clinics, created, last used, revoked (never the hash)."""
    if not records:
        return "no API keys (create one with callsight-admin create-key)"
    rows = [("KEY_ID", "NAME", "CLINICS", "CREATED", "LAST USED", "REVOKED")]
    rows += [(r.key_id, r.name, ",".join(r.client_ids), r.created_at, r.last_used_at or "-", r.revoked_at or "-")
             for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


if __name__ == "__main__":
    raise SystemExit(main())
