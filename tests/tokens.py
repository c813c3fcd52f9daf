"""Token values the test configs write into their token files."""

WEBHOOK_TOKEN = "webhook-secret-token"
OPERATOR_TOKEN = "operator-secret-token"
NODE_TOKEN = "node-secret-token"
