"""Redact personal data from free text before it is stored, logged or shown to someone else.

Used for questions (the audit log, handoffs, gaps) and agents' flag comments. Each kind is
replaced by a bracketed label, in this order (a label holds no digit, so later passes never
match inside it, and redacting twice changes nothing):

``[EMAIL]``  addresses with Unicode local parts and internationalised domains, and the usual
             obfuscations: ``jane.doe @ example.com``, ``jane.doe(at)example.com``,
             ``jane [at] example [dot] com``, ``jane.doe at example dot com``;
``[IBAN]``   any case, grouped by spaces or dashes; exactly the country's IBAN length, so a
             following word or number is kept; mod-97 checked;
``[CARD]``   13-19 digits grouped by spaces, dashes or dots, issuer digit 2-6, Luhn checked;
             the longest valid run of whole groups, so a CVV typed after it does not hide it;
``[SSN]``    US social security numbers (``123-45-6789``, ``123 45 6789``; never-issued areas
             and zero groups excluded);
``[NINO]``   UK National Insurance numbers, any case, spaced, dashed or run together
             (allocated prefixes only);
``[PHONE]``  phone numbers found by Google's libphonenumber (``phonenumbers``): valid
             numbers in the numbering plans of :data:`REGIONS` (national forms such as
             ``030/1234567`` or ``(415) 555-2671``) or in international form (``+``/``00``);
             plus any possible number written with ``+`` or right after a word like "call",
             "phone" or "tel"; not a number glued to an id (``CS-0012345``, ``#700123456``)
             or right after "order", "ticket", "invoice", "ref"...

tests/test_redact.py measures recall and precision on the labelled sample in
tests/fixtures/redaction/ (``python -m tests.test_redact`` prints them).
"""

from __future__ import annotations

import re

from phonenumbers import Leniency, PhoneNumberMatcher

__all__ = ["REGIONS", "iban_ok", "luhn_ok", "redact"]

# National numbering plans searched for numbers written without a country code.
REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IE", "AT", "CH", "AU", "IN")

_AT = r"(?:\s*@\s*|\s*[(\[{<]\s*at\s*[)\]}>]\s*)"
_BARE_AT = r"\s+at\s+"
_DOT = r"(?:\.|\s*[(\[{<]\s*dot\s*[)\]}>]\s*|\s+dot\s+)"
_LOCAL = r"[\w!#$%&'*+/=?^`|~-]+(?:\.[\w!#$%&'*+/=?^`|~-]+)*"
_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
_DOMAIN = rf"{_LABEL}(?:{_DOT}{_LABEL})*{_DOT}(?:[^\W\d_]{{2,}}|xn--[\w-]+)(?![\w-])"
_EMAIL = re.compile(rf"(?<![\w.+-]){_LOCAL}{_AT}{_DOMAIN}", re.IGNORECASE)
# "look at example.com" is not an address: a bare " at " needs an address-like local part
# (with a dot, digit, underscore or plus) or a spelled-out " dot " in the domain.
_EMAIL_BARE_AT = re.compile(
    rf"(?<![\w.+-])(?:{_LOCAL}[._+\d]{_LOCAL}?|[\w.+-]*[._+\d][\w.+-]*){_BARE_AT}{_DOMAIN}"
    rf"|(?<![\w.+-]){_LOCAL}{_BARE_AT}{_LABEL}(?:{_DOT}{_LABEL})*\s+dot\s+"
    rf"(?:[^\W\d_]{{2,}})(?![\w-])", re.IGNORECASE)

_IBAN = re.compile(r"(?<![\w])[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){10,32}")
# ISO 13616 registry: country -> IBAN length.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}

_DIGIT_RUN = re.compile(r"(?<![\w.,/-])\d+(?:(?:[ .-]| {2})\d+)*(?![\w])")
_SSN = re.compile(r"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-])")
_NINO = re.compile(r"(?<![\w])([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z])[ -]?(\d{2})[ -]?(\d{2})"
                   r"[ -]?(\d{2})[ -]?([A-D])(?![\w])", re.IGNORECASE)
_NINO_UNALLOCATED = {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}
# Just before a number, these say it is an identifier, not a phone number.
_ID_CUE = re.compile(r"(?:[#/]|[^\W\d_]-?|\b(?:order|ticket|ref|reference|invoice|case|id|"
                     r"sku|po|tracking|serial|build|version|account|customer|epoch|no)"
                     r"\b\W{0,3})$", re.IGNORECASE)
_PHONE_CUE = re.compile(r"(?:\b(?:call|calls|called|calling|phone|tel|telephone|mobile|cell|"
                        r"ring|fax|whatsapp|sms|text|reach)\b[\w\s:.,()-]{0,20})$",
                        re.IGNORECASE)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(value: str) -> bool:
    s = re.sub(r"[\s-]", "", value).upper()
    if not 15 <= len(s) <= 34 or not s.isalnum() or not s.isascii():
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _iban(m: re.Match[str]) -> str:
    raw = m.group()
    length = IBAN_LENGTHS.get(raw[:2].upper())
    if length is None:
        return raw
    taken = end = 0
    for position, ch in enumerate(raw, 1):
        if ch.isalnum():
            taken += 1
            if taken == length:
                end = position
                break
    if taken < length or not iban_ok(raw[:end]):
        return raw
    return "[IBAN]" + raw[end:]


def _card(m: re.Match[str]) -> str:
    raw = m.group()
    groups = list(re.finditer(r"\d+", raw))
    best = None
    count = 0
    for g in groups:  # the longest run of whole groups that is a card number
        count += len(g.group())
        if count > 19:
            break
        digits = re.sub(r"\D", "", raw[:g.end()])
        if count >= 13 and digits[0] in "23456" and luhn_ok(digits):
            best = g.end()
    return raw if best is None else "[CARD]" + raw[best:]


def _ssn(m: re.Match[str]) -> str:
    area, group, serial = m.group(1), m.group(3), m.group(4)
    if area in {"000", "666"} or area[0] == "9" or group == "00" or serial == "0000":
        return m.group()
    return "[SSN]"


def _nino(m: re.Match[str]) -> str:
    return m.group() if m.group(1).upper() in _NINO_UNALLOCATED else "[NINO]"


def _phone_spans(text: str) -> list[tuple[int, int]]:
    spans: set[tuple[int, int]] = set()
    for region in REGIONS:
        for found in PhoneNumberMatcher(text, region, leniency=Leniency.VALID):
            before = text[max(0, found.start - 40):found.start]
            if _ID_CUE.search(before) and not _PHONE_CUE.search(before):
                continue
            spans.add((found.start, found.end))
    for found in PhoneNumberMatcher(text, REGIONS[0], leniency=Leniency.POSSIBLE):
        before = text[max(0, found.start - 40):found.start]
        if _PHONE_CUE.search(before) or (found.raw_string.lstrip("(").startswith("+")
                                         and not _ID_CUE.search(before)):
            spans.add((found.start, found.end))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _phones(text: str) -> str:
    if sum(ch.isdigit() for ch in text) < 7:  # no phone number has fewer digits
        return text
    for start, end in reversed(_phone_spans(text)):
        text = text[:start] + "[PHONE]" + text[end:]
    return text


def redact(text: str) -> str:
    """The text with personal data replaced by labels (idempotent)."""
    text = _EMAIL.sub("[EMAIL]", text)
    text = _EMAIL_BARE_AT.sub("[EMAIL]", text)
    text = _IBAN.sub(_iban, text)
    text = _DIGIT_RUN.sub(_card, text)
    text = _SSN.sub(_ssn, text)
    text = _NINO.sub(_nino, text)
    return _phones(text)

