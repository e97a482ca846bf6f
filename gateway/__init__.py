"""Payam Gateway: government agencies' SMS/USSD gateway (SMPP 3.4 ESME)."""

__version__ = "0.1.0"
