"""`payam-gateway demo`: the daemon on embedded defaults, bound to its own SMSC simulator."""

import dataclasses
import logging
import os
from pathlib import Path

from gateway.config.load import load_gateway_config

DEMO_DIR = Path(__file__).resolve().parent
DEMO_KEY = "demo-tax-key-0000000000000000"   # the sample `tax` agency's key (demo only)
DEMO_APP_KEY = "demo-dolat-hamrah-key-00000000000"   # the sample partner app's (apps.yaml)

log = logging.getLogger("payam.demo")


def demo_config(http_port, smsc_port, var_dir, metrics_port=9108, admin_port=9109):
    """The packaged demo configuration, pointed at the simulator and a local store."""
    config = load_gateway_config(str(DEMO_DIR / "gateway.yaml"))
    operators = tuple(dataclasses.replace(op, host="127.0.0.1", port=smsc_port)
                      for op in config.operators)
    os.makedirs(var_dir, exist_ok=True)
    return dataclasses.replace(
        config, operators=operators, http_listen=("127.0.0.1", http_port),
        metrics_listen=("127.0.0.1", metrics_port), admin_listen=("127.0.0.1", admin_port),
        store_path=str(Path(var_dir).resolve() / "demo.db"))


def run_demo(args, serve):
    from twisted.internet import reactor

    from gateway.service import GatewayService
    from gateway.simulator.main import start_simulator

    from twisted.internet.error import CannotListenError

    from gateway.listening import ListenFailed, reason

    try:
        simulator = start_simulator(reactor, "127.0.0.1", args.smsc_port, args.control_port)
    except CannotListenError as error:
        flag = "--smsc-port" if error.port == args.smsc_port else "--control-port"
        log.error("%s", ListenFailed(f"the demo's {flag}", "127.0.0.1", error.port,
                                     reason(error)))
        return 1
    config = demo_config(args.http_port, simulator.smpp_port, args.var, args.metrics_port,
                         args.admin_port)
    from gateway.procs.supervisor import workers_for
    workers = workers_for(config.http_workers)
    if workers:
        # The split daemon (gateway/procs), as `run` starts it by default; the
        # simulator stays in this, the supervisor's, process.
        from gateway.procs.run import supervisor_for
        source = {"kind": "demo", "demo": {
            "http_port": args.http_port, "smsc_port": simulator.smpp_port,
            "var_dir": args.var, "metrics_port": args.metrics_port,
            "admin_port": args.admin_port}}
        service = supervisor_for(config, reactor, workers, args, source,
                                 listen_setting="the demo's --http-port")
        split = (f"  processes:         this supervisor, 1 dispatcher (the binds), "
                 f"{workers} HTTP worker(s)\n")
    else:
        service = GatewayService(config, reactor, create_store=args.create_store,
                                 listen_settings={"http": "the demo's --http-port",
                                                  "metrics": "the demo's --metrics-port",
                                                  "admin": "the demo's --admin-port"})
        split = "  processes:         one (http.workers: 0)\n"

    def announce():
        url = f"http://127.0.0.1:{args.http_port}"
        print(f"""
Payam Gateway demo is running.
  agency API:        {url}/   (health: {url}/healthz)
  SMSC simulator:    127.0.0.1:{simulator.smpp_port}, control API http://127.0.0.1:{simulator.control_port}/submits
  store:             {config.store_path}
{split}
Send a message as the sample tax agency:
  curl -s {url}/v1/messages -H 'Authorization: Bearer {DEMO_KEY}' \\
    -d '{{"from": "40401234", "to": "09121234567", "text": "سلام از سامانه پیام"}}'

Then read its status with GET {url}/v1/messages/<id> and the same header.

Read a citizen's national inbox as the sample partner app Dolat Hamrah:
  curl -s '{url}/v1/citizen/messages?national_id=0012345679&msisdn=09121234567' \\
    -H 'Authorization: Bearer {DEMO_APP_KEY}'

Dial the judiciary's USSD menu as a citizen's handset (then /ussd/send with "text"):
  curl -s http://127.0.0.1:{simulator.control_port}/ussd/dial \\
    -d '{{"from": "989121234567", "code": "*4*0135#"}}'
Ctrl-C stops.
""", flush=True)

    return serve(reactor, service, announce=announce) or getattr(service, "exit_code", 0)
