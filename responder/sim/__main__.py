"""`python -m responder.sim [ethereum|solana|cosmos] ARGS`: one simulated node."""

from __future__ import annotations

import importlib
import sys

CHAINS = ("ethereum", "solana", "cosmos")


def main() -> int:
    argv = sys.argv[1:]
    chain = "ethereum"
    if argv and argv[0] in CHAINS:
        chain, argv = argv[0], argv[1:]
    module = importlib.import_module(f"responder.sim.{chain}")
    code: int = module.main(argv)
    return code


if __name__ == "__main__":
    sys.exit(main())
