"""PII benchmark: recall and precision of :mod:`flywheel.pii` per type on a generated,
labelled set of sentences, and the false-positive rate on ordinary sentences.

The set is made with a seed: personal data from Faker in many locales (names, e-mail
addresses, IBANs, card numbers, SSNs, IP addresses), phone numbers of many regions from
``phonenumbers``' own example numbers (digits changed, kept only when still valid) in
international, national and bare forms, and secrets in the formats of the services that
issue them. Each positive sentence holds one labelled value; a finding counts only when
it is of the right type and covers the whole value (a partial redaction is a miss).
Ordinary sentences hold look-alikes: order and reference numbers, dates, times, prices,
versions, hashes, identifiers, database words. Any finding in one is a false positive.

The last line is one JSON object: per type recall, precision and count, the
false-positive rate, and the detection speed.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import string
import time
from dataclasses import dataclass

from benchmarks.common import peak_rss_mb, say
from flywheel import pii

LOCALES = ("en_US", "en_GB", "en_IN", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL",
           "pt_BR", "pt_PT", "sv_SE", "tr_TR", "cs_CZ", "ro_RO", "hu_HU", "fi_FI", "da_DK")


@dataclass(frozen=True)
class Sample:
    """A sentence; ``value`` (of type ``kind``) is in it, or both are None."""

    text: str
    kind: str | None = None
    value: str | None = None


def _fill(rng: random.Random, templates: list[str], kind: str, value: str) -> Sample:
    return Sample(rng.choice(templates).format(v=value), kind, value)


# --------------------------------------------------------------------------------------
# e-mail
# --------------------------------------------------------------------------------------

_EMAIL_TEMPLATES = [
    "Write to {v} for the refund", "my email is {v}", "cc: {v}.", "Contact: <{v}>",
    "Send the invoice to {v}, thanks!", "Mi correo es {v}", "Meine E-Mail: {v}",
    "Mon adresse e-mail est {v} merci", "reply-to={v}", "({v})", "please add {v} to the workspace",
    "\"{v}\" bounced yesterday", "Il mio indirizzo è {v}.", "email {v} and phone later",
]
_IDN_DOMAINS = ("exämple.de", "bücher.example", "correo.españa.es", "почта.рф", "例え.jp",
                "xn--bcher-kva.example", "müller-gmbh.de", "société.fr", "ırmak.com.tr", "żółw.pl")


def _emails(rng, fakers, n):
    out = []
    for i in range(n):
        f = rng.choice(fakers)
        if i % 3 == 0:
            value = f.email()
        else:
            first = f.first_name().lower().replace(" ", "")
            last = f.last_name().lower().replace(" ", "").replace("'", "")
            sep = rng.choice([".", "_", "", "-", "+"])
            domain = rng.choice(_IDN_DOMAINS) if i % 3 == 1 else f.free_email_domain()
            value = f"{first}{sep}{last}{rng.choice(['', str(rng.randint(1, 99))])}@{domain}"
        out.append(_fill(rng, _EMAIL_TEMPLATES, "email", value))
    return out


# --------------------------------------------------------------------------------------
# phone
# --------------------------------------------------------------------------------------

_PHONE_TEMPLATES = [
    "Call me at {v} tomorrow", "my cell is {v}.", "Phone: {v}", "tel. {v}", "mobile {v} (after 6pm)",
    "you can reach me on {v}", "Ruf mich an: {v}", "Mon numéro de téléphone est le {v}",
    "Mi número es {v}", "whatsapp {v}", "Il mio cellulare: {v}", "contact number {v} please",
    "text me at {v}", "Telefone {v}", "I am on {v} until 6", "Please ring {v} to confirm",
    "Best, Jane ({v})", "fax {v}", "Numer telefonu: {v}", "SMS {v} with the code",
]
_INTERNATIONAL_ONLY = ("DK", "NO", "SG", "HK", "IS", "EE", "LT", "LV", "SK", "SI", "HR", "RS",
                       "BG", "LU", "QA", "KW", "JO", "LB", "GH", "UG", "TZ", "ET", "LK", "NP")


def _random_number(rng, region):
    import phonenumbers

    kinds = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE)
    example = phonenumbers.example_number_for_type(region, rng.choice(kinds))
    if example is None:
        return None
    for _ in range(20):
        digits = str(example.national_number)
        keep = max(2, len(digits) - 4)
        candidate = digits[:keep] + "".join(rng.choice(string.digits) for _ in digits[keep:])
        number = phonenumbers.PhoneNumber(country_code=example.country_code, national_number=int(candidate),
                                          italian_leading_zero=example.italian_leading_zero)
        if phonenumbers.is_valid_number(number):
            return number
    return None


def _phones(rng, n):
    import phonenumbers
    from flywheel.pii.phones import REGIONS

    fmt = phonenumbers.PhoneNumberFormat
    out = []
    while len(out) < n:
        i = len(out)
        if i % 10 == 0:  # bare 10-digit American
            value = f"{rng.randint(2, 9)}{rng.randint(0, 9)}{rng.randint(0, 9)}{rng.randint(2, 9)}{rng.randint(0, 9)}{rng.randint(0, 9)}" + "".join(rng.choice(string.digits) for _ in range(4))
            number = phonenumbers.parse(value, "US")
            if not phonenumbers.is_valid_number(number):
                continue
        elif i % 10 == 1:  # Indian mobile, 5-5 or bare
            value = f"{rng.choice('6789')}" + "".join(rng.choice(string.digits) for _ in range(9))
            if not phonenumbers.is_valid_number(phonenumbers.parse(value, "IN")):
                continue
            value = rng.choice([f"{value[:5]} {value[5:]}", value, f"+91 {value[:5]} {value[5:]}", f"0{value}"])
        else:
            region = rng.choice(REGIONS + _INTERNATIONAL_ONLY)
            number = _random_number(rng, region)
            if number is None:
                continue
            style = rng.random()
            if region in _INTERNATIONAL_ONLY or style < 0.4:
                value = phonenumbers.format_number(number, fmt.INTERNATIONAL)
            elif style < 0.55:
                value = phonenumbers.format_number(number, fmt.E164)
            elif style < 0.62:
                value = "00" + phonenumbers.format_number(number, fmt.E164)[1:]
            else:
                value = phonenumbers.format_number(number, fmt.NATIONAL)
            if style > 0.9:
                value = value.replace(" ", "-") if " " in value and "(" not in value else value
        out.append(_fill(rng, _PHONE_TEMPLATES, "phone", value))
    return out


# --------------------------------------------------------------------------------------
# cards, IBAN, SSN, IP
# --------------------------------------------------------------------------------------

_CARD_TEMPLATES = [
    "my card is {v} exp 12/27", "pay with {v} please", "Card number: {v}", "Kartennummer {v}",
    "numéro de carte {v}, cvv 123", "charged {v} twice", "tarjeta {v}", "cc={v}",
    "the card {v} was declined", "use {v} for the renewal",
]
_CARD_TYPES = ("visa16", "visa13", "mastercard", "amex", "discover", "diners", "jcb16", "maestro", "visa19")


def _group(digits: str, sizes: list[int], sep: str) -> str:
    parts, pos = [], 0
    for size in sizes:
        if pos >= len(digits):
            break
        parts.append(digits[pos:pos + size])
        pos += size
    if pos < len(digits):
        parts.append(digits[pos:])
    return sep.join(parts)


def _cards(rng, fakers, n):
    f = fakers[0]  # en_US: every card type
    out = []
    for i in range(n):
        kind = _CARD_TYPES[i % len(_CARD_TYPES)]
        digits = f.credit_card_number(card_type=kind)
        if len(digits) == 15:
            sizes = [4, 6, 5]
        elif len(digits) == 14:
            sizes = rng.choice([[4, 6, 4], [4, 4, 4, 2]])
        else:
            sizes = [4, 4, 4, 4, 3]
        value = _group(digits, sizes, rng.choice([" ", " ", "-", ".", ""]))
        out.append(_fill(rng, _CARD_TEMPLATES, "card", value))
    return out


_IBAN_TEMPLATES = [
    "IBAN: {v}", "please transfer to {v} by Friday", "Überweisung an {v}", "mon IBAN est {v}",
    "account {v} (Sparkasse)", "refund to {v}, BIC DEUTDEFF", "IBAN {v}.", "cuenta {v}",
]
_IBAN_LOCALES = ("de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "en_GB", "pl_PL", "pt_PT", "fi_FI",
                 "de_AT", "de_CH", "sv_SE", "cs_CZ", "ro_RO", "hu_HU", "tr_TR", "da_DK", "no_NO")


def _ibans(rng, n):
    from faker import Faker

    fakers = [Faker(locale) for locale in _IBAN_LOCALES]
    for i, f in enumerate(fakers):
        f.seed_instance(rng.randint(0, 10**9) + i)
    out = []
    for i in range(n):
        value = rng.choice(fakers).iban()
        if i % 2:
            value = " ".join(value[j:j + 4] for j in range(0, len(value), 4))
        out.append(_fill(rng, _IBAN_TEMPLATES, "iban", value))
    return out


_SSN_TEMPLATES = ["SSN {v}", "my social security number is {v}", "SSN: {v} (for the W-2)",
                  "ss# {v}", "social security no. {v}", "the applicant's SSN is {v}."]


def _ssns(rng, fakers, n):
    from faker import Faker

    f = Faker("en_US")
    f.seed_instance(rng.randint(0, 10**9))
    out = []
    for i in range(n):
        value = f.ssn()
        if i % 4 == 1:
            value = value.replace("-", " ")
        elif i % 4 == 2:
            value = value.replace("-", "")
        out.append(_fill(rng, _SSN_TEMPLATES, "ssn", value))
    return out


_IP_TEMPLATES = ["login from {v} blocked", "client ip={v}", "my IP address is {v}", "request from {v} at 10:14",
                 "whitelist {v} please", "Connexion depuis {v}", "host {v} port 8080", "X-Forwarded-For: {v}"]


def _ips(rng, fakers, n):
    out = []
    for i in range(n):
        f = rng.choice(fakers)
        value = (f.ipv4_public(), f.ipv4_private(), f.ipv6(), f.ipv4_public())[i % 4]
        while value.startswith("ff"):  # multicast: a group, not a host
            value = f.ipv6()
        out.append(_fill(rng, _IP_TEMPLATES, "ip", value))
    return out


# --------------------------------------------------------------------------------------
# secrets
# --------------------------------------------------------------------------------------


def _alnum(rng, n, alphabet=string.ascii_letters + string.digits):
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(rng):
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps({"sub": str(rng.randint(1, 10**6)), "iat": rng.randint(1.6e9, 1.8e9)}).encode())
    return f"{header}.{payload}.{_b64url(rng.randbytes(32))}"


def _pem(rng):
    body = base64.b64encode(rng.randbytes(rng.randint(300, 600))).decode()
    lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    kind = rng.choice(["RSA ", "EC ", "", "OPENSSH "])
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{lines}\n-----END {kind}PRIVATE KEY-----"


_KEY_TEMPLATES = ["here is the key {v} for prod", "use {v}", "token {v}", "export KEY={v}",
                  "I pasted {v} by mistake", "\"{v}\"", "creds: {v}.", "la clé est {v}"]


def _secrets(rng, fakers, n):
    makers = [
        lambda: "sk_live_" + _alnum(rng, rng.choice([24, 34, 99])),
        lambda: "rk_live_" + _alnum(rng, rng.choice([24, 34, 99])),
        lambda: _jwt(rng),
        lambda: "hf_" + _alnum(rng, 34),
        lambda: "glpat-" + _alnum(rng, 20, string.ascii_letters + string.digits + "_-"),
        lambda: "SG." + _alnum(rng, 22, string.ascii_letters + string.digits + "_-") + "." + _alnum(rng, 43, string.ascii_letters + string.digits + "_-"),
        lambda: "npm_" + _alnum(rng, 36),
        lambda: f"https://hooks.slack.com/services/T{_alnum(rng, 8).upper()}/B{_alnum(rng, 10).upper()}/{_alnum(rng, 24)}",
        lambda: f"xoxb-{rng.randint(10**9, 10**10)}-{rng.randint(10**9, 10**10)}-{_alnum(rng, 24)}",
        lambda: "ghp_" + _alnum(rng, 36),
        lambda: "AKIA" + _alnum(rng, 16, string.ascii_uppercase + string.digits),
        lambda: "sk-proj-" + _alnum(rng, 48, string.ascii_letters + string.digits + "_-"),
        lambda: "AIza" + _alnum(rng, 35, string.ascii_letters + string.digits + "_-"),
    ]
    out = []
    for i in range(n):
        f = rng.choice(fakers)
        style = i % 6
        if style in (0, 1):
            value = makers[i % len(makers)]()
            out.append(_fill(rng, _KEY_TEMPLATES, "secret", value))
        elif style == 2:
            value = _pem(rng) if i % 12 == 2 else _alnum(rng, 12, string.ascii_letters + string.digits + "-._~")
            if i % 12 == 2:
                out.append(Sample(rng.choice(["my key:\n{v}\nthanks", "{v}", "config:\n{v}"]).format(v=value), "secret", value))
            else:
                user = f.user_name()
                host = f.domain_name()
                scheme = rng.choice(["postgres", "postgresql", "mysql", "mongodb+srv", "redis", "amqp"])
                url = f"{scheme}://{user}:{value}@{host}:{rng.randint(1000, 9999)}/app"
                out.append(Sample(rng.choice(["DATABASE_URL={u}", "connect to {u} and run it", "dsn: {u}"]).format(u=url),
                                  "secret", value))
        elif style == 3:  # name = value assignments, some quoted (with spaces)
            name = rng.choice(["api_key", "API_KEY", "client_secret", "DB_PASSWORD", "password", "auth_token",
                               "secret_key", "OPENAI_API_KEY", "access_token", "passwd", "private_key", "apiKey"])
            if "pass" in name.lower():
                value = f.password(length=rng.randint(10, 16))
            else:
                value = _alnum(rng, rng.randint(20, 40))
            quote = rng.choice(["", "\"", "'"])
            if quote and "pass" in name.lower() and rng.random() < 0.3:
                value = " ".join(f.words(3))
            sep = rng.choice(["=", ": ", " = ", "="])
            line = f"{name}{sep}{quote}{value}{quote}"
            out.append(Sample(rng.choice(["{l}", "config has {l} in it", "set {l}", "{{\"x\": 1, {l}}}"]).format(l=line),
                              "secret", value))
        elif style == 4:  # "my password is ..."
            value = f.password(length=rng.randint(8, 14))
            out.append(_fill(rng, ["my password is {v}", "the password is {v} btw", "My password was {v}, reset it",
                                   "passcode is {v}", "password: {v}", "pwd is {v}"], "secret", value))
        else:
            kind = rng.choice(["bearer", "basic"])
            if kind == "bearer":
                value = _jwt(rng) if rng.random() < 0.5 else _alnum(rng, 40)
                out.append(Sample(f"Authorization: Bearer {value}", "secret", value))
            else:
                value = base64.b64encode(f"{f.user_name()}:{f.password()}".encode()).decode()
                out.append(Sample(f"curl -H 'Authorization: Basic {value}' https://api.example.com", "secret", value))
    return out


# --------------------------------------------------------------------------------------
# ordinary sentences with look-alikes
# --------------------------------------------------------------------------------------


def _ordinary(rng, fakers, n):
    def digits(k):
        return "".join(rng.choice(string.digits) for _ in range(k))

    def not_luhn():
        while True:
            d = rng.choice("3456") + digits(15)
            if not pii.luhn_ok(d):
                return " ".join(d[i:i + 4] for i in range(0, 16, 4))

    lookalikes = [
        lambda f: f"Your order A-{digits(6)} ships on {f.date()}",
        lambda f: f"Order #{digits(10)} was refunded",
        lambda f: f"invoice {digits(4)}-{digits(6)} is due on {f.date(pattern='%d/%m/%Y')}",
        lambda f: f"Reference 00 {digits(2)} {digits(2)} {digits(2)} {digits(2)}",
        lambda f: f"Reference number {digits(2)} {digits(2)} {digits(2)} {digits(2)} {digits(2)}",
        lambda f: f"primary key: customer_id_{rng.randint(2000, 2030)}",
        lambda f: f"The primary key: {f.word()}_id, sort key: created_at",
        lambda f: f"max_tokens: {rng.choice([256, 1024, 2048, 4096])}, temperature: 0.{rng.randint(0, 9)}",
        lambda f: f"upgrade to version {rng.randint(1, 20)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
        lambda f: f"Windows version 10.0.{digits(5)}.{digits(4)} is installed",
        lambda f: f"delivered on {f.iso8601()} for ${rng.randint(1, 9)},{digits(3)}.{digits(2)}",
        lambda f: f"meeting at {f.time()} on {f.date(pattern='%d.%m.%Y')}",
        lambda f: f"request {f.uuid4()} failed after {rng.randint(100, 9000)} ms",
        lambda f: f"commit {f.sha1()} fixed it",
        lambda f: f"ISBN 978-{digits(1)}-{digits(3)}-{digits(5)}-{digits(1)}",
        lambda f: f"tracking 1Z{_alnum(rng, 16, string.ascii_uppercase + string.digits)}",
        lambda f: f"epoch {rng.randint(1_600_000_000, 1_800_000_000)}, ms {rng.randint(1_600_000_000_000, 1_800_000_000_000)}",
        lambda f: f"growth of +{rng.randint(1, 9)}.{rng.randint(0, 9)}% to {rng.randint(1, 9)} {digits(3)} {digits(3)} users",
        lambda f: f"card ending in {digits(4)} was declined",
        lambda f: f"the number {not_luhn()} is not a valid card",
        lambda f: "the password is incorrect, please reset it",
        lambda f: "my password is not working since the update",
        lambda f: "password: required (at least 12 characters)",
        lambda f: "api_key: YOUR_API_KEY",
        lambda f: "set OPENAI_API_KEY=<your key> before running",
        lambda f: f"@{f.user_name()} said hi",
        lambda f: "retina image logo@2x.png",
        lambda f: "bearer tokens are sent in a header",
        lambda f: f"localhost:{rng.randint(1000, 9999)} and 127.0.0.1 are local",
        lambda f: f"MAC {f.mac_address()} registered",
        lambda f: f"coordinates {f.latitude()}, {f.longitude()}",
        lambda f: f"page {rng.randint(1, 99)} of {rng.randint(100, 400)}, chapter {rng.randint(1, 9)}.{rng.randint(1, 9)}",
        lambda f: f"Account ID {digits(12)} in region eu-west-1",
        lambda f: f"ticket {digits(8)} is closed",
        lambda f: f"std::vector<int> and a::b in C++ at 10:15:30",
        lambda f: f"It costs €{rng.randint(1, 9)}.{digits(3)},{digits(2)}",
        lambda f: f"IBAN DE00 {digits(4)} {digits(4)} {digits(4)} {digits(4)} {digits(2)} is a typo",
        lambda f: f"SKU {digits(3)}-{digits(2)}-{digits(4)} is sold out",
        lambda f: f"the key: {f.word()} is in the map",
        lambda f: f"session token expires in {rng.randint(5, 60)} minutes",
        lambda f: f"{f.word()}_token_count: {rng.randint(10, 999)}",
        lambda f: f"between {rng.randint(1000, 1999)} and {rng.randint(2000, 2099)} there were {digits(7)} visitors",
        lambda f: f"PO {digits(10)} approved",
        lambda f: f"{f.sentence()} ({rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d})",
    ]
    out = []
    for i in range(n):
        f = rng.choice(fakers)
        if i % 3 == 0:
            text = f.paragraph(nb_sentences=2)
        else:
            text = rng.choice(lookalikes)(f)
        out.append(Sample(text))
    return out


def generate(*, seed: int, per_type: int, ordinary: int) -> list[Sample]:
    """Return the labelled sentences (``per_type`` of each type, ``ordinary`` without PII)."""
    from faker import Faker

    rng = random.Random(seed)
    fakers = []
    for i, locale in enumerate(LOCALES):
        f = Faker(locale)
        f.seed_instance(seed + i)
        fakers.append(f)
    samples = (
        _emails(rng, fakers, per_type) + _phones(rng, per_type) + _cards(rng, fakers, per_type)
        + _ibans(rng, per_type) + _ssns(rng, fakers, per_type) + _ips(rng, fakers, per_type)
        + _secrets(rng, fakers, per_type) + _ordinary(rng, fakers, ordinary)
    )
    rng.shuffle(samples)
    return samples


def evaluate(samples: list[Sample]) -> tuple[dict, list[tuple[Sample, list[pii.Finding]]]]:
    """Return per-type metrics and the samples that went wrong (with their findings)."""
    hits = {t: 0 for t in pii.PII_TYPES}
    totals = {t: 0 for t in pii.PII_TYPES}
    found_of = {t: 0 for t in pii.PII_TYPES}
    right_of = {t: 0 for t in pii.PII_TYPES}
    ordinary = ordinary_flagged = 0
    wrong = []
    for sample in samples:
        findings = pii.find(sample.text)
        for f in findings:
            found_of[f.type] += 1
        if sample.kind is None:
            ordinary += 1
            if findings:
                ordinary_flagged += 1
                wrong.append((sample, findings))
            continue
        totals[sample.kind] += 1
        start = sample.text.index(sample.value)
        end = start + len(sample.value)
        covered = any(f.type == sample.kind and f.start <= start and f.end >= end for f in findings)
        hits[sample.kind] += covered
        for f in findings:
            # A finding is right when it is on the value (of its type) and not beyond it
            # by more than the token it belongs to.
            right_of[f.type] += f.type == sample.kind and f.start < end and f.end > start
        if not covered or any(f.type != sample.kind or f.end <= start or f.start >= end for f in findings):
            wrong.append((sample, findings))
    per_type = {
        t: {"n": totals[t], "recall": round(hits[t] / totals[t], 4) if totals[t] else None,
            "precision": round(right_of[t] / found_of[t], 4) if found_of[t] else None}
        for t in pii.PII_TYPES
    }
    metrics = {
        "per_type": per_type,
        "ordinary": ordinary,
        "false_positive_rate": round(ordinary_flagged / ordinary, 4) if ordinary else None,
        "min_recall": min(v["recall"] for v in per_type.values() if v["recall"] is not None),
    }
    return metrics, wrong


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks pii")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--per-type", type=int, default=800)
    parser.add_argument("--ordinary", type=int, default=2000)
    parser.add_argument("--show", type=int, default=0, help="print this many wrong samples to stderr")
    args = parser.parse_args(argv)
    say(f"generating {args.per_type} sentences per type and {args.ordinary} ordinary ones (seed {args.seed}) ...")
    samples = generate(seed=args.seed, per_type=args.per_type, ordinary=args.ordinary)
    pii.find("warm up 415-555-0132 sk_live_x")  # the lazy imports, outside the timing
    started = time.perf_counter()
    metrics, wrong = evaluate(samples)
    seconds = time.perf_counter() - started
    for sample, findings in wrong[: args.show]:
        say(f"{sample.kind}: {sample.value!r} in {sample.text!r} -> {[(f.type, f.value) for f in findings]}")
    return {
        "name": "pii",
        "rows": len(samples),
        "seconds": round(seconds, 2),
        "sentences_per_second": round(len(samples) / seconds),
        **metrics,
        "seed": args.seed,
        "peak_rss_mb": peak_rss_mb(),
    }
