"""A seeded, reproducible chaos campaign against the responder: `python -m tests.chaos`.

See docs/safety.md for what it runs, the invariants it checks and how to replay a scenario.
"""
