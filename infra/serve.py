"""``python -m infra.serve``: run the local platform until SIGINT/SIGTERM.

Prints one line containing ``ready`` and the API URL on stdout once everything is up; logs go to
stderr. On SIGINT or SIGTERM everything stops (embedded PostgreSQL included) and the exit code is 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType

from infra.platform import LocalPlatform


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")),
                        help="API port (0 = a free port; default $PORT or 8000)")
    parser.add_argument("--demo-calls", type=int, default=int(os.environ.get("DEMO_CALLS", "200")),
                        help="calls the amoCRM stub serves (default $DEMO_CALLS or 200)")
    parser.add_argument("--amocrm-latency-ms", type=int, default=0, help="latency the amoCRM stub adds")
    parser.add_argument("--amocrm-fault-rate", type=float, default=0.0, help="share of amoCRM stub requests that fail")
    parser.add_argument("--openai-latency-ms", type=int, default=0, help="latency the OpenAI stub adds")
    parser.add_argument("--openai-fault-rate", type=float, default=0.0, help="share of OpenAI stub requests that fail")
    parser.add_argument("--no-postgres", action="store_true", help="do not start the embedded PostgreSQL")
    parser.add_argument("--stage", default="local")
    parser.add_argument("--log-level", default=os.environ.get("CALLSIGHT_LOCAL_LOG_LEVEL", "INFO"))
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("werkzeug", "botocore", "boto3", "urllib3", "pgserver", "moto", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.log_level)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    platform = LocalPlatform(port=args.port, demo_calls=args.demo_calls, amocrm_latency_ms=args.amocrm_latency_ms,
                             amocrm_fault_rate=args.amocrm_fault_rate, openai_latency_ms=args.openai_latency_ms,
                             openai_fault_rate=args.openai_fault_rate, postgres=not args.no_postgres,
                             stage=args.stage)
    log = logging.getLogger("infra.serve")
    try:
        try:
            platform.start()
        except Exception as exc:
            log.error("the local platform failed to start: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
            return 1
        if not stop.is_set():
            amocrm = (f"amoCRM stub {platform.amocrm_url}" if platform.amocrm_url
                      else f"amoCRM https://{os.environ.get('CALLSIGHT_DEMO_AMOCRM_SUBDOMAIN')}.amocrm.ru")
            openai = f"OpenAI stub {platform.openai.url}" if platform.openai else "OpenAI (real, OPENAI_API_KEY)"
            print(f"Callsight local platform ready at {platform.api_url} ({amocrm}, {openai}, "
                  f"moto {platform.moto_url}, postgres {platform.database_url or 'none'})", flush=True)
            # handlers log to stdout (as on Lambda); here everything after the ready line goes to stderr
            sys.stdout = sys.stderr
            while not stop.wait(1.0):
                pass
        log.info("%s: stopping", signal.Signals(received[0]).name if received else "stop")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        platform.stop()
        sys.stdout = sys.__stdout__
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
