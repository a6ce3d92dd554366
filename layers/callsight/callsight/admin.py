"""``callsight-admin``: operator commands, run with the deployment's AWS credentials.

    callsight-admin register-client --client-id clinic42 --subdomain clinic42 \
        --timezone Asia/Yekaterinburg --token-file token.txt
    callsight-admin register-client --client-id clinic42 --subdomain clinic42 \
        --oauth-file oauth.json        # {"access_token", "refresh_token", "oauth_client_id", "redirect_uri", ...}
    callsight-admin sync-postgres --client-id clinic42 --start-date 2026-11-01 --end-date 2026-11-30

The table name, the bucket and the secrets come from CALLSIGHT_TABLE_NAME, CALLSIGHT_BUCKET,
CALLSIGHT_AMOCRM_SECRET_PREFIX and CALLSIGHT_DATABASE_URL_SECRET (the stack's outputs and secret names).
Tokens are read from files or stdin, never from the command line (shell history); the database URL from
--database-url, DATABASE_URL or the secret.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr, ValidationError

from callsight.config import AdminConfig, AdminSyncPostgresConfig
from callsight.dal.clients import AmoCrmCredentials, AmoCrmCredentialStore, ClientProfile, ClientRepository
from callsight.dal.recordings import ObjectStore
from callsight.dal.table import Table
from callsight.errors import CallsightError, validation_problems
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
    auth = reg.add_mutually_exclusive_group(required=True)
    auth.add_argument("--token-file", help="file holding a long-lived token ('-' for stdin)")
    auth.add_argument("--oauth-file", help="JSON file of an OAuth pair and the integration's keys")
    bi = sub.add_parser("sync-postgres", help="upsert a range's results into PostgreSQL (process 5, alone)")
    bi.add_argument("--client-id", required=True)
    bi.add_argument("--start-date", required=True, help="YYYY-MM-DD")
    bi.add_argument("--end-date", required=True, help="YYYY-MM-DD")
    bi.add_argument("--database-url", help="PostgreSQL URL (default: $DATABASE_URL, else the stack's secret)")
    args = parser.parse_args(argv)
    if args.command == "sync-postgres":
        return _sync_postgres(args)

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


if __name__ == "__main__":
    raise SystemExit(main())
