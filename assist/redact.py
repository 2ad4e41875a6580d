"""Redaction lives in :mod:`kb.redact` (flag comments are redacted in ``kb`` too); the answer
path imports it from here."""

from kb.redact import iban_ok, luhn_ok, redact

__all__ = ["iban_ok", "luhn_ok", "redact"]
