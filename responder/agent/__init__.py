"""The node agent (`responder-agent`): runs on a validator host and carries out the chain's own
failover procedure locally, behind the `http` driver contract the responder speaks.

One module per chain (solana, cosmos) implements `Backend`; `server` is the HTTP side (bearer
token, optional TLS), `config` the agent's own frozen config.
"""
