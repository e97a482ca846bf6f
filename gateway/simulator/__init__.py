"""Built-in SMPP 3.4 SMSC simulator (`payam-gateway smsc-sim`) and its loopback control API.

    smsc.py       the SMSC side: SMSCProtocol (one ESME connection), SMSCFactory (shared state)
    behaviour.py  throttling, failures, drops, id format, receipts: changeable at run time
    records.py    the ring of accepted submits the control API shows
    receipts.py   delivery receipt deliver_sm
    mo.py         mobile-originated deliver_sm (SMS and USSD)
    control.py    the JSON control API (twisted.web)
    main.py       run_simulator(argv) for the CLI, start_simulator(...) for in-process use
"""
