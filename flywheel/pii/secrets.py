"""Secrets: API keys and tokens, private keys, passwords in URLs and assignments.

Key formats come from the plugins of detect-secrets (Yelp's maintained secret scanner),
read from the library itself (each plugin's ``denylist``), plus a few formats it does not
know (Hugging Face, npm, OpenAI project keys, Google API keys, bearer and basic
``Authorization`` values). A match is widened to the whole token: a key cut short by a
pattern of fixed length would leave its tail in clear.

``name = value`` assignments and "my password is ..." need their value to look like a
secret (and a name that is no database word: ``primary key: customer_id_2024`` is not).
"""

from __future__ import annotations

import base64
import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flywheel.pii._common import Finding, words_before

TYPE = "secret"

# Characters a token is made of, to widen a match to the whole token.
_TOKEN_CHARS_LEFT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_TOKEN_CHARS_RIGHT = _TOKEN_CHARS_LEFT | frozenset("+/=.~")


@dataclass(frozen=True)
class _Pattern:
    """A key format: ``regex`` finds it where one of the substrings ``hint`` occurs (and
    ``gate`` matches, when given); ``group`` is the part to redact; ``widen`` widens it
    to the whole token; ``accept`` validates the value."""

    regex: re.Pattern[str]
    hint: tuple[str, ...]
    group: int | str = 0
    widen: bool = True
    accept: Callable[[str], bool] | None = None
    gate: re.Pattern[str] | None = None


# Fast tests in front of library regexes that start with a repeat (``\d{8,10}``,
# ``[0-9a-z]{32}``), which ``re`` tries at every position, or whose hint is in most texts
# ("." for Discord): each matches wherever its regex does (a Telegram token has a digit
# before its ':', a Mailchimp key "-us" and a digit, a Discord token six token
# characters between two dots) and starts with a character, found by a fast scan. Keyed
# by the regex they were written for: a library regex that changes runs without one.
_LIBRARY_GATES = {
    r"\d{8,10}:[0-9A-Za-z_-]{35}": re.compile(r"\d:"),
    r"[0-9a-z]{32}-us[0-9]{1,2}": re.compile(r"-us[0-9]"),
    r"[MNO][a-zA-Z\d_-]{23,25}\.[a-zA-Z\d_-]{6}\.[a-zA-Z\d_-]{27}": re.compile(r"\.[a-zA-Z\d_-]{6}\."),
}


def _widen(text: str, start: int, end: int) -> tuple[int, int]:
    while start > 0 and text[start - 1] in _TOKEN_CHARS_LEFT:
        start -= 1
    while end < len(text) and text[end] in _TOKEN_CHARS_RIGHT:
        end += 1
    while end > start and text[end - 1] in ".=~+/" and text[end - 1] != "=":
        end -= 1  # a sentence's full stop is not part of the key ('=' padding is)
    return start, end


def _jwt_ok(token: str) -> bool:
    """A JSON Web Token: its header and payload decode to JSON (detect-secrets' test)."""
    from detect_secrets.plugins.jwt import JwtTokenDetector

    parts = token.split(".")
    return len(parts) >= 2 and JwtTokenDetector.is_formally_valid(".".join(parts[:3]))


@functools.cache
def _library_patterns() -> tuple[_Pattern, ...]:
    """The key formats of detect-secrets' plugins (imported on first use: ~0.1 s)."""
    from detect_secrets.plugins import (
        aws, azure_storage_key, basic_auth, discord, github_token, gitlab_token, jwt,
        mailchimp, npm, openai, pypi_token, sendgrid, slack, square_oauth, stripe,
        telegram_token, twilio,
    )

    def each(plugin, hint, **kw) -> list[_Pattern]:
        return [_Pattern(regex, hint, gate=_LIBRARY_GATES.get(regex.pattern), **kw) for regex in plugin.denylist]

    return tuple(
        [_Pattern(aws.AWSKeyDetector.denylist[0], ("A3T", "ABIA", "ACCA", "AKIA", "ASIA"))]
        + [_Pattern(aws.AWSKeyDetector.denylist[1], ("ws", "WS"), group=1, widen=False)]
        + each(azure_storage_key.AzureStorageKeyDetector, ("AccountKey=",))
        # postgres://user:password@host: the password only
        + each(basic_auth.BasicAuthDetector, ("://",), group=1, widen=False)
        + each(discord.DiscordBotTokenDetector, (".",))
        + each(github_token.GitHubTokenDetector, ("gh",))
        + each(gitlab_token.GitLabTokenDetector, ("gl", "GR1348941"))
        + each(jwt.JwtTokenDetector, ("eyJ",), accept=_jwt_ok)
        + each(mailchimp.MailchimpDetector, ("-us",))
        + each(npm.NpmDetector, ("_authToken",), group=1)
        + each(openai.OpenAIDetector, ("T3BlbkFJ",))
        + each(pypi_token.PypiTokenDetector, ("pypi-",))
        + each(sendgrid.SendGridDetector, ("SG.",))
        + each(slack.SlackDetector, ("xox", "XOX", "hooks.slack"))
        + each(square_oauth.SquareOAuthDetector, ("sq0csp-",))
        + each(stripe.StripeDetector, ("k_live_",))
        + each(telegram_token.TelegramBotTokenDetector, (":",))
        + each(twilio.TwilioKeyDetector, ("AC", "SK"))
    )


def _entropy(value: str) -> float:
    """Shannon entropy of the characters, in bits per character."""
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


_WORD_SEPARATORS = re.compile(r"[_.\-/]+")


def _looks_random(value: str) -> bool:
    """Whether a value looks like a key rather than words or an identifier: letters
    mixed with digits (or long), and not words joined by ``_``, ``-`` or ``.``
    (``customer_id_2024``, ``order-service-v2``)."""
    if not ((any(map(str.isdigit, value)) and any(map(str.isalpha, value))) or len(value) >= 32
            or (value != value.lower() and value != value.upper() and len(value) >= 16 and _entropy(value) >= 3.7)):
        return False
    # Random unless every piece between separators is a word in one case or a short number.
    for p in _WORD_SEPARATORS.split(value):
        if p and not (p.isalpha() and (p.islower() or p.isupper()) or (p.isdigit() and len(p) <= 4)):
            return True
    return False


# The prefix comes first and the "not inside a token" test just after it, as a lookbehind
# over the prefix too (``sk-(?<!X...sk-)`` matches where ``(?<!X)sk-`` does): a pattern that
# starts with a literal is searched for with a fast scan, one that starts with a
# lookbehind is tried at every position.
_OWN_PATTERNS = (
    # OpenAI sk-..., sk-proj-..., Anthropic sk-ant-...
    _Pattern(re.compile(r"sk-(?<![A-Za-z0-9_-]sk-)[A-Za-z0-9_-]{20,}"), ("sk-",), accept=_looks_random),
    _Pattern(re.compile(r"github_pat_(?<![A-Za-z0-9_]github_pat_)[A-Za-z0-9_]{22,}"), ("github_pat_",)),
    _Pattern(re.compile(r"AIza(?<![A-Za-z0-9_-]AIza)[0-9A-Za-z_-]{35}"), ("AIza",)),
    # Hugging Face user access tokens and npm access tokens
    _Pattern(re.compile(r"hf_(?<![A-Za-z0-9_]hf_)[A-Za-z0-9]{30,}"), ("hf_",)),
    _Pattern(re.compile(r"npm_(?<![A-Za-z0-9_]npm_)[A-Za-z0-9]{36}"), ("npm_",)),
    # Authorization: Bearer <token> / Basic <base64>
    _Pattern(re.compile(r"(?:Bearer|bearer|BEARER)[ \t]+(?P<v>[A-Za-z0-9._~+/=-]{20,})"),
             ("earer", "EARER"), group="v", accept=_looks_random),
    _Pattern(re.compile(r"(?:Basic|basic|BASIC)[ \t]+(?P<v>[A-Za-z0-9+/]{12,}={0,2})(?![A-Za-z0-9+/=])"),
             ("asic", "ASIC"), group="v", widen=False, accept=lambda v: _base64_pair(v)),
)


def _base64_pair(value: str) -> bool:
    """Basic credentials: base64 of ``user:password``."""
    try:
        return ":" in base64.b64decode(value + "=" * (-len(value) % 4)).decode("utf-8")
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------
# PEM private keys: the whole block, from BEGIN to END (or to the end of the base64 body)
# ---------------------------------------------------------------------------------------

_PEM = re.compile(
    r"(?:-----)?BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?(?:-----)?"
    r"(?:[A-Za-z0-9+/=\s\\:,-]*?-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\:,-]*)"
)
_PUTTY = re.compile(r"PuTTY-User-Key-File-\d:.*?(?:Private-MAC: ?[0-9a-f]+|$)", re.DOTALL)


def _find_private_keys(text: str) -> Iterator[Finding]:
    if "PRIVATE KEY" in text:
        for m in _PEM.finditer(text):
            start = text.rfind("-----", max(0, m.start() - 5), m.start() + 5)
            start = m.start() if start < 0 else min(start, m.start())
            end = m.end()
            while end > start and text[end - 1] in " \t\r\n\\":
                end -= 1
            yield Finding(TYPE, start, end, text[start:end])
    if "PuTTY-User-Key-File-" in text:
        for m in _PUTTY.finditer(text):
            yield Finding(TYPE, m.start(), m.end(), m.group())


# ---------------------------------------------------------------------------------------
# `name = value` assignments and "my password is ..."
# ---------------------------------------------------------------------------------------

# A name ends in one of these (OPENAI_API_KEY, db_password, client-secret, "token").
_SECRET_NAMES = ("key", "secret", "token", "passwd", "password", "pwd", "pass", "passphrase",
                 "credential", "credentials", "apikey")
_PASSWORD_NAMES = frozenset({"passwd", "password", "pwd", "pass", "passphrase"})
# `primary key: customer_id`: a key of a table, a map or a cache is no secret.
_NOT_SECRET_KEYS = frozenset({
    "primary", "foreign", "sort", "partition", "composite", "unique", "hash", "range", "cache",
    "dict", "map", "lookup", "join", "group", "public", "shard", "idempotency", "sorting",
    "index", "row", "natural", "surrogate", "candidate", "compound", "music", "keyboard",
    "hot", "shortcut", "key", "the", "a", "an",
})
# The regex starts at the name's last word (the rest of the name is read backwards in
# Python: a pattern that starts with a lazy run of name characters is slow on long texts).
_NAME = r"(?P<name>(?i:" + "|".join(sorted(_SECRET_NAMES, key=len, reverse=True)) + r"))"
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def _name_start(text: str, end: int) -> int:
    """Return where the name that ends at ``end`` starts."""
    while end > 0 and text[end - 1] in _NAME_CHARS:
        end -= 1
    return end
_ASSIGNMENT = re.compile(
    _NAME + r"[\"']?[ \t]*(?::=|=>|[:=])[ \t]*"
    r"(?:(?P<q>[\"'`])(?P<qv>[^\"'`\n]{4,200}?)(?P=q)|(?P<v>[^\s\"'`,;<>]{6,}))"
)
_PHRASE = re.compile(
    r"(?i:(?P<name>password|passwd|passcode|passphrase|pwd|pin|pin code|secret|api key|token))"
    r"[ \t]+(?i:is|was|=|:)[ \t]+(?:(?P<q>[\"'`])(?P<qv>[^\"'`\n]{4,100}?)(?P=q)|(?P<v>[^\s\"'`,;]{4,}))"
)
# Words that say something about a password rather than being one.
_NOT_VALUES = frozenset({
    "none", "null", "nil", "empty", "required", "optional", "incorrect", "invalid", "wrong",
    "expired", "missing", "correct", "changed", "reset", "blank", "hidden", "redacted",
    "masked", "unknown", "unset", "true", "false", "****", "********", "xxxx", "string",
    "your_password", "<password>", "password", "secret", "token", "example", "placeholder",
})


def _value_end(value: str, before: str) -> str:
    """An unquoted value without the sentence's punctuation, or a closing bracket of the
    code around it (``before``: the text before the assignment)."""
    value = value.rstrip(".,;:")
    for opening, closing in ("()", "[]", "{}"):
        if before.count(opening) > before.count(closing):
            while value.endswith(closing) and value.count(closing) > value.count(opening):
                value = value[:-1]
    return value


def _password_like(value: str) -> bool:
    """A value said to be a password: not a word about it, and more than plain lower-case
    letters (mixed case, a digit or a symbol)."""
    if value.lower() in _NOT_VALUES or set(value) <= set("*x•.#-_"):
        return False
    return not (value.isalpha() and value.islower())


# Every name of an assignment or a phrase contains one of these (found with str.find:
# a regex that starts with a case-insensitive alternation is slow on long texts).
_STEMS = ("key", "secret", "token", "pass", "pwd", "credential", "pin")


def _stem_positions(lowered: str) -> list[tuple[int, str]]:
    """Return where the stems occur in ``lowered``, each with its stem."""
    found = []
    for stem in _STEMS:
        i = lowered.find(stem)
        while i >= 0:
            found.append((i, stem))
            i = lowered.find(stem, i + 1)
    return found


# The stems that begin a name of each regex (assignments have no "pin", phrases no
# "key" or "credential"), and the prefix of the one name that does not begin with its
# stem: "apikey" and "api key".
_ASSIGNMENT_STARTS = ({"key", "secret", "token", "pass", "pwd", "credential"}, "api")
_PHRASE_STARTS = ({"pass", "pwd", "pin", "secret", "token"}, "api ")


def _matches_at_stems(regex: re.Pattern[str], text: str, lowered: str, stems: list[tuple[int, str]], *,
                      back: int, starts_of_names: tuple[set[str], str]) -> list[re.Match[str]]:
    """Return the matches of ``regex`` that start at a stem (or up to ``back`` characters
    before one), left to right, without overlaps; ``stems`` are the stems' positions in
    ``lowered`` (``text.lower()``).

    In an ASCII text only the positions where one of the regex's names can start are
    tried (``starts_of_names``: the stems that begin them, and the prefix "api" of a
    name that ends in "key"): there ``lower()`` keeps every position and the regex's
    case-insensitive names match only what ``lower()`` turns into a name, so the other
    positions of the window cannot match, and skipping them yields the same matches.
    Otherwise (``lower()`` may move positions, as for "İ", and ``re`` takes "ſ" for an
    "s") the whole window is tried.
    """
    # (plain loops: this runs for most texts, comprehensions cost more than they do here)
    starts = []
    if text.isascii():
        first_stems, api = starts_of_names
        for i, stem in stems:
            if stem in first_stems:
                starts.append(i)
            if stem == "key" and i >= len(api) and lowered.startswith(api, i - len(api)):
                starts.append(i - len(api))
    else:
        for i, _ in stems:
            starts.extend(range(max(0, i - back), i + 1))
    if len(starts) > 1:
        starts = sorted(set(starts))
    matches = []
    end = 0
    for start in starts:
        if start < end:
            continue
        m = regex.match(text, start)
        if m is not None:
            end = m.end()
            matches.append(m)
    return matches


def _find_assignments(text: str) -> Iterator[Finding]:
    lowered = text.lower()
    stems = _stem_positions(lowered)
    if not stems:
        return  # every name holds a stem: nothing to match
    if "=" in text or ":" in text:
        for m in _matches_at_stems(_ASSIGNMENT, text, lowered, stems, back=6,
                                   starts_of_names=_ASSIGNMENT_STARTS):
            name_start = _name_start(text, m.start("name"))
            name = text[name_start : m.end("name")].lower()
            quoted = m.group("qv") is not None
            group = "qv" if quoted else "v"
            value = m.group(group) if quoted else _value_end(m.group("v"), text[: m.start()])
            start = m.start(group)
            end = start + len(value)
            password = any(name.endswith(n) for n in _PASSWORD_NAMES)
            before = words_before(text, name_start, count=1)
            if name in ("key", "token", "secret") and before and before[0] in _NOT_SECRET_KEYS:
                continue
            if password:
                ok = _password_like(value) and (quoted or len(value) >= 6)
            else:
                ok = len(value) >= 12 and _looks_random(value) or (quoted and len(value) >= 8 and _looks_random(value))
            if ok:
                yield Finding(TYPE, start, end, value)
    for m in _matches_at_stems(_PHRASE, text, lowered, stems, back=4, starts_of_names=_PHRASE_STARTS):
        quoted = m.group("qv") is not None
        group = "qv" if quoted else "v"
        value = m.group(group) if quoted else _value_end(m.group("v"), text[: m.start()])
        name = m.group("name").lower()
        if name in ("secret", "api key", "token"):
            ok = _looks_random(value) and len(value) >= 12
        else:
            ok = _password_like(value) or (quoted and value.lower() not in _NOT_VALUES)
        if ok:
            start = m.start(group)
            yield Finding(TYPE, start, start + len(value), value)


# Hints that hold one of these characters are looked for only where it occurs: one test
# for the group instead of one per hint (rare characters in prose; each ``in`` costs about
# the same on a short text, the call more than the scan).
_HINT_GROUP_CHARACTERS = ("_", ":", "-", "J", "G", "X", "S", "A")


@functools.cache
def _hint_groups() -> tuple[tuple[str | None, tuple[tuple[int, tuple[_Pattern, ...], str], ...]], ...]:
    """The hints, each with its rank (the order of the patterns, :func:`find` keeps it) and
    the patterns it lets through, grouped by the first character of
    :data:`_HINT_GROUP_CHARACTERS` they hold (None: no such character)."""
    by_hint: dict[str, list[_Pattern]] = {}
    for pattern in (*_library_patterns(), *_OWN_PATTERNS):
        for hint in pattern.hint:
            by_hint.setdefault(hint, []).append(pattern)
    groups: dict[str | None, list] = {}
    for rank, (hint, patterns) in enumerate(by_hint.items()):
        character = next((c for c in _HINT_GROUP_CHARACTERS if c in hint), None)
        groups.setdefault(character, []).append((rank, tuple(patterns), hint))
    return tuple((character, tuple(members)) for character, members in groups.items())


def find(text: str) -> Iterator[Finding]:
    """Yield the secrets in ``text`` (they may overlap; the caller resolves overlaps)."""
    # Each hint looked for once (a group's hints only where its character occurs); the
    # patterns of the hints present run once each, in the order of the hints.
    present = [(rank, patterns) for character, members in _hint_groups()
               if character is None or character in text
               for rank, patterns, hint in members if hint in text]
    present.sort(key=lambda item: item[0])
    candidates: dict[int, _Pattern] = {}
    for _, patterns in present:
        for p in patterns:
            candidates.setdefault(id(p), p)
    for pattern in candidates.values():
        if pattern.gate is not None and pattern.gate.search(text) is None:
            continue
        for m in pattern.regex.finditer(text):
            start, end = m.span(pattern.group)
            if start < 0 or start == end:
                continue
            if pattern.widen:
                start, end = _widen(text, start, end)
            value = text[start:end]
            if pattern.accept is None or pattern.accept(value):
                yield Finding(TYPE, start, end, value)
    yield from _find_private_keys(text)
    yield from _find_assignments(text)


# The RE2 prefilter branches (a superset of every pattern above), valid on decoded text
# and on JSON text (a quote may be escaped there, a slash written \/).
PREFILTER = "|".join((
    r"(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}",
    r"(?i:aws)[^\n]{0,20}(?i:key|pwd|pw|pass|token)",
    r"AccountKey=",
    r":(?:\\?/){2}[^\s@]*:[^\s@]*@",
    r"[MNO][a-zA-Z0-9_-]{23,25}\.[a-zA-Z0-9_-]{6}\.",
    r"gh[pousr]_", r"github_pat_",
    r"gl(?:pat|dt|ft|soat|rt|cbt|imt|ptt|agent|oas)-", r"GR1348941",
    r"eyJ[A-Za-z0-9_=-]+\.",
    r"-us[0-9]",  # Mailchimp (its 32 characters before: a costly DFA)
    r"_authToken",
    r"T3BlbkFJ",
    r"pypi-",
    r"SG\.[a-zA-Z0-9_-]{22}\.",
    r"(?i:xox[a-z]-)", r"(?i:hooks\.slack\.com)",
    r"sq0csp-",
    r"[rs]k_live_",
    r"[0-9]{8,10}:[0-9A-Za-z_-]{35}",
    r"(?:AC|SK)[a-z0-9]{32}",
    r"sk-[A-Za-z0-9_-]{20}",
    r"AIza[0-9A-Za-z_-]{35}",
    r"hf_[A-Za-z0-9]{30}",
    r"npm_[A-Za-z0-9]{36}",
    r"(?:Bearer|bearer|BEARER|Basic|basic|BASIC)(?:[ \t]|\\t)",
    r"PRIVATE KEY", r"PuTTY-User-Key-File-",
    r"(?i:key|secret|token|passwd|password|pwd|pass|passphrase|credentials?)(?:\\?[\"'])?(?:[ \t]|\\t)*[:=]",
    # "my password is ...": a quoted value, or one with more than lower-case letters
    r"(?i:password|passwd|passcode|passphrase|pwd|pin|pin code|secret|api key|token)(?:[ \t]|\\t)+(?i:is|was|=|:)"
    r"(?:[ \t]|\\t)+(?:[\"'`]|[^\s\"'`,;]*[^a-z\s\"'`,;])",
))
