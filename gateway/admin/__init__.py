"""The loopback admin endpoint (`GET /status`, `POST /reload`) and the CLI's client of it
(`payam-gateway status`, `payam-gateway reload`)."""
