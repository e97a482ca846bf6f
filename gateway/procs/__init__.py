"""The daemon split across processes (issue 10 item 4), `http: {workers: N}`.

The `run` process is the supervisor (supervisor.py): it holds the store's lock, binds
the HTTP socket once, makes the wake-up pipe and a run directory, and starts
- one dispatcher process (dispatcher.py): GatewayService without HTTP: the binds,
  inbound, USSD, webhooks, broadcast feeder, housekeeping, the admin endpoint;
- N HTTP worker processes (worker.py): the agency API and the accept path on the
  inherited socket (the kernel spreads connections over them), writing to the same
  WAL store, each accept waking the dispatcher with a byte on the pipe (wake.py);
then serves /metrics for all of them (stats.py) and restarts a child that dies.
What a child is told comes through its environment and inherited descriptors
(child.py); `workers: 0` keeps everything in one process (gateway/service.py).
"""
