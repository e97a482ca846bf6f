"""USSD `*4` services: agencies' menus (data, gateway/config/ussd_file.py) walked per
citizen's dialog. `engine.py` is the state machine of one dialog, `sessions.py` the
bounded table of live dialogs and their timers, `dialogs.py` what a USSD step from an
operator becomes (a page, or nothing), with filing (`filing.py`), agencies' dynamic
states (`dynamic.py`), dialog records and metrics. Nothing here knows SMPP: the inbound
USSD entry turns PDUs into steps and pages into answers."""
