"""`responder-agent --config FILE`: serve the agent (HTTPS with `tls`, else loopback only)."""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from werkzeug.serving import make_server

from ..config import ConfigError, read_secret
from ..logs import setup_logging
from .base import Backend
from .config import AgentConfig, load_agent_config
from .cosmos import CosmosBackend
from .server import create_agent_app
from .solana import SolanaBackend

log = logging.getLogger("responder.agent")


def build_backend(config: AgentConfig) -> Backend:
    """The chain's backend; an explicit choice, no discovery."""
    if config.chain == "solana":
        assert config.solana is not None
        return SolanaBackend(config.solana)
    assert config.cosmos is not None
    return CosmosBackend(config.cosmos)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="responder-agent",
        description="The responder's node agent: fences and activates this validator host.",
    )
    parser.add_argument("--config", required=True, help="the agent's YAML config")
    parser.add_argument(
        "--check", action="store_true", help="validate the config and the token file, then exit"
    )
    args = parser.parse_args(argv)
    try:
        config = load_agent_config(args.config)
        read_secret(config.token_file, "token_file")
    except ConfigError as exc:
        print(f"{args.config}: invalid", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    if args.check:
        print(f"{args.config}: ok ({config.chain}, listen {config.listen})")
        return 0
    setup_logging(config.log_level)
    backend = build_backend(config)
    app = create_agent_app(backend, lambda: read_secret(config.token_file, "token_file"))
    host, _, port = config.listen.rpartition(":")
    context = None
    if config.tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(config.tls.cert_file), str(config.tls.key_file))
    server = make_server(host.strip("[]"), int(port), app, threaded=True, ssl_context=context)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serving = threading.Thread(target=server.serve_forever, name="agent-http", daemon=True)
    serving.start()
    scheme = "https" if context else "http"
    print(f"responder-agent ({config.chain}) on {scheme}://{host}:{server.server_port}", flush=True)
    while not stop.wait(0.2):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
