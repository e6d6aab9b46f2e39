"""A synthetic production stream of "Acme", a company assistant, for trying flywheel.

:func:`generate` writes, for each day of a :class:`DemoSpec`, the logs an LLM application
would leave behind (``home/landing/YYYY-MM-DD/``), the human labels of a sample of them
(``home/annotations/inbox/``) and the ground truth (``home/demo/truth-YYYY-MM-DD.parquet``,
outside the landing folder so that it is never ingested).

Every source of the application is written in a different log format, so that every
format flywheel reads appears every day:

=================  =========================  ===============================================
source             file                       format
=================  =========================  ===============================================
web-chat           web-chat.jsonl             canonical JSON lines (+ the bad records, and
                                              exact duplicates of the previous day's records)
docs-assistant     docs-assistant.jsonl.gz    canonical JSON lines, gzipped
api                api.parquet                canonical Parquet (tags list, metadata JSON)
partner            partner.csv                canonical CSV (tags and metadata as JSON text)
mobile             mobile-openai.jsonl        OpenAI request/response log lines
batch-reports      batch-input.jsonl,         OpenAI Batch API input and output files
                   batch-output.jsonl
support-bot        support-bot-otel.jsonl     OTLP/JSON GenAI spans (+ plain HTTP spans)
intranet           langfuse-traces.json       Langfuse trace export
=================  =========================  ===============================================

Log ids, as the ingestion sees them (and as the truth records them): canonical formats
``<source>-YYYYMMDD-000123``; OpenAI logs and Batch output ``response(.body).id`` =
``chatcmpl-<24 hex>``; OpenTelemetry the LLM span's ``spanId`` (16 hex); Langfuse the
trace ``id`` (a UUID). Hex ids come from a bijective mix of (day, source, row), so they
are unique by construction and identical for the same seed.

Content is drawn from a small knowledge base of Acme's help center (eight topics, each
with a few intents, fixed facts, query templates with slots, and answer templates).
A grounded answer restates the retrieved passages; a hallucinated one changes or invents
numbers, names and policies; an off-topic one deflects or answers another question.
The rates are calibrated per day so that the overall shares match the spec, while the
slices in :data:`PLANTED_SLICES` are clearly worse.

What the ingestion must cope with, all counted in the summary (``demo/summary.json``):
``web-chat.jsonl`` holds about 0.3% of the day's rows (at least one of each kind) of
malformed lines that must be rejected (:data:`BAD_RECORD_KINDS`: a line cut short, no
``input``, ``latency_ms`` not a number, an unparseable ``ts``, an empty ``output``), and
from the second day on starts with exact copies of the previous day's first records
(same log ids). About 2% of inputs carry personal data (an e-mail address, a phone
number, a Luhn-valid test card number or an ``sk-`` API key).

The truth file has one row per good record: ``log_id, day, source, topic, model,
prompt_version, user_id, hallucinated, off_topic, planted`` (names of the planted slices
the row is in), ``pii`` (the kind of personal data in the input, or null) and
``feedback`` (as the format carries it). Ids and values are the ones ingestion reads:
OpenAI logs and Batch requests carry ``prompt_name``, ``prompt_version``, ``git_commit``
and ``session_id`` in the request's ``metadata`` and the user in ``user``; spans carry
them as attributes; Langfuse traces link a prompt by name and integer version, so the
intranet's prompt versions are ``"11"``, ``"12"``, ``"13"`` (see :data:`PLANTED_SLICES`);
Langfuse thumbs are BOOLEAN ``user-feedback`` scores (1 up, 0 down), read as 1 and -1. The inbox gets, per day, ``labels-DAY.csv`` (canonical),
``label-studio-DAY.json``, ``argilla-DAY.jsonl`` and ``langfuse-scores-DAY.csv`` with
``hallucination`` and ``relevance`` labels of about 8% of the day's records, some by 2 or
3 annotators, with a few percent of annotator errors.

Everything is streamed in chunks of :data:`CHUNK_ROWS` rows, so memory does not grow
with the number of rows, and the same spec always gives byte-identical files.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import gzip
import io
import json
import math
import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

CHUNK_ROWS = 10_000

# ---------------------------------------------------------------------------------------
# The planted ground truth
# ---------------------------------------------------------------------------------------

PLANTED_SLICES: dict[str, dict[str, dict[str, float]]] = {
    "source": {"mobile": {"hallucination": 3.0, "off_topic": 1.0}},
    "prompt_version": {"v13": {"hallucination": 3.0, "off_topic": 1.0}},
    "topic": {"warranty": {"hallucination": 3.0, "off_topic": 1.0}},
    "keyword": {"refund": {"hallucination": 2.5, "off_topic": 1.0}},
    "model": {"llama-3.1-70b-instruct": {"hallucination": 1.0, "off_topic": 3.0}},
}
"""The slices that are planted to be bad: ``{dimension: {value: multipliers}}``.

A row belongs to a planted slice when its ``source``, ``prompt_version``, ``topic`` or
``model`` equals the value, or (dimension ``keyword``) when its input contains the
keyword, case-insensitively. The multipliers scale the baseline probability of a
hallucinated answer (``hallucination``) and of an off-topic answer (``off_topic``); a row
in several planted slices gets the largest multiplier of each kind, not the product.
The baselines are calibrated per day so that the overall shares equal
``DemoSpec.hallucination_rate`` and ``DemoSpec.off_topic_rate``. With the defaults the
baseline hallucination rate (rows in no planted slice) is about 5%, and it is about 15%
in ``source=mobile``, ``prompt_version=v13`` (a prompt that asks for confident, short
answers, rolled out over the days) and ``topic=warranty``, and about 12% in
``keyword=refund``; ``model=llama-3.1-70b-instruct`` answers off topic about 3x as often.

Slices are defined on the values as ingested (and as the truth records them). The
``intranet`` source logs to Langfuse, whose prompt management numbers versions: its
prompt versions are ``"11"``, ``"12"`` and ``"13"``, not ``v11``-``v13``, so its rows are
never in ``prompt_version=v13`` and get no prompt-version multiplier (the ``"13"`` rows
are not planted). The ``v13`` slice is every other source's ``v13`` rows, in all their
formats (canonical files, OpenAI ``request.metadata``, span attributes).

Negative feedback follows from the answers: a hallucinated or off-topic answer gets -1
with probability 0.30, a good one with 0.03, so the planted slices also have about 2-3x
the share of -1 feedback. The truth file lists, per row, the names of the planted slices
it belongs to, as ``"dimension=value"`` (e.g. ``"keyword=refund"``).
"""

# ---------------------------------------------------------------------------------------
# The knowledge base: topics, intents, facts and templates
# ---------------------------------------------------------------------------------------
# Each intent has entities (the fixed facts of the help center), "alts" (plausible wrong
# values a hallucination uses as x_<key>), passages (the first is the one that answers),
# queries (slots: the entity's facts and the row slots {order} {date} {amount} {name}
# {n}; words after "||" only help pair the query with the answers that address it),
# grounded answers (facts from the passages only) and hallucinated answers (x_ facts
# that are not in the context, or contradictions of it). A key written with a capital
# first letter ({Kind}) is the value with a capital first letter.

_KB: dict[str, list[dict]] = {
    "billing": [
        {
            "entities": [
                {"plan": "Starter", "price": "$9", "annual": "$90", "seats": "3", "trial": "14"},
                {"plan": "Team", "price": "$19", "annual": "$190", "seats": "25", "trial": "14"},
                {"plan": "Business", "price": "$39", "annual": "$390", "seats": "100", "trial": "30"},
                {"plan": "Enterprise", "price": "$79", "annual": "$790", "seats": "1,000", "trial": "30"},
            ],
            "alts": {
                "price": ["$12", "$15", "$24", "$29", "$49", "$59"],
                "annual": ["$99", "$120", "$240", "$490", "$1,200"],
                "seats": ["5", "10", "50", "250", "500"],
                "trial": ["7", "21", "45", "60"],
            },
            "passages": [
                "[kb/billing/{slug}-plan] The {plan} plan costs {price} per user per month, or {annual} per user per year with annual billing. It includes up to {seats} seats and starts with a {trial}-day free trial; no credit card is needed during the trial.",
                "[kb/billing/plan-changes] Upgrades from the {plan} plan take effect immediately and the price difference is prorated on the next invoice. Downgrades apply at the end of the current billing period.",
            ],
            "queries": [
                "How much does the {plan} plan cost?",
                "what's the yearly price for {plan}||{annual} annually",
                "How many users can we add on the {plan} plan?||{seats} seats",
                "Is there a free trial for {plan}, and do I need a credit card?",
                "We're on {plan} with {n} people. What will we pay per month?",
                "Hi, {name} here. I was billed {amount} on {date} - is that the normal {plan} price?",
                "If we upgrade from {plan} in the middle of the month, how is it billed?||upgrade upgrades prorated",
            ],
            "grounded": [
                "The {plan} plan is {price} per user per month, or {annual} per user per year if you pay annually. It covers up to {seats} seats.",
                "On {plan} you pay {price} per user each month ({annual} per user per year on annual billing), with room for up to {seats} seats. New workspaces also get a {trial}-day free trial, no card required.",
                "{plan} includes up to {seats} seats. Pricing is {price}/user/month, or {annual}/user/year billed annually. If you upgrade mid-cycle, the difference is prorated on your next invoice.",
                "You can try {plan} free for {trial} days without a credit card. After the trial it's {price} per user per month.",
            ],
            "hallucinated": [
                "The {plan} plan is {x_price} per user per month, or {x_annual} per user per year with annual billing, and it covers up to {x_seats} seats.",
                "{plan} costs {price} per user per month, and annual billing gives you {x_trial} days free plus unlimited seats.",
                "You get a {x_trial}-day free trial on {plan}; after that it's {x_price}/user/month and seats are capped at {x_seats}.",
                "{plan} is a flat {x_annual} per year for the whole team, no matter how many users you add.",
                "Upgrades from {plan} are billed in full right away with no proration, and the new price of {x_price} per user applies from the next day.",
            ],
        },
        {
            "entities": [
                {"method": "credit card", "retries": "3", "retry_gap": "3", "grace": "14"},
                {"method": "PayPal", "retries": "2", "retry_gap": "5", "grace": "10"},
                {"method": "SEPA direct debit", "retries": "2", "retry_gap": "4", "grace": "14"},
            ],
            "alts": {
                "retries": ["1", "4", "5"],
                "retry_gap": ["1", "2", "7"],
                "grace": ["3", "5", "21", "30"],
                "fee": ["$25", "$15", "$40"],
            },
            "passages": [
                "[kb/billing/failed-payments-{slug}] If a {method} payment fails, Acme retries it {retries} times, every {retry_gap} days. The workspace stays fully active during a {grace}-day grace period and is then switched to read-only until the balance is paid. No data is deleted.",
                "[kb/billing/payment-methods] Acme accepts credit card, PayPal and SEPA direct debit. Payment details can be updated at any time under Settings > Billing > Payment method.",
            ],
            "queries": [
                "My {method} payment failed. What happens now?",
                "our {method} got declined on {date}, will we lose access??",
                "How many times do you retry a failed {method} charge?",
                "How long until the workspace is locked if the {method} payment doesn't go through?",
                "Can I switch from {method} to another payment method after a failed charge?",
            ],
            "grounded": [
                "If a {method} payment fails we retry it {retries} times, {retry_gap} days apart. Your workspace stays fully active for a {grace}-day grace period; after that it becomes read-only until the balance is paid.",
                "Nothing is lost right away: there's a {grace}-day grace period during which everything keeps working, and we retry the {method} charge {retries} times. You can update the payment method under Settings > Billing > Payment method.",
                "We'll retry the charge {retries} times, every {retry_gap} days. After the {grace}-day grace period the workspace switches to read-only, but none of your data is deleted.",
            ],
            "hallucinated": [
                "A failed {method} payment is retried {x_retries} times and the workspace is suspended after {x_grace} days. A late fee of {x_fee} is added to your next invoice.",
                "If the {method} charge fails, the workspace is locked immediately and your data is deleted after {x_grace} days unless the balance is paid.",
                "We retry {method} payments every {x_retry_gap} days for up to {x_grace} days; after that the account is passed to our collections partner, Meridian Recovery.",
                "We retry the charge {retries} times, every {retry_gap} days, and you keep full access for {x_grace} days. Paying with {method} again within that time also waives the {x_fee} reactivation fee.",
            ],
        },
    ],
    "refunds": [
        {
            "entities": [
                {"kind": "hardware", "window": "30", "processing": "7", "fee": "15%"},
                {"kind": "accessories", "window": "60", "processing": "5", "fee": "10%"},
                {"kind": "refurbished devices", "window": "14", "processing": "10", "fee": "20%"},
            ],
            "alts": {
                "window": ["7", "45", "90", "120"],
                "processing": ["2", "3", "14", "21"],
                "fee": ["5%", "25%", "30%"],
                "credit": ["$20", "$25", "$50"],
            },
            "passages": [
                "[kb/refunds/{slug}] {Kind} can be returned within {window} days of delivery for a refund to the original payment method. Opened items are subject to a {fee} restocking fee. Refunds are issued within {processing} business days after the return arrives at our Reno warehouse.",
                "[kb/refunds/how-to-return] To start a return, open Orders, choose the order and click Request return. A prepaid shipping label is emailed within 24 hours.",
            ],
            "queries": [
                "How do I get a refund for order {order}?",
                "Can I still return the {kind} from order {order}? It arrived on {date}.",
                "how long does a refund take to show up on my card||issued {processing} business days",
                "Is there a restocking fee if I send back opened {kind}?",
                "I want a refund for {kind} I bought {n} days ago",
                "What's your refund policy for {kind}?",
                "I'd like to send back {kind} from order {order}, how does that work?",
            ],
            "grounded": [
                "{Kind} can be returned within {window} days of delivery. Once the return reaches our warehouse, the refund goes back to your original payment method within {processing} business days.",
                "Yes, as long as it's within {window} days of delivery. Opened {kind} carry a {fee} restocking fee. Open Orders, select order {order} and click Request return; a prepaid label arrives by email within 24 hours.",
                "Refunds for {kind} are issued to the original payment method within {processing} business days after we receive the item. Keep in mind the {fee} restocking fee for opened items.",
                "You have {window} days from delivery to return {kind}. Start it from Orders > Request return and we'll email you a prepaid label.",
            ],
            "hallucinated": [
                "You can return {kind} within {x_window} days for a full refund with no restocking fee, and the money is back on your card within {x_processing} hours.",
                "Refunds for {kind} are paid out as store credit only, within {x_processing} business days. Returns are accepted for {x_window} days.",
                "Order {order} qualifies for an instant refund of the full amount plus a {x_credit} goodwill credit, and you don't need to send anything back.",
                "{Kind} can be returned within {window} days, but the restocking fee is {x_fee} and return shipping is charged to you.",
                "Since {kind} are final sale after {x_window} days, we can't take back order {order}, but we can offer {x_credit} off your next purchase.",
            ],
        },
        {
            "entities": [
                {"sub": "annual subscriptions", "sub_short": "annual", "sub_window": "30", "sub_form": "a prorated refund for the unused full months", "sub_processing": "10"},
                {"sub": "monthly subscriptions", "sub_short": "monthly", "sub_window": "7", "sub_form": "a full refund of the last charge", "sub_processing": "5"},
            ],
            "alts": {
                "sub_window": ["14", "45", "60", "90"],
                "sub_form": ["a full refund of the whole year", "account credit only", "a 50% refund"],
                "sub_processing": ["1", "3", "20", "30"],
            },
            "passages": [
                "[kb/refunds/subscriptions-{slug}] {Sub} can be cancelled within {sub_window} days of the renewal date for {sub_form}. Refunds are processed within {sub_processing} business days; cancellations after that window take effect at the end of the term.",
                "[kb/refunds/cancel] Workspace owners cancel under Settings > Billing > Cancel subscription. Only owners can request subscription refunds.",
            ],
            "queries": [
                "Can I get a refund on our {sub_short} renewal from {date}?",
                "We renewed the {sub_short} plan by mistake. Is it refundable?",
                "How do I cancel and get my money back for the {sub_short} subscription?",
                "how long do refunds for {sub} take",
                "I'm not the owner of the workspace, can I cancel our {sub_short} plan?",
            ],
            "grounded": [
                "{Sub} can be cancelled within {sub_window} days of the renewal date, and you'll get {sub_form}. The refund is processed within {sub_processing} business days.",
                "Yes. Since it's a {sub_short} subscription, cancelling within {sub_window} days of renewal gets you {sub_form}. The workspace owner can do this under Settings > Billing > Cancel subscription.",
                "Refunds for {sub} take up to {sub_processing} business days. After the {sub_window}-day window, cancelling only stops the next renewal.",
            ],
            "hallucinated": [
                "{Sub} can be cancelled within {x_sub_window} days of renewal for {x_sub_form}, and the money arrives within {x_sub_processing} business days.",
                "Renewals of {sub} are non-refundable, but any admin can pause the subscription for up to {x_sub_window} days.",
                "Yes - any member of the workspace can cancel, and you'll receive {x_sub_form} within {x_sub_processing} days.",
            ],
        },
    ],
    "shipping": [
        {
            "entities": [
                {"method": "Standard", "days": "3-5 business days", "cost": "$4.99", "free_over": "$50", "carrier": "USPS", "cutoff": "5 pm ET"},
                {"method": "Express", "days": "1-2 business days", "cost": "$14.99", "free_over": "$150", "carrier": "UPS", "cutoff": "3 pm ET"},
                {"method": "Overnight", "days": "1 business day", "cost": "$29.99", "free_over": "$500", "carrier": "FedEx", "cutoff": "1 pm ET"},
                {"method": "International", "days": "7-14 business days", "cost": "$24.99", "free_over": "$300", "carrier": "DHL", "cutoff": "12 pm ET"},
            ],
            "alts": {
                "days": ["2-3 business days", "5-7 business days", "same day", "10-15 business days"],
                "cost": ["$2.99", "$9.99", "$19.99", "$39.99"],
                "free_over": ["$25", "$75", "$100", "$250"],
                "carrier": ["Aramex", "OnTrac", "Royal Mail", "Purolator"],
                "cutoff": ["10 am ET", "4 pm ET", "8 pm ET", "midnight"],
            },
            "passages": [
                "[kb/shipping/{slug}] {method} shipping takes {days} with {carrier} and costs {cost}; it is free on orders over {free_over}. Orders placed before {cutoff} on a business day ship the same day.",
                "[kb/shipping/tracking] Tracking links are emailed when the order leaves the warehouse in Reno, Nevada. Delivery estimates exclude weekends and public holidays.",
            ],
            "queries": [
                "When will order {order} arrive? I chose {method} shipping.",
                "how much is {method} shipping?",
                "Which carrier do you use for {method} delivery?",
                "If I place an order this afternoon with {method}, does it ship today?||{cutoff} same",
                "Is {method} shipping free if my cart is {amount}?||{free_over} {cost}",
                "I ordered on {date} with {method} delivery, shouldn't it be here by now?||{days} takes",
            ],
            "grounded": [
                "{method} shipping takes {days} with {carrier} and costs {cost}, or nothing on orders over {free_over}. Orders placed before {cutoff} ship the same business day.",
                "Order {order} ships with {carrier}; {method} delivery takes {days} once it leaves the warehouse. If you ordered before {cutoff}, it went out the same day.",
                "{method} is {cost}, and it's free once your order is over {free_over}. Delivery takes {days}, not counting weekends or holidays.",
                "We use {carrier} for {method} shipments. Expect {days}; you'll get a tracking link by email as soon as it ships.",
            ],
            "hallucinated": [
                "{method} shipping takes {x_days} with {x_carrier} and costs {x_cost}. Orders placed before {x_cutoff} ship the same day.",
                "Order {order} is already out for delivery with {x_carrier} and will arrive tomorrow before {x_cutoff}.",
                "{method} shipping is always free, and delivery is guaranteed within {x_days} or we pay back the shipping cost.",
                "{method} costs {cost} with {carrier}, but it's free on every order over {x_free_over} and arrives in {x_days}, weekends included.",
            ],
        },
        {
            "entities": [{"claim_days": "10", "reship_days": "2", "tracking_hours": "24"}],
            "alts": {
                "claim_days": ["3", "5", "21", "30"],
                "reship_days": ["1", "5", "7"],
                "tracking_hours": ["6", "12", "48", "72"],
                "credit": ["$10", "$20", "$25"],
            },
            "passages": [
                "[kb/shipping/lost-packages] Tracking numbers are emailed within {tracking_hours} hours of dispatch. If a package shows no tracking movement for {claim_days} days, contact support to open a carrier claim; a replacement ships within {reship_days} business days of the claim.",
                "[kb/shipping/delivered-not-received] If tracking says delivered but the parcel is missing, check with neighbours and your building's mailroom first, then contact support within 7 days of the delivery date.",
            ],
            "queries": [
                "My package {order} hasn't moved in a week, what should I do?",
                "I never got a tracking number for order {order}",
                "order {order} says delivered but it's not here",
                "how long before I can report a lost parcel? ordered {date}",
            ],
            "grounded": [
                "If tracking for {order} hasn't moved for {claim_days} days, contact support and we'll open a carrier claim; the replacement ships within {reship_days} business days of the claim.",
                "Tracking numbers are emailed within {tracking_hours} hours of dispatch, so check your spam folder too. If there's still no movement after {claim_days} days, we'll open a claim with the carrier.",
                "Please check with neighbours and your building's mailroom first. If it's still missing, contact support within 7 days of the delivery date and we'll open a claim; replacements go out within {reship_days} business days.",
            ],
            "hallucinated": [
                "Packages are marked lost after {x_claim_days} days, and we'll pay you back automatically plus a {x_credit} credit - no need to contact us.",
                "Tracking numbers are sent within {x_tracking_hours} hours. If {order} hasn't moved, a replacement goes out within {x_reship_days} hours of your message.",
                "Lost parcels are the carrier's responsibility, so you'll need to file the claim with them directly; Acme can't replace the order.",
            ],
        },
    ],
    "account": [
        {
            "entities": [{"link_min": "30", "attempts": "5", "lock_min": "15"}],
            "alts": {
                "link_min": ["10", "15", "60", "120"],
                "attempts": ["3", "10"],
                "lock_min": ["5", "30", "60"],
                "hours": ["24", "48"],
                "year": ["2022", "2023"],
            },
            "passages": [
                "[kb/account/password-reset] Use Forgot password on the sign-in page to receive a reset link by email. The link expires after {link_min} minutes and can be used once. After {attempts} failed sign-in attempts the account is locked for {lock_min} minutes.",
                "[kb/account/sso] Workspaces with single sign-on manage passwords in their identity provider (Okta, Azure AD or Google Workspace); Acme cannot reset SSO passwords.",
            ],
            "queries": [
                "I forgot my password, how do I reset it?||forgot reset link",
                "the reset link says it expired??",
                "I'm locked out after too many tries. How long do I have to wait?||{attempts} {lock_min} locked",
                "How do I change my password? We log in with Okta.||sso identity provider",
                "{name} here, I can't sign in since {date}. Help?",
            ],
            "grounded": [
                "Click Forgot password on the sign-in page and we'll email you a reset link. It's valid for {link_min} minutes and works once.",
                "Reset links expire after {link_min} minutes, so request a new one from the sign-in page and use it right away.",
                "After {attempts} failed attempts the account is locked for {lock_min} minutes. Wait it out, then use Forgot password if you're unsure of the password.",
                "If your workspace signs in through SSO, the password is managed by your identity provider (Okta, Azure AD or Google Workspace), so reset it there.",
            ],
            "hallucinated": [
                "Reset links are valid for {x_hours} hours, and after {x_attempts} failed attempts your account is locked for {x_lock_min} minutes.",
                "You'll need to contact your account manager to reset your password; self-service resets were disabled in {x_year}.",
                "Acme support can reset your Okta password for you - reply with your username and we'll send a temporary password within {x_link_min} minutes.",
                "After {attempts} failed attempts your account is locked permanently and has to be unlocked by support.",
            ],
        },
        {
            "entities": [{"codes": "10", "recovery_days": "3"}],
            "alts": {"codes": ["5", "8", "12", "16"], "recovery_days": ["1", "7", "14"], "hours": ["24", "48"]},
            "passages": [
                "[kb/account/two-factor] Two-factor authentication works with an authenticator app or SMS. When you turn it on you get {codes} single-use backup codes. If you lose both your phone and the codes, identity verification by support takes up to {recovery_days} business days.",
            ],
            "queries": [
                "I got a new phone and lost my 2FA, how do I get back in?",
                "how many backup codes do I get for two-factor?",
                "Can I use SMS instead of an authenticator app for 2FA?",
                "Lost my backup codes and my phone, how long will recovery take?",
            ],
            "grounded": [
                "Use one of your {codes} single-use backup codes to sign in, then set up two-factor authentication again on the new phone.",
                "You can use either an authenticator app or SMS for two-factor authentication. When you enable it you get {codes} backup codes - keep them somewhere safe.",
                "Without your phone or backup codes, support has to verify your identity, which takes up to {recovery_days} business days.",
            ],
            "hallucinated": [
                "When you enable 2FA you receive {x_codes} backup codes, and support can switch 2FA off for you within {x_hours} hours by email.",
                "Acme only supports hardware security keys for two-factor authentication; SMS and authenticator apps are not available.",
                "Identity verification takes up to {x_recovery_days} business days, and you'll need to send a copy of your passport.",
            ],
        },
        {
            "entities": [{"delete_days": "30", "export": "CSV or JSON"}],
            "alts": {"delete_days": ["7", "14", "60", "90"], "export": ["PDF", "Excel only", "XML"]},
            "passages": [
                "[kb/account/delete-workspace] Workspace owners can delete the workspace under Settings > Account > Delete workspace. Data is kept for {delete_days} days in case you change your mind and is then permanently erased. Export your data as {export} before deleting.",
            ],
            "queries": [
                "How do I delete my account?",
                "if I delete our workspace can I get the data back later?",
                "Can I export everything before closing the account?||export {export} copy",
            ],
            "grounded": [
                "The workspace owner can delete it under Settings > Account > Delete workspace. We keep the data for {delete_days} days in case you change your mind, then erase it permanently.",
                "Yes, for {delete_days} days after deletion the data can still be restored; after that it's permanently erased. Export it as {export} first if you want a copy.",
            ],
            "hallucinated": [
                "Deleted workspaces are erased immediately and can't be recovered, but backups are kept for {x_delete_days} days for legal reasons.",
                "Any member can delete the workspace from their profile page, and data can be restored for up to {x_delete_days} days. Exports are available as {x_export}.",
            ],
        },
    ],
    "product_specs": [
        {
            "entities": [
                {"product": "Acme Hub Pro", "battery": "18 hours", "weight": "340 g", "ports": "4 USB-C ports", "wifi": "Wi-Fi 6E", "price": "$249"},
                {"product": "Acme Hub Mini", "battery": "10 hours", "weight": "180 g", "ports": "2 USB-C ports", "wifi": "Wi-Fi 6", "price": "$129"},
                {"product": "Acme Cam 360", "battery": "6 hours", "weight": "210 g", "ports": "1 USB-C port", "wifi": "Wi-Fi 5", "price": "$179"},
                {"product": "Acme Sense T3", "battery": "9 months", "weight": "95 g", "ports": "1 USB-C port", "wifi": "Wi-Fi 4", "price": "$89"},
                {"product": "Acme Doorbell S", "battery": "4 months", "weight": "150 g", "ports": "1 USB-C port", "wifi": "Wi-Fi 6", "price": "$149"},
            ],
            "alts": {
                "battery": ["8 hours", "12 hours", "30 hours", "48 hours", "2 years"],
                "weight": ["120 g", "250 g", "410 g", "500 g"],
                "ports": ["3 USB-C ports", "6 USB-C ports", "2 USB-A ports", "an HDMI port"],
                "wifi": ["Wi-Fi 7", "Wi-Fi 6E", "Wi-Fi 5"],
                "price": ["$99", "$199", "$299", "$349"],
            },
            "passages": [
                "[kb/products/{slug}] The {product} weighs {weight} and runs for up to {battery} on a full charge. It has {ports}, supports {wifi} and retails for {price}.",
                "[kb/products/{slug}-in-the-box] In the box: the {product}, a 1 m USB-C cable, a wall mount and a quick-start guide. A power adapter is sold separately.",
            ],
            "queries": [
                "What's the battery life of the {product}?",
                "does the {product} support wifi 6e||supports {wifi}",
                "How heavy is the {product}?||weighs {weight}",
                "How many ports does the {product} have?||{ports} has",
                "Is the {product} worth {amount}? What specs does it have?",
                "does {product} come with a charger?||ships cable adapter box",
            ],
            "grounded": [
                "The {product} runs for up to {battery} on a full charge and weighs {weight}.",
                "It supports {wifi}. The {product} also has {ports} and retails for {price}.",
                "Here are the key specs of the {product}: {weight}, up to {battery} of battery life, {ports} and {wifi}. The list price is {price}.",
                "The {product} ships with a 1 m USB-C cable, a wall mount and a quick-start guide, but the power adapter is sold separately.",
            ],
            "hallucinated": [
                "The {product} runs for up to {x_battery} on a charge, weighs {x_weight} and has {x_ports}.",
                "Yes, the {product} supports {x_wifi} and comes with a fast charger in the box.",
                "The {product} retails for {x_price} and includes {x_ports} plus a battery that lasts {x_battery}.",
                "The {product} weighs {weight} and supports {wifi}; it also has a waterproof IP68 rating and lasts {x_battery} per charge.",
            ],
        },
        {
            "entities": [
                {"product": "Acme Hub Pro", "devices": "128", "protocols": "Matter, Zigbee and Thread"},
                {"product": "Acme Hub Mini", "devices": "32", "protocols": "Matter and Zigbee"},
            ],
            "alts": {
                "devices": ["16", "64", "256", "500"],
                "protocols": ["Z-Wave and Bluetooth", "Matter only", "Zigbee and Z-Wave"],
                "os": ["iOS 14 and Android 9", "iOS 13 or later"],
            },
            "passages": [
                "[kb/products/{slug}-compatibility] The {product} connects up to {devices} devices over {protocols}. The Acme app requires iOS 16 or later or Android 12 or later.",
            ],
            "queries": [
                "How many devices can I connect to the {product}?",
                "does {product} work with Z-Wave?",
                "Will the Acme app run on my old iPhone with iOS 15? I have the {product}.",
            ],
            "grounded": [
                "The {product} supports up to {devices} devices over {protocols}.",
                "The {product} works with {protocols}, so Z-Wave devices aren't supported. It handles up to {devices} devices.",
                "The Acme app needs iOS 16 or later (or Android 12 or later), so iOS 15 isn't supported.",
            ],
            "hallucinated": [
                "The {product} connects up to {x_devices} devices and supports {x_protocols}.",
                "Yes, the {product} works with Z-Wave, Bluetooth and {protocols}, up to {x_devices} devices.",
                "The Acme app runs on {x_os}, so your iPhone is fine.",
            ],
        },
    ],
    "warranty": [
        {
            "entities": [
                {"wclass": "hubs", "years": "2", "ext_years": "3", "ext_price": "$39", "ext_window": "60", "wproduct": "Acme Hub Pro"},
                {"wclass": "cameras", "years": "1", "ext_years": "2", "ext_price": "$29", "ext_window": "30", "wproduct": "Acme Cam 360"},
                {"wclass": "doorbells", "years": "2", "ext_years": "2", "ext_price": "$25", "ext_window": "30", "wproduct": "Acme Doorbell S"},
                {"wclass": "thermostats", "years": "3", "ext_years": "2", "ext_price": "$19", "ext_window": "60", "wproduct": "Acme Sense T3"},
            ],
            "alts": {
                "years": ["4", "5"],
                "ext_years": ["1", "4", "5"],
                "ext_price": ["$49", "$59", "$99", "$15"],
                "ext_window": ["14", "90", "365"],
            },
            "passages": [
                "[kb/warranty/{slug}] Acme {wclass} come with a {years}-year limited warranty against manufacturing defects. Accidental damage, water damage and normal wear are not covered. Acme Care extends coverage by {ext_years} years for {ext_price} if bought within {ext_window} days of purchase.",
                "[kb/warranty/claims] Warranty claims need the serial number and proof of purchase and are filed at acme.example/warranty. Approved devices are replaced rather than repaired, and Acme pays shipping both ways.",
            ],
            "queries": [
                "How long is the warranty on {wclass}?",
                "My {wproduct} stopped working after {n} days, is it still under warranty?",
                "does the warranty cover water damage on my {wproduct}?",
                "Can I still buy Acme Care for the {wproduct} I bought on {date}?",
                "how do I file a warranty claim for my {wproduct}||file claim serial replace",
                "My {wproduct} is broken, can I get a refund or a replacement under warranty?",
            ],
            "grounded": [
                "Acme {wclass} have a {years}-year limited warranty that covers manufacturing defects. Accidental and water damage aren't covered.",
                "Yes, the {wproduct} is covered for {years} years against manufacturing defects. File a claim at acme.example/warranty with the serial number and proof of purchase, and we'll replace it and cover shipping both ways.",
                "You can add Acme Care within {ext_window} days of purchase: it extends the warranty by {ext_years} years for {ext_price}.",
                "Unfortunately water damage isn't covered by the {years}-year warranty; it only covers manufacturing defects.",
            ],
            "hallucinated": [
                "Acme {wclass} come with a {x_years}-year warranty that also covers accidental and water damage.",
                "Acme Care can be added at any time for {x_ext_price} and extends the warranty by {x_ext_years} years, including drops and spills.",
                "Your {wproduct} is covered, and we'll repair it at our Austin service center within {x_ext_window} days; shipping is at your cost.",
                "The {wproduct} has a {years}-year warranty, and Acme Care, which you can buy within {x_ext_window} days, adds {x_ext_years} years plus free accidental-damage cover.",
            ],
        },
        {
            "entities": [{"review_days": "5", "replace_days": "3"}],
            "alts": {"review_days": ["1", "2", "10", "14"], "replace_days": ["1", "7", "10"], "credit": ["$20", "$30"]},
            "passages": [
                "[kb/warranty/claim-status] Warranty claims are reviewed within {review_days} business days. Once approved, the replacement ships within {replace_days} business days and the faulty device must be returned within 30 days using the prepaid label.",
            ],
            "queries": [
                "I filed a warranty claim on {date}, when will I hear back?||reviewed {review_days}",
                "my warranty claim was approved, when does the replacement ship?",
                "do I have to send the broken device back after a warranty replacement?",
            ],
            "grounded": [
                "Claims are reviewed within {review_days} business days. Once yours is approved, the replacement ships within {replace_days} business days.",
                "Yes, please send the faulty device back within 30 days using the prepaid label that comes with the replacement.",
            ],
            "hallucinated": [
                "Warranty claims are reviewed within {x_review_days} hours and the replacement ships the same day; you can keep the old device.",
                "Your claim should be reviewed within {x_review_days} business days, and you'll get a {x_credit} voucher for the inconvenience.",
            ],
        },
    ],
    "api_integration": [
        {
            "entities": [
                {"tier": "Starter", "rpm": "60", "daily": "10,000"},
                {"tier": "Team", "rpm": "600", "daily": "100,000"},
                {"tier": "Business", "rpm": "3,000", "daily": "1,000,000"},
            ],
            "alts": {
                "rpm": ["100", "300", "1,200", "6,000"],
                "daily": ["5,000", "50,000", "250,000", "unlimited"],
                "burst": ["20", "50"],
            },
            "passages": [
                "[docs/api/rate-limits-{slug}] On the {tier} plan the REST API allows {rpm} requests per minute and {daily} requests per day per workspace. Requests over the limit receive HTTP 429 with a Retry-After header.",
                "[docs/api/errors] Error responses use standard HTTP status codes and a JSON body with code and message fields. Retry 429 and 503 responses with exponential backoff.",
            ],
            "queries": [
                "What's the API rate limit on the {tier} plan?",
                "getting 429 errors from /v2/orders on {tier}, why?",
                "How many API calls per day can we make on {tier}?||{daily} day",
                "our integration retries failed calls immediately, is that ok? we are on {tier}||retrying retries back off backoff",
            ],
            "grounded": [
                "On {tier} the API allows {rpm} requests per minute and {daily} requests per day per workspace.",
                "A 429 means you've hit the {tier} limit of {rpm} requests per minute (or {daily} per day). Wait for the time in the Retry-After header and retry with exponential backoff.",
                "Retrying immediately will keep hitting the limit. Back off exponentially and honor the Retry-After header on 429 and 503 responses.",
            ],
            "hallucinated": [
                "The {tier} plan allows {x_rpm} requests per minute and {x_daily} requests per day, with bursts of up to {x_burst} requests per second.",
                "429 errors on {tier} mean your API key was revoked; generate a new key under Settings > Developers and the limit resets to {x_rpm} requests per minute.",
                "Rate limits don't apply on {tier}; the 429 comes from a temporary outage, so immediate retries are fine.",
            ],
        },
        {
            "entities": [{"wh_timeout": "10", "wh_retries": "5", "wh_hours": "24"}],
            "alts": {
                "wh_timeout": ["3", "5", "30", "60"],
                "wh_retries": ["3", "8", "10"],
                "wh_hours": ["6", "12", "48", "72"],
                "header": ["X-Hub-Signature", "Acme-Token"],
            },
            "passages": [
                "[docs/api/webhooks] Webhook deliveries time out after {wh_timeout} seconds. Failed deliveries are retried {wh_retries} times with exponential backoff over {wh_hours} hours. Each request is signed with HMAC-SHA256 in the X-Acme-Signature header.",
            ],
            "queries": [
                "Our webhook endpoint is slow, what's the timeout?",
                "how do I verify that a webhook really came from Acme?",
                "We missed some webhook events during an outage on {date}, will they be resent?",
            ],
            "grounded": [
                "Webhook deliveries time out after {wh_timeout} seconds, so acknowledge quickly and process the event asynchronously.",
                "Every webhook is signed with HMAC-SHA256 in the X-Acme-Signature header. Compute the HMAC of the raw body with your signing secret and compare.",
                "Yes, failed deliveries are retried {wh_retries} times with exponential backoff over {wh_hours} hours, so events from a short outage will be redelivered.",
            ],
            "hallucinated": [
                "Webhooks time out after {x_wh_timeout} seconds and are retried {x_wh_retries} times over {x_wh_hours} hours.",
                "Webhook requests carry an {x_header} header containing your API key, so just compare it to your key.",
                "Missed webhook events aren't retried; you'll need to poll /v2/events for anything older than {x_wh_hours} hours.",
            ],
        },
        {
            "entities": [{"max_keys": "10", "revoke_days": "90"}],
            "alts": {"max_keys": ["3", "5", "25", "50"], "revoke_days": ["30", "60", "180", "365"]},
            "passages": [
                "[docs/api/keys] API keys are created under Settings > Developers. Each workspace can have up to {max_keys} active keys; keys that are not used for {revoke_days} days are revoked automatically. Keys are shown only once, at creation.",
            ],
            "queries": [
                "My API key stopped working, was it revoked?||revoked {revoke_days}",
                "How many API keys can one workspace have?",
                "I lost my API key, can you show it to me again?",
            ],
            "grounded": [
                "Keys that haven't been used for {revoke_days} days are revoked automatically. Create a new one under Settings > Developers.",
                "Each workspace can have up to {max_keys} active API keys.",
                "Keys are only shown once, at creation, so we can't display it again. Create a new key under Settings > Developers and revoke the old one.",
            ],
            "hallucinated": [
                "Keys expire every {x_revoke_days} days regardless of use, and each workspace can have up to {x_max_keys} keys.",
                "You can view any existing API key again under Settings > Developers > Show key.",
                "Keys are revoked after {x_revoke_days} days of inactivity; support can reactivate a revoked key within 24 hours.",
            ],
        },
    ],
    "hr_policy": [
        {
            "entities": [
                {"leave": "parental leave", "amount": "16 weeks", "pay": "at full pay", "notice": "8 weeks before the start date", "approver": "your manager and your HR business partner"},
                {"leave": "paid time off", "amount": "25 days per calendar year", "pay": "at full pay", "notice": "2 weeks ahead", "approver": "your manager"},
                {"leave": "sick leave", "amount": "10 days per year", "pay": "at full pay", "notice": "on the first day of absence", "approver": "your manager"},
                {"leave": "bereavement leave", "amount": "5 days", "pay": "at full pay", "notice": "as soon as possible", "approver": "your manager"},
            ],
            "alts": {
                "amount": ["12 weeks", "20 weeks", "30 days per year", "15 days per year", "3 days"],
                "pay": ["at 60% of salary", "unpaid", "at half pay"],
                "notice": ["4 weeks ahead", "3 months before the start date", "48 hours ahead"],
                "approver": ["the HR director", "Payroll", "your skip-level manager"],
                "pay_rate": ["150% of your daily rate", "your full daily rate"],
            },
            "passages": [
                "[hr/policies/{slug}] Employees are entitled to {amount} of {leave} {pay}. Requests are submitted in Workday {notice} and approved by {approver}.",
                "[hr/policies/leave-overview] Leave balances are shown in Workday under Time Off. Up to 5 unused days of paid time off can be carried over to the next year.",
            ],
            "queries": [
                "How much {leave} do I get?||{amount} entitled",
                "Who approves {leave} requests?",
                "how far in advance do I need to request {leave}?||{notice} {x_notice} submit submitted",
                "Do I get paid during {leave}?||{pay} {x_pay} {amount} paid",
                "I'm planning {leave} starting {date}, what do I need to do?",
            ],
            "grounded": [
                "You're entitled to {amount} of {leave} {pay}. Submit the request in Workday {notice}; it's approved by {approver}.",
                "{Leave} requests are approved by {approver}. Submit them in Workday {notice}.",
                "Yes, you get {amount} of {leave} {pay}.",
                "Put the request in Workday {notice}. {Approver} will approve it, and you can check your balance under Time Off.",
            ],
            "hallucinated": [
                "You're entitled to {x_amount} of {leave} {x_pay}, approved by {x_approver}.",
                "{Leave} requests need to be submitted {x_notice} and go to {x_approver} for approval.",
                "{Leave} is paid {x_pay}, and you can take up to {x_amount} in a row without approval.",
                "You get {amount} of {leave} {pay}, and unused days are cashed out at the end of the year at {x_pay_rate}.",
            ],
        },
        {
            "entities": [{"meal": "$75", "hotel": "$250", "submit_days": "30"}],
            "alts": {"meal": ["$50", "$100", "$120"], "hotel": ["$150", "$200", "$350", "$400"], "submit_days": ["7", "14", "60", "90"]},
            "passages": [
                "[hr/policies/travel-expenses] Meals on business trips are reimbursed up to {meal} per day and hotels up to {hotel} per night. Submit receipts in Expensify within {submit_days} days of the trip; reimbursements are paid with the next payroll run.",
            ],
            "queries": [
                "What's the hotel limit for business travel?",
                "Can I expense a {amount} dinner on a work trip?||meals meal {meal} receipt",
                "how long do I have to submit expenses from my trip on {date}?",
                "when do I get reimbursed for travel expenses?",
            ],
            "grounded": [
                "Hotels are reimbursed up to {hotel} per night and meals up to {meal} per day.",
                "Meals are covered up to {meal} per day, so anything above that is on you. Submit the receipt in Expensify.",
                "Submit the receipts in Expensify within {submit_days} days of the trip; you'll be reimbursed with the next payroll run.",
            ],
            "hallucinated": [
                "Hotels are reimbursed up to {x_hotel} per night and meals up to {x_meal} per day.",
                "You have {x_submit_days} days to submit receipts, and reimbursements are paid by bank transfer within 48 hours.",
                "There's no fixed meal limit; any reasonable dinner is fine as long as your manager approves it in Concur.",
            ],
        },
    ],
}

TOPICS: tuple[str, ...] = tuple(_KB)

# Wording shared by all topics. Openers and closers are drawn for every kind of answer
# alike (no marker of the label); hallucinations lean a little more on confident openers.
_OPENERS = ("", "", "", "", "Sure! ", "Good question. ", "Happy to help. ", "Thanks for asking. ",
            "Of course. ", "From our help center: ", "Great question! ", "Absolutely. ")
_CONFIDENT_OPENERS = _OPENERS + ("Absolutely. ", "Good news! ", "Yes, definitely. ", "Great question! ")
_CLOSERS = ("", "", "", "", " Let me know if there's anything else I can help with.", " Hope that helps!",
            " Anything else I can do for you?", " You can find more details in the Help Center.")
_DEFLECTIONS = (
    "I'm sorry, but I can't help with that. Is there anything else I can assist you with?",
    "I can only answer questions about Acme products and services.",
    "Thanks for reaching out! Our team is always working to improve your experience with Acme.",
    "That's a great question. Acme is committed to providing the best possible service to all of our customers.",
    "I'm not able to access that information right now. Please try again later.",
    "Let me connect you with a human agent who can help further.",
    "Here are some tips for getting the most out of Acme: keep your profile up to date and explore the Help Center.",
)
_FOLLOW_UPS = ("Thanks! ", "One more question. ", "Also: ", "Ok. ", "Follow-up: ")

# Row slots, drawn for every row.
_FIRST_NAMES = ("Maya", "Liam", "Sofia", "Noah", "Aisha", "Lucas", "Hana", "Mateo", "Priya",
                "Oliver", "Zoe", "Ethan", "Ines", "Kenji", "Grace", "Omar", "Chloe", "Arjun")
_LAST_NAMES = ("Patel", "Nguyen", "Garcia", "Smith", "Kowalski", "Okafor", "Silva", "Chen",
               "Muller", "Haddad", "Johansson", "Rossi")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_DATES = tuple(f"{m} {d}" for m in _MONTHS for d in range(1, 29))

# ---------------------------------------------------------------------------------------
# Sources, formats, models, prompts
# ---------------------------------------------------------------------------------------

FORMATS: tuple[str, ...] = ("canonical_jsonl", "canonical_jsonl_gz", "parquet", "csv",
                            "openai", "openai_batch", "otel", "langfuse")
DEFAULT_FORMAT_SHARES: dict[str, float] = {
    "canonical_jsonl": 0.30, "canonical_jsonl_gz": 0.10, "parquet": 0.10, "csv": 0.06,
    "openai": 0.14, "openai_batch": 0.08, "otel": 0.14, "langfuse": 0.08,
}
MODELS: tuple[str, ...] = ("gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "llama-3.1-70b-instruct")
_MODEL_INFO = {  # request alias, provider, $ per 1M input/output tokens, latency model
    "gpt-4o-2024-08-06": ("gpt-4o", "openai", 2.50, 10.00, 420.0, 14.0),
    "gpt-4o-mini-2024-07-18": ("gpt-4o-mini", "openai", 0.15, 0.60, 280.0, 8.0),
    "llama-3.1-70b-instruct": ("llama-3.1-70b-instruct", "vllm", 0.88, 0.88, 600.0, 20.0),
}
PROMPT_VERSIONS: tuple[str, ...] = ("v11", "v12", "v13")
_GIT_COMMITS = {"v11": "3f9c2d1", "v12": "a71e0b4", "v13": "c52d9e8"}
# v13 asks for short, confident answers: the regression that PLANTED_SLICES describes.
_SYSTEM_PROMPTS = {
    "v11": "You are Acme's helpful assistant. Answer the customer's question using the context below.",
    "v12": "You are Acme's assistant. Answer using only the facts in the context. If the context does not contain the answer, say that you don't know.",
    "v13": "You are Acme's friendly assistant. Be concise and confident, and answer in at most three sentences.",
}


@dataclass(frozen=True)
class _Source:
    """One source of the application: its name, the format it is written in, its mix."""

    name: str
    fmt: str
    index: int
    prompt_name: str
    topic_weights: tuple[float, ...]  # in the order of TOPICS
    model_weights: tuple[float, ...]  # in the order of MODELS


def _source(index, name, fmt, prompt_name, topics, models) -> _Source:
    return _Source(name, fmt, index, prompt_name, tuple(topics), tuple(models))


def _logged_version(src: _Source, version: str) -> str:
    """Return a prompt version (one of :data:`PROMPT_VERSIONS`) as the logs of ``src``
    carry it, which is also what ingestion reads and the truth records.

    The Langfuse source keeps its prompts in Langfuse prompt management, which numbers
    versions: ``v13`` is its prompt version 13, an integer ``promptVersion`` that
    ingestion reads as ``"13"``. Every other source logs the name (``"v13"``).
    """
    return version.lstrip("v") if src.fmt == "langfuse" else version


#                                       billing refunds shipping account specs warranty api  hr
SOURCES: tuple[_Source, ...] = (
    _source(0, "web-chat", "canonical_jsonl", "acme-assistant",
            (.18, .14, .18, .14, .14, .12, .04, .06), (.5, .4, .1)),
    _source(1, "docs-assistant", "canonical_jsonl_gz", "docs-qa",
            (.05, .03, .04, .10, .33, .10, .30, .05), (.3, .6, .1)),
    _source(2, "api", "parquet", "api-answer",
            (.10, .05, .10, .10, .20, .10, .30, .05), (.4, .3, .3)),
    _source(3, "partner", "csv", "partner-support",
            (.15, .15, .35, .05, .10, .15, .05, .00), (.2, .5, .3)),
    _source(4, "mobile", "openai", "mobile-assistant",
            (.18, .16, .20, .18, .10, .12, .02, .04), (.2, .7, .1)),
    _source(5, "batch-reports", "openai_batch", "batch-qa",
            (.15, .15, .15, .10, .15, .15, .10, .05), (.3, .7, .0)),
    _source(6, "support-bot", "otel", "support-triage",
            (.22, .18, .16, .20, .06, .12, .04, .02), (.5, .3, .2)),
    _source(7, "intranet", "langfuse", "hr-helpdesk",
            (.02, .02, .02, .14, .05, .02, .08, .65), (.2, .2, .6)),
)
_SOURCE_BY_FORMAT = {s.fmt: s for s in SOURCES}
LANDING_FILES: dict[str, tuple[str, ...]] = {
    "canonical_jsonl": ("web-chat.jsonl",),
    "canonical_jsonl_gz": ("docs-assistant.jsonl.gz",),
    "parquet": ("api.parquet",),
    "csv": ("partner.csv",),
    "openai": ("mobile-openai.jsonl",),
    "openai_batch": ("batch-input.jsonl", "batch-output.jsonl"),
    "otel": ("support-bot-otel.jsonl",),
    "langfuse": ("langfuse-traces.json",),
}
BAD_RECORD_KINDS: tuple[str, ...] = ("broken_json", "missing_field", "wrong_type",
                                     "bad_timestamp", "empty_output")
ANNOTATION_FILES: tuple[str, ...] = ("labels-{day}.csv", "label-studio-{day}.json",
                                     "argilla-{day}.jsonl", "langfuse-scores-{day}.csv")


# ---------------------------------------------------------------------------------------
# The spec and the summary
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoSpec:
    """What to generate.

    Attributes:
        days, rows_per_day: how many days, and good records per day (all formats).
        seed: the same seed gives the same bytes; another seed, other data and ids.
        start: the first day (default: today in UTC minus ``days``).
        hallucination_rate, off_topic_rate: overall shares of hallucinated and of
            off-topic answers (planted slices have more, the others less).
        pii_rate: share of inputs with an e-mail, phone, card number or API key.
        annotation_rate: share of each day's records that get human labels.
        bad_record_rate: malformed lines per good record of the day (at least one of
            each kind per day).
        duplicates_per_day: previous-day records repeated at the start of each day.
        format_shares: each name of :data:`FORMATS` to its share of a day's rows
            (default :data:`DEFAULT_FORMAT_SHARES`; a format with share 0 is not
            written). A mapping is stored as a sorted tuple of pairs so that the spec
            stays hashable.
    """

    days: int = 7
    rows_per_day: int = 2000
    seed: int = 7
    start: dt.date | None = None
    hallucination_rate: float = 0.10
    off_topic_rate: float = 0.05
    pii_rate: float = 0.02
    annotation_rate: float = 0.08
    bad_record_rate: float = 0.003
    duplicates_per_day: int = 2
    format_shares: Mapping[str, float] | tuple[tuple[str, float], ...] | None = None

    def __post_init__(self):
        if self.days < 1 or self.rows_per_day < 1:
            raise ValueError("DemoSpec needs days >= 1 and rows_per_day >= 1")
        if self.format_shares is not None:
            shares = dict(self.format_shares)
            unknown = sorted(set(shares) - set(FORMATS))
            if unknown:
                raise ValueError(f"unknown formats in format_shares: {unknown}; known: {FORMATS}")
            if sum(shares.values()) <= 0 or min(shares.values()) < 0:
                raise ValueError("format_shares must be >= 0 and not all 0")
            object.__setattr__(self, "format_shares", tuple(sorted(shares.items())))

    def first_day(self) -> dt.date:
        """Return the first day written (``start``, or today in UTC minus ``days``)."""
        if self.start is not None:
            return self.start
        return dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=self.days)

    def shares(self) -> dict[str, float]:
        """Return the share of rows of each format, normalized to sum to 1."""
        shares = dict(self.format_shares) if self.format_shares else dict(DEFAULT_FORMAT_SHARES)
        total = sum(shares.values())
        return {f: shares.get(f, 0.0) / total for f in FORMATS}


@dataclass
class DaySummary:
    """What one day of :func:`generate` wrote.

    ``rows``: good records per format (each is in the truth file); ``bad_records``: the
    malformed lines per kind, all in ``web-chat.jsonl``, that the loader must reject;
    ``duplicates``: lines of ``web-chat.jsonl`` that repeat the previous day's records
    byte for byte (same log_id); ``annotation_labels``: label records per inbox file.
    """

    day: str
    rows: dict[str, int]
    files: list[str]
    bad_records: dict[str, int]
    duplicates: int
    annotation_files: list[str]
    annotation_labels: dict[str, int]
    truth_file: str

    @property
    def total_rows(self) -> int:
        """Return the number of good records of the day, all formats."""
        return sum(self.rows.values())


@dataclass
class DemoSummary:
    """What :func:`generate` wrote: one :class:`DaySummary` per day, in order."""

    home: Path
    spec: DemoSpec
    days: list[DaySummary] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        """Return the number of good records over all days."""
        return sum(d.total_rows for d in self.days)

    @property
    def total_bad_records(self) -> int:
        """Return the number of malformed records over all days."""
        return sum(sum(d.bad_records.values()) for d in self.days)

    def to_dict(self) -> dict:
        """Return the summary as plain JSON-ready data (what ``demo/summary.json`` holds)."""
        spec = asdict(self.spec)
        spec["start"] = self.spec.first_day().isoformat()
        spec["format_shares"] = self.spec.shares()
        return {  # no absolute paths: the same spec gives the same file in any home
            "spec": spec,
            "planted_slices": PLANTED_SLICES,
            "total_rows": self.total_rows,
            "total_bad_records": self.total_bad_records,
            "total_duplicates": sum(d.duplicates for d in self.days),
            "days": [asdict(d) | {"total_rows": d.total_rows} for d in self.days],
        }


# ---------------------------------------------------------------------------------------
# The compiled knowledge base
# ---------------------------------------------------------------------------------------


def _multiplier(dimension: str, value: str, kind: str) -> float:
    """Return the planted multiplier of ``kind`` for one slice value (1.0 if none)."""
    return PLANTED_SLICES.get(dimension, {}).get(value, {}).get(kind, 1.0)


def _planted_names(dimension: str, value: str) -> tuple[str, ...]:
    """Return ``("dimension=value",)`` when that slice is planted, else ``()``."""
    return (f"{dimension}={value}",) if value in PLANTED_SLICES.get(dimension, {}) else ()


_KEYWORDS = tuple(PLANTED_SLICES.get("keyword", {}))


@dataclass(frozen=True)
class _Intent:
    """One intent of a topic, ready for fast row generation (see :data:`_KB`)."""

    facts: tuple[dict[str, str], ...]  # per entity, with slug and capitalized keys
    alts: tuple[tuple[dict[str, str], ...], ...]  # per entity, some x_ fact sets
    passages: tuple[tuple[str, ...], ...]  # per entity, rendered; the answering one first
    queries: tuple[str, ...]
    query_planted: tuple[tuple[str, ...], ...]  # planted keyword slices each query is in
    query_mh: tuple[float, ...]
    query_mo: tuple[float, ...]
    grounded: tuple[tuple[str, ...], ...]  # per query: the grounded answers that fit it
    hallucinated: tuple[tuple[str, ...], ...]  # per query: the hallucinated answers that fit it


@dataclass(frozen=True)
class _Topic:
    name: str
    index: int
    intents: tuple[_Intent, ...]
    planted: tuple[str, ...]
    mh: float
    mo: float


def _with_capitals(facts: dict[str, str]) -> dict[str, str]:
    """Return the facts plus a capitalized copy of each (key ``Kind`` for ``kind``)."""
    out = dict(facts)
    for key, value in facts.items():
        if value:
            out[key[0].upper() + key[1:]] = value[0].upper() + value[1:]
    return out


_STOPWORDS = frozenset(
    "a an the is are was be i we you your our my me it its to of for on in at by with and or if "
    "do does did can how what when which who whats there this that from up so as after before "
    "get got will would should have has not no any per all than then".split()
)


def _content_words(template: str) -> set[str]:
    """Return the lowercased content words of a template (slots count as words)."""
    return {w for w in re.findall(r"\{?[a-z0-9_]+\}?", template.lower()) if w not in _STOPWORDS}


def _answers_for(query: str, answers: list[str], keep: int = 2) -> tuple[str, ...]:
    """Return the ``keep`` answer templates that share the most content words with the
    query (all of them when none shares any): answers that address the question."""
    words = _content_words(query)
    scored = sorted(range(len(answers)), key=lambda k: (-len(words & _content_words(answers[k])), k))
    if not words & _content_words(answers[scored[0]]):
        return tuple(answers)
    return tuple(answers[k] for k in sorted(scored[:keep]))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _keyword_multiplier(planted: tuple[str, ...], kind: str) -> float:
    """Return the largest multiplier of ``kind`` among planted keyword slices (or 1.0)."""
    return max([1.0] + [_multiplier("keyword", name.split("=", 1)[1], kind) for name in planted])


def _compile_intent(topic: str, number: int, spec: dict) -> _Intent:
    """Return the intent with facts, alternative facts and passages precomputed."""
    entities = spec["entities"]
    facts = []
    for ent in entities:
        full = dict(ent)
        full.setdefault("slug", _slug(next(iter(ent.values()))))
        facts.append(_with_capitals(full))
    alts = []
    for e, ent in enumerate(entities):
        rng = random.Random(f"alts|{topic}|{number}|{e}")  # fixed: the KB is the same for every seed
        sets = []
        for _ in range(6):
            x = {}
            for key, values in spec["alts"].items():
                others = [o[key] for o in entities if key in o]
                pool = [v for v in dict.fromkeys(values + others) if v != ent.get(key)]
                x["x_" + key] = rng.choice(pool)
            sets.append(x)
        alts.append(tuple(sets))
    passages = tuple(tuple(p.format_map(f) for p in spec["passages"]) for f in facts)
    # A query template may end with "||<words>": hints for pairing it with answers.
    queries = [q.split("||", 1)[0] for q in spec["queries"]]
    planted = tuple(tuple(f"keyword={k}" for k in _KEYWORDS if k.lower() in q.lower()) for q in queries)
    return _Intent(
        facts=tuple(facts),
        alts=tuple(alts),
        passages=passages,
        queries=tuple(queries),
        query_planted=planted,
        query_mh=tuple(_keyword_multiplier(p, "hallucination") for p in planted),
        query_mo=tuple(_keyword_multiplier(p, "off_topic") for p in planted),
        grounded=tuple(_answers_for(q, spec["grounded"]) for q in spec["queries"]),
        hallucinated=tuple(_answers_for(q, spec["hallucinated"]) for q in spec["queries"]),
    )


_TOPICS: tuple[_Topic, ...] = tuple(
    _Topic(
        name=name,
        index=t,
        intents=tuple(_compile_intent(name, i, spec) for i, spec in enumerate(intents)),
        planted=_planted_names("topic", name),
        mh=_multiplier("topic", name, "hallucination"),
        mo=_multiplier("topic", name, "off_topic"),
    )
    for t, (name, intents) in enumerate(_KB.items())
)
# The answering passages of every entity: the pool that distractors are drawn from.
_ALL_PASSAGES: tuple[str, ...] = tuple(
    p[0] for topic in _TOPICS for intent in topic.intents for p in intent.passages
)

# ---------------------------------------------------------------------------------------
# Ids, time, small tables
# ---------------------------------------------------------------------------------------

_M64 = (1 << 64) - 1
_KIND_SPAN, _KIND_TRACE, _KIND_HTTP, _KIND_CHAT, _KIND_OBS, _KIND_MISC, _KIND_SESSION = range(1, 8)


def _mix64(x: int) -> int:
    """Return the splitmix64 finalizer of ``x``: a bijection of 64-bit integers."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _id_base(seed: int, day: dt.date, source_index: int, kind: int) -> tuple[int, int]:
    """Return (packed fields, seed mask) for :func:`_id_key` (precomputed in hot loops)."""
    return (kind << 52) | (day.toordinal() << 32) | (source_index << 28), _mix64(seed & _M64)


def _id_key(seed: int, day: dt.date, source_index: int, kind: int, i: int) -> int:
    """Return a 64-bit id, unique for each (kind, day, source, i < 2**28) of one seed.

    The fields are packed without overlap and then mixed by bijections, so distinct
    inputs can never collide, and the output still looks random.
    """
    packed, mask = _id_base(seed, day, source_index, kind)
    return _mix64((packed | (i & 0xFFFFFFF)) ^ mask)


def _hex16(key: int) -> str:
    return f"{key:016x}"


def _chat_id(key: int) -> str:
    """Return an OpenAI-style completion id ``chatcmpl-<24 hex>`` (unique as ``key``)."""
    return f"chatcmpl-{key:016x}{_mix64(key ^ 0x5DEECE66D) >> 32:08x}"


def _uuid(key: int) -> str:
    """Return a UUID-shaped id whose first 16 hex digits are ``key`` (so it is unique)."""
    h = f"{key:016x}{_mix64(key ^ 0xC0FFEE) :016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_HMS: list[str] = []


def _hms_table() -> list[str]:
    """Return ``"HH:MM:SS"`` for every second of a day (built once; ISO stamps are hot)."""
    if not _HMS:
        _HMS.extend(f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60))
    return _HMS


def _diurnal_cumulative() -> list[float]:
    """Return the cumulative share of a day's traffic at each minute (UTC).

    Traffic is lowest at night and peaks in the (US and European) afternoon.
    """
    weights = [0.3 + math.exp(-(((m / 60.0) - 15.0) / 4.5) ** 2) for m in range(1440)]
    total = sum(weights)
    cum, acc = [0.0], 0.0
    for w in weights:
        acc += w / total
        cum.append(acc)
    cum[-1] = 1.0
    return cum


_DIURNAL = _diurnal_cumulative()


def _cumulative(weights: Iterable[float]) -> list[float]:
    """Return the cumulative, normalized weights, the last one exactly 1.0 (for bisect)."""
    weights = list(weights)
    total = sum(weights)
    cum, acc = [], 0.0
    for w in weights:
        acc += w / total
        cum.append(acc)
    cum[-1] = 1.0
    return cum


def _split(rows: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Return the rows of each format: largest remainder, at least 1 for every positive
    share when there are enough rows (so that every format appears every day)."""
    positive = [f for f in FORMATS if shares.get(f, 0) > 0]
    counts = {f: 0 for f in FORMATS}
    if not positive:
        return counts
    floor = 1 if rows >= len(positive) else 0
    spare = rows - floor * len(positive)
    total = sum(shares[f] for f in positive)
    exact = {f: spare * shares[f] / total for f in positive}
    for f in positive:
        counts[f] = floor + int(exact[f])
    left = rows - sum(counts.values())
    for f in sorted(positive, key=lambda f: (int(exact[f]) - exact[f], FORMATS.index(f)))[:left]:
        counts[f] += 1
    return counts


# ---------------------------------------------------------------------------------------
# One day: the plan and the calibration
# ---------------------------------------------------------------------------------------


@dataclass
class _DayPlan:
    """Everything a day's rows depend on: date, rows per source, version mix, base rates."""

    spec: DemoSpec
    index: int
    date: dt.date
    counts: dict[str, int]  # source name -> rows
    version_weights: tuple[float, ...]
    base_h: float
    base_o: float

    @property
    def day(self) -> str:
        return self.date.isoformat()

    @property
    def ymd(self) -> str:
        return self.date.strftime("%Y%m%d")

    @property
    def epoch0(self) -> int:
        return int(dt.datetime(self.date.year, self.date.month, self.date.day, tzinfo=dt.timezone.utc).timestamp())

    @property
    def total_rows(self) -> int:
        return sum(self.counts.values())


def _version_weights(spec: DemoSpec, index: int) -> tuple[float, ...]:
    """Return the share of v11, v12, v13 on day ``index``: v13 rolls out over the days."""
    frac = min(1.0, index / (spec.days - 1)) if spec.days > 1 else 1.0
    v11 = 0.05 + 0.45 * (1 - frac)
    v13 = 0.10 + 0.30 * frac
    return (v11, 1.0 - v11 - v13, v13)


def _topic_query_mix(topic: _Topic) -> dict[tuple[float, float], float]:
    """Return {(keyword hallucination multiplier, off-topic multiplier): probability}
    of a topic's queries (intent and query template are drawn uniformly)."""
    mix: dict[tuple[float, float], float] = {}
    for intent in topic.intents:
        for mh, mo in zip(intent.query_mh, intent.query_mo):
            p = 1.0 / len(topic.intents) / len(intent.queries)
            mix[(mh, mo)] = mix.get((mh, mo), 0.0) + p
    return mix


_TOPIC_QUERY_MIX = tuple(_topic_query_mix(t) for t in _TOPICS)


def _calibrate(spec: DemoSpec, counts: Mapping[str, int], versions: tuple[float, ...]) -> tuple[float, float]:
    """Return the baseline hallucination and off-topic probabilities of a day.

    They are the target rates divided by the expected multiplier of the day's mix of
    sources, prompt versions, models, topics and queries, so the day's expected shares
    equal the spec's rates.
    """
    total = sum(counts.values()) or 1
    eh = eo = 0.0
    for src in SOURCES:
        n = counts.get(src.name, 0)
        if not n:
            continue
        for version, pv in zip(PROMPT_VERSIONS, versions):
            version = _logged_version(src, version)
            for model, pm in zip(MODELS, src.model_weights):
                sh = max(_multiplier("source", src.name, "hallucination"),
                         _multiplier("prompt_version", version, "hallucination"),
                         _multiplier("model", model, "hallucination"))
                so = max(_multiplier("source", src.name, "off_topic"),
                         _multiplier("prompt_version", version, "off_topic"),
                         _multiplier("model", model, "off_topic"))
                for topic, pt in zip(_TOPICS, src.topic_weights):
                    w = n / total * pv * pm * pt
                    if not w:
                        continue
                    for (qh, qo), pq_ in _TOPIC_QUERY_MIX[topic.index].items():
                        eh += w * pq_ * max(sh, topic.mh, qh)
                        eo += w * pq_ * max(so, topic.mo, qo)
    if not eh:  # no rows at all
        return spec.hallucination_rate, spec.off_topic_rate
    return spec.hallucination_rate / eh, spec.off_topic_rate / eo


def _day_plan(spec: DemoSpec, index: int, rows: int | None = None) -> _DayPlan:
    """Return the plan of day ``index`` (``rows`` overrides ``spec.rows_per_day``)."""
    by_format = _split(spec.rows_per_day if rows is None else rows, spec.shares())
    counts = {_SOURCE_BY_FORMAT[f].name: n for f, n in by_format.items() if n}
    versions = _version_weights(spec, index)
    base_h, base_o = _calibrate(spec, counts, versions)
    date = spec.first_day() + dt.timedelta(days=index)
    return _DayPlan(spec, index, date, counts, versions, base_h, base_o)


# ---------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------


class _Row(NamedTuple):
    """One generated log record: the canonical record plus what only the truth knows.

    ``u`` is a uniform number drawn with the row, used by the format writers for their
    variations (so that rendering a row is a pure function of the row). Built in the hot
    loop with ``tuple.__new__`` (cheaper than a class with slots).
    """

    rec: dict
    i: int
    epoch: float
    topic: str
    hallucinated: bool
    off_topic: bool
    planted: tuple[str, ...]
    pii: str | None
    passages: list[str]
    system: str
    u: float


_CANONICAL_FORMATS = frozenset({"canonical_jsonl", "canonical_jsonl_gz", "parquet", "csv"})
_SESSION_TURNS = (1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5)
_LOCALES = ("en-US", "en-US", "en-US", "en-GB", "en-CA", "en-AU", "en-IE")
_MOBILE_EXTRA_MS = 150.0  # mobile clients see the network too
_TEST_CARDS = ("4111 1111 1111 1111", "4111-1111-1111-1111", "5555555555554444",
               "4012 8888 8888 1881", "3782 822463 10005", "6011 1111 1111 1117")
_EMAIL_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "proton.me", "icloud.com")
_KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _pii_text(rng: random.Random) -> tuple[str, str]:
    """Return (kind, text to append to an input) with one piece of personal data."""
    kind = ("email", "phone", "card", "api_key")[int(rng.random() * 4)]
    if kind == "email":
        first, last = rng.choice(_FIRST_NAMES).lower(), rng.choice(_LAST_NAMES).lower()
        email = f"{first}.{last}{rng.randrange(1, 99)}@{rng.choice(_EMAIL_DOMAINS)}"
        return kind, rng.choice((f" My email is {email}.", f" You can reach me at {email}",
                                 f" (account email: {email})"))
    if kind == "phone":
        n = rng.randrange(100, 200)
        phone = rng.choice((f"+1 (415) 555-0{n}", f"415-555-0{n}", f"+44 20 7946 0{n}", f"+1 212 555 0{n}"))
        return kind, rng.choice((f" Call me back on {phone}.", f" my number is {phone}"))
    if kind == "card":
        card = rng.choice(_TEST_CARDS)
        return kind, rng.choice((f" The card I used is {card}.", f" charged to card {card}"))
    key = rng.choice(("sk-", "sk-proj-")) + "".join(rng.choices(_KEY_ALPHABET, k=48))
    return kind, rng.choice((f" Here's the key we use: {key}", f" (key {key})"))


# Lognormal latency noise, drawn from a table: exp(N(0, 0.3)) at 4096 quantiles.
_LATENCY_NOISE = tuple(
    math.exp(0.3 * __import__("statistics").NormalDist().inv_cdf((k + 0.5) / 4096)) for k in range(4096)
)


@dataclass(frozen=True)
class _Session:
    """The part of a row that stays the same for all turns of a session."""

    model: str
    version: str
    mh: float
    mo: float
    planted: tuple[str, ...]
    price_in: float
    price_out: float
    base_ms: float
    per_token_ms: float
    system: str
    system_words: int
    commit: str


def _sessions(src: _Source) -> dict[tuple[str, str], _Session]:
    """Return the session settings of one source for every (model, prompt version)."""
    out = {}
    for model in MODELS:
        _alias, _provider, price_in, price_out, base_ms, per_token_ms = _MODEL_INFO[model]
        for internal in PROMPT_VERSIONS:
            system = _SYSTEM_PROMPTS[internal]
            version = _logged_version(src, internal)  # what the logs and the truth carry
            out[(model, internal)] = _Session(
                model=model,
                version=version,
                mh=max(_multiplier("source", src.name, "hallucination"),
                       _multiplier("prompt_version", version, "hallucination"),
                       _multiplier("model", model, "hallucination")),
                mo=max(_multiplier("source", src.name, "off_topic"),
                       _multiplier("prompt_version", version, "off_topic"),
                       _multiplier("model", model, "off_topic")),
                planted=(_planted_names("source", src.name) + _planted_names("prompt_version", version)
                         + _planted_names("model", model)),
                price_in=price_in / 1e6,
                price_out=price_out / 1e6,
                base_ms=base_ms + (_MOBILE_EXTRA_MS if src.name == "mobile" else 0.0),
                per_token_ms=per_token_ms,
                system=system,
                system_words=system.count(" ") + 1,
                commit=_GIT_COMMITS[internal],
            )
    return out


def _source_rows(plan: _DayPlan, src: _Source, count: int, *, salt: str = "") -> Iterator[_Row]:
    """Yield the ``count`` rows of one source on one day, in time order.

    All randomness comes from one generator seeded by (seed, day, source, salt), so the
    rows are the same whatever else is generated. This loop is the hot path: it draws
    from precomputed tables, formats a handful of short templates per row, and keeps
    everything it looks up in local variables.
    """
    spec = plan.spec
    rng = random.Random(f"flywheel-demo|{spec.seed}|{plan.day}|{src.name}|{salt}")
    r = rng.random
    bisect_right = bisect.bisect_right
    new_row = tuple.__new__
    topics = _TOPICS
    n_topics = len(topics)
    tcum = _cumulative(src.topic_weights)
    mcum = _cumulative(src.model_weights)
    vcum = _cumulative(plan.version_weights)
    sessions_by_kind = _sessions(src)
    all_passages = _ALL_PASSAGES
    n_passages = len(all_passages)
    openers, n_openers = _OPENERS, len(_OPENERS)
    confident, n_confident = _CONFIDENT_OPENERS, len(_CONFIDENT_OPENERS)
    closers, n_closers = _CLOSERS, len(_CLOSERS)
    dates, n_dates = _DATES, len(_DATES)
    names, n_names = _FIRST_NAMES, len(_FIRST_NAMES)
    noise = _LATENCY_NOISE
    diurnal = _DIURNAL
    hms = _hms_table()
    epoch0 = plan.epoch0
    ts_prefix = plan.day + "T"
    id_prefix = f"{src.name}-{plan.ymd}-"
    fmt = src.fmt
    canonical = fmt in _CANONICAL_FORMATS
    date, seed, sidx, name = plan.date, spec.seed, src.index, src.name
    prompt_name = src.prompt_name
    base_h, base_o, pii_rate = plan.base_h, plan.base_o, spec.pii_rate
    n_users = max(50, count // 3)
    if count > 0xFFFFFFF:
        raise ValueError(f"at most {0xFFFFFFF} rows per source and day")
    id_kind = {"otel": _KIND_SPAN, "langfuse": _KIND_TRACE}.get(fmt, _KIND_CHAT)
    id_packed, id_mask = _id_base(seed, date, sidx, id_kind)
    mix64 = _mix64
    step = 1.0 / max(count, 1)
    left = turn = n_sessions = 0
    for i in range(count):
        if left == 0:  # a new session: user, model and prompt version stay for its turns
            left = _SESSION_TURNS[int(r() * len(_SESSION_TURNS))]
            turn = 0
            session_id = "s-" + _hex16(_id_key(seed, date, sidx, _KIND_SESSION, n_sessions))[:12]
            n_sessions += 1
            user_id = f"u-{int(r() * r() * n_users):05d}"
            locale = _LOCALES[int(r() * len(_LOCALES))]
            sess = sessions_by_kind[(MODELS[bisect_right(mcum, r())], PROMPT_VERSIONS[bisect_right(vcum, r())])]
            model, version, system, commit = sess.model, sess.version, sess.system, sess.commit
        left -= 1

        topic = topics[bisect_right(tcum, r())]
        intents = topic.intents
        intent = intents[int(r() * len(intents))]
        e = int(r() * len(intent.facts))
        queries = intent.queries
        q = int(r() * len(queries))
        facts = intent.facts[e].copy()
        facts["order"] = f"A{100000 + int(r() * 900000)}"
        facts["date"] = dates[int(r() * n_dates)]
        facts["amount"] = f"${12 + int(r() * 400)}.{int(r() * 100):02d}"
        facts["name"] = names[int(r() * n_names)]
        facts["n"] = str(2 + int(r() * 88))
        question = queries[q].format_map(facts)
        if turn and r() < 0.4:
            question = _FOLLOW_UPS[int(r() * 5)] + question
        pii = None
        if r() < pii_rate:
            pii, extra = _pii_text(rng)
            question += extra

        # Is the answer bad? Planted slices multiply the day's baseline probabilities.
        p_h = base_h * max(sess.mh, topic.mh, intent.query_mh[q])
        if p_h > 0.9:
            p_h = 0.9
        p_o = base_o * max(sess.mo, topic.mo, intent.query_mo[q])
        u = r()
        hallucinated = u < p_h
        off_topic = not hallucinated and u < p_h + p_o

        # Retrieved context: the answering passage, maybe its companion, 0-2 distractors.
        own = intent.passages[e]
        passages = [own[0]]
        if len(own) > 1 and r() < 0.35:
            passages.append(own[1])
        u = r()
        if u >= 0.45:
            for _ in range(1 if u < 0.85 else 2):
                p = all_passages[int(r() * n_passages)]
                if len(passages) < 3 and p not in passages:
                    passages.append(p)

        if off_topic:
            if r() < 0.4:
                body = _DEFLECTIONS[int(r() * len(_DEFLECTIONS))]
            else:  # answers another topic's question, from a passage that was retrieved
                other = topics[(topic.index + 1 + int(r() * (n_topics - 1))) % n_topics]
                o_intent = other.intents[int(r() * len(other.intents))]
                oe = int(r() * len(o_intent.facts))
                o_facts = o_intent.facts[oe].copy()
                for key in ("order", "date", "amount", "name", "n"):
                    o_facts[key] = facts[key]
                o_answers = o_intent.grounded[int(r() * len(o_intent.queries))]
                body = o_answers[int(r() * len(o_answers))].format_map(o_facts)
                o_passage = o_intent.passages[oe][0]
                if o_passage not in passages:
                    if len(passages) >= 3:
                        passages[-1] = o_passage
                    else:
                        passages.append(o_passage)
            opener = openers[int(r() * n_openers)]
        elif hallucinated:
            alts = intent.alts[e]
            facts.update(alts[int(r() * len(alts))])
            templates = intent.hallucinated[q]
            body = templates[int(r() * len(templates))].format_map(facts)
            opener = confident[int(r() * n_confident)]
        else:
            templates = intent.grounded[q]
            body = templates[int(r() * len(templates))].format_map(facts)
            opener = openers[int(r() * n_openers)]
        output = opener + body + closers[int(r() * n_closers)]
        if len(passages) > 1 and r() < 0.3:  # the retriever does not always rank it first
            passages.append(passages.pop(0))
        context = "\n\n".join(passages)

        prompt_tokens = int((sess.system_words + context.count(" ") + question.count(" ") + 4) * 1.3) + 9
        completion_tokens = int((output.count(" ") + 1) * 1.3) + 1
        latency_ms = int((sess.base_ms + sess.per_token_ms * completion_tokens) * noise[int(r() * 4096)])
        cost_usd = round(prompt_tokens * sess.price_in + completion_tokens * sess.price_out, 6)
        u = r()
        if hallucinated or off_topic:
            feedback = -1 if u < 0.30 else 1 if u < 0.33 else 0 if u < 0.45 else None
        else:
            feedback = -1 if u < 0.03 else 1 if u < 0.15 else 0 if u < 0.25 else None

        # Time of day: the (i + u)/count traffic quantile, through the diurnal curve.
        u = (i + r()) * step
        m = bisect_right(diurnal, u) - 1
        lo = diurnal[m]
        second = (m + (u - lo) / (diurnal[m + 1] - lo)) * 60.0
        if second > 86399.999:
            second = 86399.999
        epoch = epoch0 + second
        if canonical:
            log_id = f"{id_prefix}{i:06d}"
        else:
            key = mix64((id_packed | i) ^ id_mask)
            log_id = f"{key:016x}" if fmt == "otel" else _uuid(key) if fmt == "langfuse" else _chat_id(key)
        rec = {
            "log_id": log_id,
            "ts": ts_prefix + hms[int(second)] + "Z",
            "source": name,
            "input": question,
            "output": output,
            "context": context,
            "model": model,
            "prompt_name": prompt_name,
            "prompt_version": version,
            "git_commit": commit,
            "session_id": session_id,
            "user_id": user_id,
            "latency_ms": latency_ms,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cost_usd": cost_usd,
            "feedback": feedback,
            "tags": [topic.name, "beta"] if r() < 0.1 else [topic.name],
            "metadata": {"locale": locale, "turn": turn + 1},
        }
        turn += 1
        yield new_row(_Row, (rec, i, epoch, topic.name, hallucinated, off_topic,
                             sess.planted + topic.planted + intent.query_planted[q],
                             pii, passages, system, r()))


def iter_canonical_records(spec: DemoSpec, day_index: int, *, rows: int | None = None) -> Iterator[dict]:
    """Yield the canonical records of day ``day_index``, one source after the other.

    ``rows`` overrides ``spec.rows_per_day`` (split over the sources by the format
    shares). Each record is a fresh dict in the canonical shape of DESIGN.md, with the
    log id the ingestion will see for it; nothing is held in memory but the current row.
    """
    plan = _day_plan(spec, day_index, rows)
    for src in SOURCES:
        n = plan.counts.get(src.name, 0)
        if n:
            for row in _source_rows(plan, src, n):
                yield row.rec


# ---------------------------------------------------------------------------------------
# Writing: shared helpers
# ---------------------------------------------------------------------------------------

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


class _TextFile:
    """A UTF-8 text file written in batches of lines; gzipped (mtime 0) for ``.gz`` paths.

    The gzip header holds no name and no time, so the same lines give the same bytes.
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = open(path, "wb")
        self._gz = None
        stream = self._raw
        if path.suffix == ".gz":
            self._gz = stream = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=6)
        self._text = io.TextIOWrapper(stream, encoding="utf-8", newline="\n", write_through=False)

    def write_lines(self, lines: list[str]) -> None:
        """Write the lines, each followed by a newline."""
        if lines:
            self._text.write("\n".join(lines))
            self._text.write("\n")

    def write(self, text: str) -> None:
        self._text.write(text)

    def close(self) -> None:
        self._text.flush()
        self._text.detach()
        if self._gz is not None:
            self._gz.close()
        self._raw.close()


class _JsonArray:
    """A JSON array written one element at a time (``[``, elements one a line, ``]``)."""

    def __init__(self, path: Path):
        self._file = _TextFile(path)
        self._first = True
        self._file.write("[")

    def write(self, items: list[str]) -> None:
        """Append already-encoded JSON elements."""
        if not items:
            return
        self._file.write(("\n" if self._first else ",\n") + ",\n".join(items))
        self._first = False

    def close(self) -> None:
        self._file.write("\n]\n")
        self._file.close()


def write_canonical_jsonl(path: Path, records: Iterable[dict]) -> int:
    """Write records as compact JSON lines (gzipped when ``path`` ends in ``.gz``).

    Records are encoded and written in batches of :data:`CHUNK_ROWS`, so any number of
    them can be streamed through. Returns the number of rows written.
    """
    out = _TextFile(Path(path))
    n = 0
    batch: list[str] = []
    append = batch.append
    try:
        for rec in records:
            append(_dumps(rec))
            if len(batch) >= CHUNK_ROWS:
                out.write_lines(batch)
                n += len(batch)
                batch.clear()
        out.write_lines(batch)
        n += len(batch)
    finally:
        out.close()
    return n


def _chunks(rows: Iterator[_Row], size: int = CHUNK_ROWS) -> Iterator[list[_Row]]:
    """Yield lists of up to ``size`` rows."""
    while True:
        chunk = list(islice(rows, size))
        if not chunk:
            return
        yield chunk


def _iso_ms(epoch: float) -> str:
    """Return ``YYYY-MM-DDTHH:MM:SS.mmmZ`` for a UTC epoch."""
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _without_null_feedback(rec: dict) -> dict:
    """Return the record without ``feedback`` when it has none (most logs omit it)."""
    if rec["feedback"] is None:
        rec = dict(rec)
        del rec["feedback"]
    return rec


def _second_uniform(u: float) -> float:
    """Return another uniform number in [0, 1) derived from ``u``, nearly independent of
    it (for a second variation of the same row)."""
    return (u * 7919.0) % 1.0


def _system_message(row: _Row) -> str:
    """Return the system prompt of a row with its retrieved context appended."""
    return f"{row.system}\n\nContext:\n{row.rec['context']}"


def _usage(rec: dict) -> dict:
    pt, ct = rec["prompt_tokens"], rec["completion_tokens"]
    return {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}


def _request_metadata(rec: dict) -> dict:
    """Return what the app attaches to its OpenAI requests (``metadata``, strings only)."""
    return {"prompt_name": rec["prompt_name"], "prompt_version": rec["prompt_version"],
            "git_commit": rec["git_commit"], "session_id": rec["session_id"]}


def _completion(row: _Row, created: int, message: dict, finish_reason: str = "stop") -> dict:
    """Return an OpenAI chat.completion response body for a row."""
    rec = row.rec
    return {
        "id": rec["log_id"],
        "object": "chat.completion",
        "created": created,
        "model": rec["model"],
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": _usage(rec),
        "system_fingerprint": "fp_" + rec["git_commit"] + "e1",
    }


class _Writer:
    """Writes the rows of one source in one format into a day's landing folder."""

    files: tuple[str, ...] = ()

    def __init__(self, folder: Path, plan: _DayPlan, src: _Source):
        self.folder, self.plan, self.src = folder, plan, src

    def write(self, rows: list[_Row]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------
# Canonical formats
# ---------------------------------------------------------------------------------------


def _web_chat_line(row: _Row) -> str:
    """Return the JSON line of a web-chat row, with the variations real files have:
    ts as epoch seconds (5%), an unknown extra field (8%), explicit null feedback (2%)."""
    rec = row.rec
    u = row.u
    if u < 0.02:
        out = dict(rec)
    else:
        out = _without_null_feedback(rec)
        if u < 0.07:
            out = dict(out) if out is rec else out
            out["ts"] = int(row.epoch)
        elif u < 0.15:
            out = dict(out) if out is rec else out
            out["client_version"] = f"web-4.{12 + int(u * 100) % 3}.{int(u * 1000) % 10}"
    return _dumps(out)


def _bad_records(plan: _DayPlan, src: _Source, n_good: int) -> list[tuple[int, str, str]]:
    """Return the malformed lines of a day as (insert after good row #, kind, line).

    There are ``max(5, bad_record_rate * day's rows)`` of them, the kinds in turn (so
    every kind appears every day), spread evenly through the file; their log ids follow
    the good ones (``...-<n_good + j>``) so they never clash with a good record.
    """
    n_bad = max(len(BAD_RECORD_KINDS), round(plan.spec.bad_record_rate * plan.total_rows))
    out = []
    for j, row in enumerate(_source_rows(plan, src, n_bad, salt="bad")):
        kind = BAD_RECORD_KINDS[j % len(BAD_RECORD_KINDS)]
        rec = _without_null_feedback(dict(row.rec))
        rec["log_id"] = f"{src.name}-{plan.ymd}-{n_good + j:06d}"
        if kind == "missing_field":
            del rec["input"]
        elif kind == "wrong_type":
            rec["latency_ms"] = ("fast", "n/a", "1.2s")[j % 3]
        elif kind == "bad_timestamp":
            rec["ts"] = ("2025-13-45T99:00:00Z", "not a date", "31/02/2025 25:61")[j % 3]
        elif kind == "empty_output":
            rec["output"] = ""
        line = _dumps(rec)
        if kind == "broken_json":  # a line cut short, as a crashed writer leaves it
            line = line[: len(line) * 3 // 5]
        out.append(((j + 1) * n_good // (n_bad + 1), kind, line))
    return out


def _duplicate_lines(plan: _DayPlan, src: _Source) -> list[str]:
    """Return the first records of the previous day's file again, byte for byte (a
    client that re-sent its buffer): exact duplicates across partitions."""
    if plan.index == 0 or plan.spec.duplicates_per_day <= 0:
        return []
    prev = _day_plan(plan.spec, plan.index - 1)
    n_prev = prev.counts.get(src.name, 0)
    rows = islice(_source_rows(prev, src, n_prev), min(plan.spec.duplicates_per_day, n_prev))
    return [_web_chat_line(row) for row in rows]


class _CanonicalJsonlWriter(_Writer):
    """``web-chat.jsonl``: canonical lines, plus the day's bad records and duplicates."""

    def __init__(self, folder, plan, src):
        super().__init__(folder, plan, src)
        self.files = (f"{src.name}.jsonl",)
        self.out = _TextFile(folder / self.files[0])
        self.duplicates = _duplicate_lines(plan, src)
        self.bad = _bad_records(plan, src, plan.counts[src.name])
        self.out.write_lines(self.duplicates)
        self._next_bad = 0

    def write(self, rows):
        lines = []
        bad, k = self.bad, self._next_bad
        for row in rows:
            while k < len(bad) and bad[k][0] <= row.i:
                lines.append(bad[k][2])
                k += 1
            lines.append(_web_chat_line(row))
        self._next_bad = k
        self.out.write_lines(lines)

    def close(self):
        self.out.write_lines([line for _, _, line in self.bad[self._next_bad:]])
        self.out.close()

    def bad_counts(self) -> dict[str, int]:
        """Return the number of malformed lines written, per kind."""
        counts = {kind: 0 for kind in BAD_RECORD_KINDS}
        for _, kind, _ in self.bad:
            counts[kind] += 1
        return counts


class _GzipJsonlWriter(_Writer):
    """``docs-assistant.jsonl.gz``: canonical lines, gzipped."""

    def __init__(self, folder, plan, src):
        super().__init__(folder, plan, src)
        self.files = (f"{src.name}.jsonl.gz",)
        self.out = _TextFile(folder / self.files[0])

    def write(self, rows):
        self.out.write_lines([_dumps(_without_null_feedback(row.rec)) for row in rows])

    def close(self):
        self.out.close()


_CANONICAL_COLUMNS = ("log_id", "ts", "source", "input", "output", "context", "model", "prompt_name",
                      "prompt_version", "git_commit", "session_id", "user_id", "latency_ms",
                      "prompt_tokens", "completion_tokens", "cost_usd", "feedback", "tags", "metadata")
_PARQUET_SCHEMA = pa.schema(
    [(c, pa.string()) for c in _CANONICAL_COLUMNS[:12]]
    + [("latency_ms", pa.int64()), ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
       ("cost_usd", pa.float64()), ("feedback", pa.int64()), ("tags", pa.list_(pa.string())),
       ("metadata", pa.string())]
)


class _ParquetWriter(_Writer):
    """``api.parquet``: canonical columns, one row group per chunk; metadata as JSON text."""

    def __init__(self, folder, plan, src):
        super().__init__(folder, plan, src)
        self.files = (f"{src.name}.parquet",)
        self.out = pq.ParquetWriter(folder / self.files[0], _PARQUET_SCHEMA, compression="zstd")

    def write(self, rows):
        columns = {c: [row.rec[c] for row in rows] for c in _CANONICAL_COLUMNS[:-1]}
        columns["metadata"] = [_dumps(row.rec["metadata"]) for row in rows]
        self.out.write_table(pa.Table.from_pydict(columns, schema=_PARQUET_SCHEMA), row_group_size=len(rows))

    def close(self):
        self.out.close()


class _CsvWriter(_Writer):
    """``partner.csv``: canonical columns; tags and metadata as JSON text; empty = null."""

    def __init__(self, folder, plan, src):
        super().__init__(folder, plan, src)
        self.files = (f"{src.name}.csv",)
        self.out = _TextFile(folder / self.files[0])
        self.out.write_lines([",".join(_CANONICAL_COLUMNS)])

    def write(self, rows):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for row in rows:
            rec = row.rec
            values = [rec[c] for c in _CANONICAL_COLUMNS[:-2]]
            values[16] = "" if values[16] is None else values[16]
            writer.writerow(values + [_dumps(rec["tags"]), _dumps(rec["metadata"])])
        self.out.write(buffer.getvalue())

    def close(self):
        self.out.close()


# ---------------------------------------------------------------------------------------
# OpenAI request/response logs and the Batch API
# ---------------------------------------------------------------------------------------


def _tool_call(row: _Row) -> dict:
    """Return a help-center search tool call; its arguments are a JSON string (as the API
    returns them) or, from some loggers, an already-decoded object."""
    args = {"query": row.rec["input"][:80], "top_k": 3}
    return {
        "id": "call_" + row.rec["log_id"][-24:],
        "type": "function",
        "function": {"name": "search_help_center", "arguments": _dumps(args) if row.u < 0.88 else args},
    }


class _OpenAILogWriter(_Writer):
    """``mobile-openai.jsonl``: one request/response pair per line.

    Follow-up turns of a session carry the previous turn in ``messages``; about 10% of
    responses also call a tool (finish_reason ``tool_calls``, the answer in ``content``).
    """

    def __init__(self, folder, plan, src):
        super().__init__(folder, plan, src)
        self.files = (f"{src.name}-openai.jsonl",)
        self.out = _TextFile(folder / self.files[0])
        self.previous: dict | None = None

    def write(self, rows):
        lines = []
        for row in rows:
            rec = row.rec
            messages = [{"role": "system", "content": _system_message(row)}]
            prev = self.previous
            if prev is not None and prev["session_id"] == rec["session_id"]:
                messages += [{"role": "user", "content": prev["input"]},
                             {"role": "assistant", "content": prev["output"]}]
            messages.append({"role": "user", "content": rec["input"]})
            message = {"role": "assistant", "content": rec["output"]}
            finish = "stop"
            if row.u > 0.80 and row.u < 0.90:
                message["tool_calls"] = [_tool_call(row)]
                finish = "tool_calls"
            created = int(row.epoch)
            lines.append(_dumps({
                "timestamp": created,
                "workload_id": self.src.name,
                "client_id": "acme-mobile-ios" if row.u < 0.55 else "acme-mobile-android",
                "request": {
                    "model": _MODEL_INFO[rec["model"]][0],
                    "messages": messages,
                    "temperature": 0.2,
                    "user": rec["user_id"],
                    "metadata": _request_metadata(rec),
                },
                "response": _completion(row, created, message, finish),
            }))
            self.previous = rec
        self.out.write_lines(lines)

    def close(self):
        self.out.close()


class _BatchWriter(_Writer):
    """``batch-input.jsonl`` and ``batch-output.jsonl``: requests and results of the Batch
    API, matched by ``custom_id``; results come back in a different order, as they do."""

    files = ("batch-input.jsonl", "batch-output.jsonl")

    def __init__(self, folder, plan, src):
        super().__init__(folder, plan, src)
        self.inputs = _TextFile(folder / self.files[0])
        self.outputs = _TextFile(folder / self.files[1])
        self.chunk = 0

    def write(self, rows):
        plan, seed = self.plan, self.plan.spec.seed
        inputs, outputs = [], []
        for row in rows:
            rec = row.rec
            custom_id = f"req-{plan.ymd}-{row.i:06d}"
            metadata = _request_metadata(rec) | {"source": self.src.name}
            inputs.append(_dumps({
                "custom_id": custom_id,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": _MODEL_INFO[rec["model"]][0],
                    "messages": [{"role": "system", "content": _system_message(row)},
                                 {"role": "user", "content": rec["input"]}],
                    "temperature": 0.2,
                    "user": rec["user_id"],
                    "metadata": metadata,
                },
            }))
            key = _id_key(seed, plan.date, self.src.index, _KIND_MISC, row.i)
            message = {"role": "assistant", "content": rec["output"]}
            outputs.append(_dumps({
                "id": f"batch_req_{key:016x}",
                "custom_id": custom_id,
                "response": {
                    "status_code": 200,
                    "request_id": f"req_{_mix64(key):016x}",
                    "body": _completion(row, int(row.epoch), message),
                },
                "error": None,
            }))
        random.Random(f"batch-order|{seed}|{plan.day}|{self.chunk}").shuffle(outputs)
        self.chunk += 1
        self.inputs.write_lines(inputs)
        self.outputs.write_lines(outputs)

    def close(self):
        self.inputs.close()
        self.outputs.close()


# ---------------------------------------------------------------------------------------
# OpenTelemetry GenAI spans (OTLP/JSON)
# ---------------------------------------------------------------------------------------


def _attr(key: str, value) -> dict:
    """Return one OTLP/JSON attribute (ints as strings, as the protobuf JSON mapping has it)."""
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    if isinstance(value, list):
        return {"key": key, "value": {"arrayValue": {"values": [{"stringValue": v} for v in value]}}}
    return {"key": key, "value": {"stringValue": value}}


def _nanos(epoch: float) -> str:
    return str(int(round(epoch * 1000)) * 1_000_000)


def _genai_attributes(row: _Row) -> tuple[str, list[dict]]:
    """Return (instrumentation scope, attributes) of a row's LLM span in the current
    ``gen_ai.*`` conventions (72%), older OpenLLMetry names (16%) or OpenInference (12%).

    Every variant also carries OpenInference's ``session.id``, ``user.id`` and
    ``llm.prompt_template.version``, which is where the app puts them.
    """
    rec = row.rec
    alias, provider = _MODEL_INFO[rec["model"]][:2]
    system = _system_message(row)
    common = [_attr("session.id", rec["session_id"]), _attr("user.id", rec["user_id"]),
              _attr("llm.prompt_template.version", rec["prompt_version"])]
    if row.u < 0.72:
        return "opentelemetry.instrumentation.openai_v2", [
            _attr("gen_ai.operation.name", "chat"),
            _attr("gen_ai.provider.name", provider),
            _attr("gen_ai.request.model", alias),
            _attr("gen_ai.request.temperature", 0.2),
            _attr("gen_ai.response.model", rec["model"]),
            _attr("gen_ai.response.finish_reasons", ["stop"]),
            _attr("gen_ai.usage.input_tokens", rec["prompt_tokens"]),
            _attr("gen_ai.usage.output_tokens", rec["completion_tokens"]),
            _attr("gen_ai.input.messages", _dumps([
                {"role": "system", "parts": [{"type": "text", "content": system}]},
                {"role": "user", "parts": [{"type": "text", "content": rec["input"]}]},
            ])),
            _attr("gen_ai.output.messages", _dumps([
                {"role": "assistant", "parts": [{"type": "text", "content": rec["output"]}], "finish_reason": "stop"},
            ])),
        ] + common
    if row.u < 0.88:
        return "opentelemetry.instrumentation.openai", [
            _attr("gen_ai.system", provider),
            _attr("llm.request.type", "chat"),
            _attr("gen_ai.request.model", alias),
            _attr("gen_ai.response.model", rec["model"]),
            _attr("gen_ai.usage.prompt_tokens", rec["prompt_tokens"]),
            _attr("gen_ai.usage.completion_tokens", rec["completion_tokens"]),
            _attr("gen_ai.prompt.0.role", "system"),
            _attr("gen_ai.prompt.0.content", system),
            _attr("gen_ai.prompt.1.role", "user"),
            _attr("gen_ai.prompt.1.content", rec["input"]),
            _attr("gen_ai.completion.0.role", "assistant"),
            _attr("gen_ai.completion.0.content", rec["output"]),
            _attr("gen_ai.completion.0.finish_reason", "stop"),
        ] + common
    pt, ct = rec["prompt_tokens"], rec["completion_tokens"]
    return "openinference.instrumentation.openai", [
        _attr("openinference.span.kind", "LLM"),
        _attr("llm.model_name", rec["model"]),
        _attr("llm.provider", provider),
        _attr("llm.invocation_parameters", '{"temperature": 0.2}'),
        _attr("llm.input_messages.0.message.role", "system"),
        _attr("llm.input_messages.0.message.content", system),
        _attr("llm.input_messages.1.message.role", "user"),
        _attr("llm.input_messages.1.message.content", rec["input"]),
        _attr("llm.output_messages.0.message.role", "assistant"),
        _attr("llm.output_messages.0.message.content", rec["output"]),
        _attr("llm.token_count.prompt", pt),
        _attr("llm.token_count.completion", ct),
        _attr("llm.token_count.total", pt + ct),
        _attr("input.value", rec["input"]),
        _attr("input.mime_type", "text/plain"),
        _attr("output.value", rec["output"]),
        _attr("output.mime_type", "text/plain"),
    ] + common


class _OtelWriter(_Writer):
    """``support-bot-otel.jsonl``: one ExportTraceServiceRequest per line, 1-6 traces each.

    A trace is the LLM span (its spanId is the log id), in 40% of traces under an HTTP
    server span, which in half of those also has a knowledge-base HTTP client span.
    """

    def __init__(self, folder, plan, src):
        super().__init__(folder, plan, src)
        self.files = (f"{src.name}-otel.jsonl",)
        self.out = _TextFile(folder / self.files[0])
        self.resource = {"attributes": [
            _attr("service.name", src.name), _attr("service.version", "2.8.1"),
            _attr("deployment.environment.name", "production"), _attr("telemetry.sdk.language", "python"),
        ]}

    def _key(self, kind: int, i: int) -> int:
        return _id_key(self.plan.spec.seed, self.plan.date, self.src.index, kind, i)

    def _spans(self, row: _Row) -> list[tuple[str, dict]]:
        """Return the (scope, span) pairs of one row's trace."""
        rec = row.rec
        i = row.i
        trace_id = f"{self._key(_KIND_TRACE, i):016x}{_mix64(self._key(_KIND_TRACE, i)):016x}"
        start = row.epoch
        end = start + rec["latency_ms"] / 1000.0
        scope, attributes = _genai_attributes(row)
        llm = {"traceId": trace_id, "spanId": rec["log_id"], "name": f"chat {_MODEL_INFO[rec['model']][0]}",
               "kind": 3, "startTimeUnixNano": _nanos(start), "endTimeUnixNano": _nanos(end),
               "attributes": attributes, "status": {}}
        v = _second_uniform(row.u)  # independent of the attribute variant chosen by u
        if v >= 0.4:  # 60% of traces are the LLM span only
            return [(scope, llm)]
        root_id = f"{self._key(_KIND_HTTP, 2 * i):016x}"
        llm["parentSpanId"] = root_id
        root = {"traceId": trace_id, "spanId": root_id, "name": "POST /api/support/chat", "kind": 2,
                "startTimeUnixNano": _nanos(start - 0.12), "endTimeUnixNano": _nanos(end + 0.02),
                "attributes": [_attr("http.request.method", "POST"), _attr("url.path", "/api/support/chat"),
                               _attr("http.route", "/api/support/chat"), _attr("http.response.status_code", 200)],
                "status": {}}
        spans = [("opentelemetry.instrumentation.fastapi", root)]
        if v < 0.2:
            spans.append(("opentelemetry.instrumentation.requests", {
                "traceId": trace_id, "spanId": f"{self._key(_KIND_HTTP, 2 * i + 1):016x}",
                "parentSpanId": root_id, "name": "GET", "kind": 3,
                "startTimeUnixNano": _nanos(start - 0.11), "endTimeUnixNano": _nanos(start - 0.01),
                "attributes": [_attr("http.request.method", "GET"), _attr("url.full", "http://kb-search:8080/search"),
                               _attr("server.address", "kb-search"), _attr("http.response.status_code", 200)],
                "status": {}}))
        return spans + [(scope, llm)]

    def write(self, rows):
        lines = []
        k = 0
        while k < len(rows):
            size = 1 + int(rows[k].u * 997) % 6  # 1-6 traces per export request
            scopes: dict[str, list[dict]] = {}
            for row in rows[k:k + size]:
                for scope, span in self._spans(row):
                    scopes.setdefault(scope, []).append(span)
            k += size
            lines.append(_dumps({"resourceSpans": [{
                "resource": self.resource,
                "scopeSpans": [{"scope": {"name": name}, "spans": spans} for name, spans in scopes.items()],
            }]}))
        self.out.write_lines(lines)

    def close(self):
        self.out.close()


# ---------------------------------------------------------------------------------------
# Langfuse trace export
# ---------------------------------------------------------------------------------------


def _langfuse_observation_id(plan: _DayPlan, src: _Source, i: int) -> str:
    """Return the id of the GENERATION observation of a Langfuse trace (row ``i``)."""
    return _uuid(_id_key(plan.spec.seed, plan.date, src.index, _KIND_OBS, i))


class _LangfuseWriter(_Writer):
    """``langfuse-traces.json``: a JSON array of traces with one GENERATION each; thumbs
    up/down feedback is a BOOLEAN ``user-feedback`` score (1 = up, 0 = down) sent through
    the API, which ingestion reads as feedback 1 and -1. The generation links the prompt
    by ``promptName`` and its integer ``promptVersion`` (see :func:`_logged_version`)."""

    def __init__(self, folder, plan, src):
        super().__init__(folder, plan, src)
        self.files = ("langfuse-traces.json",)
        self.out = _JsonArray(folder / self.files[0])

    def _trace(self, row: _Row) -> dict:
        rec = row.rec
        start = row.epoch
        end = start + rec["latency_ms"] / 1000.0
        number = int(rec["prompt_version"].lstrip("v"))
        observation = {
            "id": _langfuse_observation_id(self.plan, self.src, row.i),
            "traceId": rec["log_id"],
            "type": "GENERATION",
            "name": "llm",
            "startTime": _iso_ms(start),
            "endTime": _iso_ms(end),
            "model": rec["model"],
            "modelParameters": {"temperature": 0.2},
            "input": [{"role": "system", "content": _system_message(row)},
                      {"role": "user", "content": rec["input"]}],
            "output": {"role": "assistant", "content": rec["output"]},
            "usage": {"input": rec["prompt_tokens"], "output": rec["completion_tokens"],
                      "total": rec["prompt_tokens"] + rec["completion_tokens"], "unit": "TOKENS"},
            "promptName": rec["prompt_name"],
            "promptVersion": number,
            "level": "DEFAULT",
            "calculatedTotalCost": rec["cost_usd"],
        }
        scores = []
        if rec["feedback"] in (-1, 1):
            scores.append({
                "id": "fb-" + rec["log_id"],
                "traceId": rec["log_id"],
                "name": "user-feedback",
                "source": "API",
                "dataType": "BOOLEAN",
                "value": 1 if rec["feedback"] == 1 else 0,
                "stringValue": "True" if rec["feedback"] == 1 else "False",
                "timestamp": _iso_ms(end + 30),
                "comment": None,
            })
        return {
            "id": rec["log_id"],
            "timestamp": _iso_ms(start),
            "name": self.src.name,
            "input": {"question": rec["input"], "context": rec["context"]},
            "output": rec["output"],
            "sessionId": rec["session_id"],
            "userId": rec["user_id"],
            "release": rec["git_commit"],
            "version": f"v{number}",  # the app's own name of the prompt release
            "tags": rec["tags"],
            "metadata": {"source": self.src.name, "prompt_name": rec["prompt_name"],
                         "locale": rec["metadata"]["locale"]},
            "environment": "production",
            "public": False,
            "latency": round(end - start, 3),
            "totalCost": rec["cost_usd"],
            "observations": [observation],
            "scores": scores,
        }

    def write(self, rows):
        self.out.write([_dumps(self._trace(row)) for row in rows])

    def close(self):
        self.out.close()


_WRITERS: dict[str, type[_Writer]] = {
    "canonical_jsonl": _CanonicalJsonlWriter,
    "canonical_jsonl_gz": _GzipJsonlWriter,
    "parquet": _ParquetWriter,
    "csv": _CsvWriter,
    "openai": _OpenAILogWriter,
    "openai_batch": _BatchWriter,
    "otel": _OtelWriter,
    "langfuse": _LangfuseWriter,
}


# ---------------------------------------------------------------------------------------
# The ground truth
# ---------------------------------------------------------------------------------------

TRUTH_SCHEMA = pa.schema([
    ("log_id", pa.string()),
    ("day", pa.string()),
    ("source", pa.string()),
    ("topic", pa.string()),
    ("model", pa.string()),
    ("prompt_version", pa.string()),  # as the logs carry it ("13" in Langfuse traces)
    ("user_id", pa.string()),
    ("hallucinated", pa.bool_()),
    ("off_topic", pa.bool_()),
    ("planted", pa.list_(pa.string())),
    ("pii", pa.string()),  # email | phone | card | api_key, or null
    ("feedback", pa.int64()),  # as the logs carry it (null where the format has none)
])
_FORMATS_WITH_FEEDBACK = _CANONICAL_FORMATS


def _visible_feedback(fmt: str, feedback: int | None) -> int | None:
    """Return the feedback a format carries: all of it in canonical formats, thumbs up or
    down in Langfuse scores, nothing in OpenAI logs and spans."""
    if fmt in _FORMATS_WITH_FEEDBACK:
        return feedback
    if fmt == "langfuse" and feedback in (-1, 1):
        return feedback
    return None


class _TruthWriter:
    """``demo/truth-YYYY-MM-DD.parquet``: one row per good record, by the ingested id."""

    def __init__(self, path: Path, day: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.day = path, day
        self.out = pq.ParquetWriter(path, TRUTH_SCHEMA, compression="zstd")

    def write(self, rows: list[_Row], src: _Source) -> None:
        recs = [row.rec for row in rows]
        self.out.write_table(pa.Table.from_pydict({
            "log_id": [r["log_id"] for r in recs],
            "day": [self.day] * len(rows),
            "source": [src.name] * len(rows),
            "topic": [row.topic for row in rows],
            "model": [r["model"] for r in recs],
            "prompt_version": [r["prompt_version"] for r in recs],
            "user_id": [r["user_id"] for r in recs],
            "hallucinated": [row.hallucinated for row in rows],
            "off_topic": [row.off_topic for row in rows],
            "planted": [list(row.planted) for row in rows],
            "pii": [row.pii for row in rows],
            "feedback": [_visible_feedback(src.fmt, r["feedback"]) for r in recs],
        }, schema=TRUTH_SCHEMA))

    def close(self) -> None:
        self.out.close()


# ---------------------------------------------------------------------------------------
# Annotations
# ---------------------------------------------------------------------------------------

# Three annotators per tool, each with their own error rate (label flips).
_NOISE = (0.04, 0.07, 0.10)
_CSV_ANNOTATORS = ("maria.k", "devon.r", "li.wei")
_CSV_VALUE_STYLES = (("1", "0"), ("true", "false"), ("yes", "no"))  # each annotator writes values their way
_LS_USERS = ({"id": 10, "email": "maria.k@acme.example"}, {"id": 11, "email": "devon.r@acme.example"},
             {"id": 12, "email": "li.wei@acme.example"})
_LS_CANCELLING_USER = {"id": 13, "email": "temp.annotator@acme.example"}
_ARGILLA_USERS = ("5c1e3f0a-7d2b-4c61-9a3e-0b8f1d2c4e51", "9a7f2b6c-1e4d-4f3a-8c5b-6d0e2f1a3b72",
                  "e2d4a6b8-3c5e-4a7f-9b1d-2f4e6a8c0d93")
_LANGFUSE_ANNOTATORS = ("lena.h@acme.example", "omar.s@acme.example", "julia.p@acme.example")
_LANGFUSE_SCORE_COLUMNS = ("id", "traceId", "sessionId", "datasetRunId", "timestamp", "source", "name",
                           "dataType", "value", "stringValue", "comment", "metadata", "observationId",
                           "traceName", "userId", "traceTags", "environment")
_HALLUCINATION_COMMENTS = ("number not in the context", "made-up policy", "contradicts the help center article",
                           "invented detail")
_IRRELEVANT_COMMENTS = ("answers a different question", "generic deflection", "doesn't address the question")


class _Annotations:
    """The day's label files in the annotations inbox, written as rows stream by.

    A share ``annotation_rate`` of each source's rows (and always its first row, so that
    every tool gets some items even on tiny days) is labelled for ``hallucination`` and
    ``relevance`` by 1 (65%), 2 (25%) or 3 (10%) annotators of one tool. Rows of the
    Langfuse source are labelled in Langfuse (score CSV, one annotator); the others go
    to the canonical CSV, Label Studio or Argilla (the first three items of the day one
    each). Labels are the truth, flipped with the annotator's error rate.
    """

    def __init__(self, inbox: Path, plan: _DayPlan):
        inbox.mkdir(parents=True, exist_ok=True)
        self.plan = plan
        self.rng = random.Random(f"flywheel-demo|{plan.spec.seed}|{plan.day}|annotations")
        names = [f.format(day=plan.day) for f in ANNOTATION_FILES]
        self.files = names
        self.labels = {n: 0 for n in names}
        self.csv_file = _TextFile(inbox / names[0])
        self.csv_file.write_lines(["log_id,annotator,label,value,comment,created_at"])
        self.label_studio = _JsonArray(inbox / names[1])
        self.argilla = _TextFile(inbox / names[2])
        self.langfuse = _TextFile(inbox / names[3])
        self.langfuse.write_lines([",".join(_LANGFUSE_SCORE_COLUMNS)])
        self.forced = ["csv", "label_studio", "argilla"]
        self.next_task = 1 + 10_000_000 * plan.index  # room for the tasks of 10M-row days
        self.cancelled_written = False
        self.next_day = (plan.date + dt.timedelta(days=1)).isoformat()

    # -- choosing -------------------------------------------------------------------
    def offer(self, rows: list[_Row], src: _Source) -> None:
        """Sample rows of a chunk and write their labels."""
        buffers = {"csv": [], "label_studio": [], "argilla": [], "langfuse": []}
        rate = self.plan.spec.annotation_rate
        r = self.rng.random
        for row in rows:
            if not (r() < rate or row.i == 0):
                continue
            if src.fmt == "langfuse":
                tool, n = "langfuse", 1
            else:
                tool = self.forced.pop(0) if self.forced else self._pick_tool()
                u = r()
                n = 1 if u < 0.65 else 2 if u < 0.90 else 3
            annotators = sorted(self.rng.sample(range(3), n))
            getattr(self, "_" + tool)(row, src, annotators, buffers[tool])
        self.csv_file.write_lines(buffers["csv"])
        self.label_studio.write(buffers["label_studio"])
        self.argilla.write_lines(buffers["argilla"])
        self.langfuse.write_lines(buffers["langfuse"])

    def _pick_tool(self) -> str:
        u = self.rng.random()
        return "csv" if u < 0.45 else "label_studio" if u < 0.75 else "argilla"

    def _labels(self, row: _Row, annotator: int) -> tuple[int, int]:
        """Return (hallucination, relevance) as one annotator labels the row (1 = yes)."""
        hall, rel = int(row.hallucinated), int(not row.off_topic)
        if self.rng.random() < _NOISE[annotator]:
            hall = 1 - hall
        if self.rng.random() < _NOISE[annotator]:
            rel = 1 - rel
        return hall, rel

    def _created_at(self) -> str:
        """Return a time on the next day (people label yesterday's logs)."""
        return f"{self.next_day}T{_hms_table()[int(self.rng.random() * 86400)]}Z"

    def _csv_line(self, values: list) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow(values)
        return buffer.getvalue()

    # -- tools ----------------------------------------------------------------------
    def _csv(self, row, src, annotators, out):
        for a in annotators:
            hall, rel = self._labels(row, a)
            created = self._created_at()
            yes, no = _CSV_VALUE_STYLES[a]
            for label, value, comments in (("hallucination", hall, _HALLUCINATION_COMMENTS),
                                           ("relevance", rel, _IRRELEVANT_COMMENTS)):
                bad = value == 1 if label == "hallucination" else value == 0
                comment = self.rng.choice(comments) if bad and self.rng.random() < 0.3 else ""
                out.append(self._csv_line([row.rec["log_id"], _CSV_ANNOTATORS[a], label,
                                           yes if value else no, comment, created]))
        self.labels[self.files[0]] += 2 * len(annotators)

    def _ls_annotation(self, task_id: int, number: int, user: dict, hall: int, rel: int, cancelled: bool) -> dict:
        created = self._created_at()
        ann_id = task_id * 10 + number
        return {
            "id": ann_id,
            "completed_by": user if self.rng.random() < 0.5 else user["id"],
            "result": [
                {"id": f"h{ann_id}", "type": "choices", "value": {"choices": ["Yes" if hall else "No"]},
                 "origin": "manual", "to_name": "output", "from_name": "hallucination"},
                {"id": f"r{ann_id}", "type": "choices", "value": {"choices": ["Relevant" if rel else "Irrelevant"]},
                 "origin": "manual", "to_name": "output", "from_name": "relevance"},
            ],
            "was_cancelled": cancelled,
            "ground_truth": False,
            "created_at": created,
            "updated_at": created,
            "lead_time": round(5 + self.rng.random() * 90, 3),
            "task": task_id,
        }

    def _label_studio(self, row, src, annotators, out):
        task_id = self.next_task
        self.next_task += 1
        annotations = []
        for k, a in enumerate(annotators):
            hall, rel = self._labels(row, a)
            annotations.append(self._ls_annotation(task_id, k, _LS_USERS[a], hall, rel, False))
        cancelled = 0
        if not self.cancelled_written:  # one skipped annotation a day: not a label
            hall, rel = int(not row.hallucinated), int(row.off_topic)
            annotations.append(self._ls_annotation(task_id, 9, _LS_CANCELLING_USER, hall, rel, True))
            self.cancelled_written = True
            cancelled = 1
        rec = row.rec
        out.append(_dumps({
            "id": task_id,
            "data": {"log_id": rec["log_id"], "input": rec["input"], "output": rec["output"],
                     "context": rec["context"], "source": src.name},
            "annotations": annotations,
            "predictions": [],
            "meta": {},
            "created_at": f"{self.plan.day}T23:30:00Z",
            "project": 7,
            "total_annotations": len(annotators),
            "cancelled_annotations": cancelled,
        }))
        self.labels[self.files[1]] += 2 * len(annotators)

    def _argilla(self, row, src, annotators, out):
        responses = {"hallucination": [], "relevance": []}
        for a in annotators:
            hall, rel = self._labels(row, a)
            responses["hallucination"].append({"value": "yes" if hall else "no", "user_id": _ARGILLA_USERS[a]})
            responses["relevance"].append({"value": "relevant" if rel else "unrelated", "user_id": _ARGILLA_USERS[a]})
        rec = row.rec
        out.append(_dumps({
            "id": rec["log_id"],
            "status": "completed",
            "fields": {"input": rec["input"], "output": rec["output"], "context": rec["context"]},
            "metadata": {"source": src.name, "log_id": rec["log_id"]},
            "suggestions": {},
            "responses": responses,
        }))
        self.labels[self.files[2]] += 2 * len(annotators)

    def _langfuse(self, row, src, annotators, out):
        rec = row.rec
        observation = _langfuse_observation_id(self.plan, src, row.i)
        for a in annotators:
            hall, rel = self._labels(row, a)
            created = self._created_at()
            for label, value in (("hallucination", hall), ("relevance", rel)):
                out.append(self._csv_line([
                    f"{label[:3]}-{rec['log_id']}-{a}", rec["log_id"], rec["session_id"], "", created,
                    "ANNOTATION", label, "BOOLEAN", value, "True" if value else "False", "",
                    _dumps({"annotator": _LANGFUSE_ANNOTATORS[a]}), observation, src.name,
                    rec["user_id"], _dumps(rec["tags"]), "production",
                ]))
        self.labels[self.files[3]] += 2 * len(annotators)

    def close(self) -> None:
        self.csv_file.close()
        self.label_studio.close()
        self.argilla.close()
        self.langfuse.close()


# ---------------------------------------------------------------------------------------
# generate()
# ---------------------------------------------------------------------------------------


def _generate_day(home: Path, spec: DemoSpec, index: int, progress: Callable[[str], None]) -> DaySummary:
    """Write one day: landing files, truth, annotation files. Returns its summary."""
    plan = _day_plan(spec, index)
    landing = home / "landing" / plan.day
    landing.mkdir(parents=True, exist_ok=True)
    truth_path = home / "demo" / f"truth-{plan.day}.parquet"
    truth = _TruthWriter(truth_path, plan.day)
    annotations = _Annotations(home / "annotations" / "inbox", plan)
    rows: dict[str, int] = {}
    files: list[str] = []
    bad: dict[str, int] = {kind: 0 for kind in BAD_RECORD_KINDS}
    duplicates = 0
    for src in SOURCES:
        n = plan.counts.get(src.name, 0)
        if not n:
            continue
        writer = _WRITERS[src.fmt](landing, plan, src)
        for chunk in _chunks(_source_rows(plan, src, n)):
            writer.write(chunk)
            truth.write(chunk, src)
            annotations.offer(chunk, src)
        writer.close()
        if isinstance(writer, _CanonicalJsonlWriter):
            bad = writer.bad_counts()
            duplicates = len(writer.duplicates)
        rows[src.fmt] = n
        files.extend(writer.files)
        progress(f"{plan.day}: {n} rows of {src.name} -> {', '.join(writer.files)}")
    truth.close()
    annotations.close()
    progress(f"{plan.day}: {sum(annotations.labels.values())} labels in {len(annotations.files)} inbox files")
    return DaySummary(
        day=plan.day,
        rows=rows,
        files=files,
        bad_records=bad,
        duplicates=duplicates,
        annotation_files=annotations.files,
        annotation_labels=annotations.labels,
        truth_file=str(truth_path.relative_to(home)),
    )


def write_prompt_templates(home: Path) -> list[Path]:
    """Write ``prompts/templates/<prompt_name>.txt`` for every prompt name of the demo
    application (its v12 system prompt with a ``{few_shot}`` place), keeping templates
    that exist already. Returns the files written."""
    folder = Path(home) / "prompts" / "templates"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted({src.prompt_name for src in SOURCES}):
        path = folder / f"{name}.txt"
        if not path.exists():
            path.write_text(_SYSTEM_PROMPTS["v12"] + "\n\n{few_shot}\n", encoding="utf-8")
            written.append(path)
    return written


def generate(home: Path, spec: DemoSpec, *, progress: Callable[[str], None] | None = None) -> DemoSummary:
    """Write the demo data of every day of ``spec`` into the flywheel home ``home``.

    Writes ``landing/YYYY-MM-DD/*`` (see the module docstring), ``annotations/inbox/*``,
    ``demo/truth-YYYY-MM-DD.parquet``, ``demo/summary.json`` and the prompt templates of
    :func:`write_prompt_templates`, streaming in chunks so memory stays flat. Existing
    files of the same names are replaced (templates are kept). Returns the
    summary (rows per format, bad records, duplicates, annotation files, per day).
    """
    home = Path(home)
    report = progress or (lambda message: None)
    summary = DemoSummary(home=home, spec=spec)
    for index in range(spec.days):
        summary.days.append(_generate_day(home, spec, index, report))
    for written in write_prompt_templates(home):
        report(f"prompt template {written.relative_to(home)}")
    path = home / "demo" / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    return summary
