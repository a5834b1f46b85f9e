"""Tests of `integrations.twilio`: signatures, webhook parsing, replies and sending.

Signature vectors are twilio-python's own unit-test vectors (see
``shared/fixtures/twilio/signature.md``); webhook payloads are the real
captures in ``shared/fixtures/twilio/inbound_*.json``.
"""

from __future__ import annotations

import json
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from engine.ports import InboundMessage
from integrations.twilio import (
    MAX_BODY_CHARS,
    InboundForm,
    TwilioSender,
    parse_address,
    parse_inbound,
    public_url,
    signature_is_valid,
    split_body,
    twiml_reply,
)
from tests.fakes.twilio_server import FakeTwilio

# shared/ stands beside the project root, in CI too (DESIGN.md, "How it is tested").
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "twilio"

# --- signatures ------------------------------------------------------------------

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
REPEATED = [
    ("Sid", "CA123"),
    ("SidAccount", "AC123"),
    ("Digits", "5678"),
    ("Digits", "1234"),
    ("Digits", "1234"),
]
BODY_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"


@pytest.mark.parametrize(
    ("url", "signature"),
    [
        (URL, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("http://mycompany.com:1234/myapp.php?foo=1&bar=2", "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", "kvajT1Ptam85bY51eRf/AJRuM3w="),
        ("http://mycompany.com:80/myapp.php?foo=1&bar=2", "0ZXoZLH/DfblKGATFgpif+LLRf4="),
    ],
)
def test_official_vectors_with_ports(url: str, signature: str) -> None:
    assert signature_is_valid(TOKEN, url, PARAMS, signature)
    assert signature_is_valid(TOKEN, url, MultiDict(PARAMS), signature)


def test_default_port_may_be_added_or_removed() -> None:
    # The validator tries the URL with and without the default port.
    assert signature_is_valid(TOKEN, URL, PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w=")
    assert signature_is_valid(
        TOKEN,
        "https://mycompany.com:443/myapp.php?foo=1&bar=2",
        PARAMS,
        "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
    )


@pytest.mark.parametrize(
    "params",
    [
        MultiDict(REPEATED),
        {"Sid": "CA123", "SidAccount": "AC123", "Digits": ["5678", "1234", "1234"]},
        {"Sid": ["CA123"], "SidAccount": ["AC123"], "Digits": ["1234", "5678", "1234"]},
        MultiDict(parse_qsl("Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234&Digits=1234")),
    ],
    ids=["multidict", "dict-of-lists-mixed", "dict-of-lists", "parsed-body"],
)
def test_official_vector_repeated_keys(params: Any) -> None:
    assert signature_is_valid(TOKEN, URL, params, "IK+Dwps556ElfBT0I3Rgjkr1wJU=")


def test_repeated_keys_all_values_count() -> None:
    only_first = {"Sid": "CA123", "SidAccount": "AC123", "Digits": "5678"}
    assert not signature_is_valid(TOKEN, URL, only_first, "IK+Dwps556ElfBT0I3Rgjkr1wJU=")


def test_official_vector_json_body() -> None:
    body = '{"property": "value", "boolean": true}'
    url = f"{URL}&bodySHA256={BODY_HASH}"
    assert signature_is_valid(TOKEN, url, body, "a9nBmqA0ju/hNViExpshrM61xv4=")
    assert not signature_is_valid(TOKEN, url, body + " ", "a9nBmqA0ju/hNViExpshrM61xv4=")
    # A raw body without bodySHA256 in the URL is never valid.
    assert not signature_is_valid(TOKEN, URL, body, "a9nBmqA0ju/hNViExpshrM61xv4=")


@pytest.mark.parametrize("signature", [None, "", "RSOYDt4T1cUTdK1PDd93/VVr8B8", "x" * 28])
def test_missing_or_wrong_signature_is_false(signature: str | None) -> None:
    assert signature_is_valid(TOKEN, URL, PARAMS, signature) is False


def test_every_parameter_counts() -> None:
    good = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert not signature_is_valid(TOKEN, URL, {**PARAMS, "NewTwilioParam": "x"}, good)
    assert not signature_is_valid(TOKEN, URL, {**PARAMS, "Digits": "1235"}, good)
    assert not signature_is_valid("54321", URL, PARAMS, good)
    assert not signature_is_valid(TOKEN, URL.replace("foo=1", "foo=2"), PARAMS, good)
    assert not signature_is_valid(TOKEN, "https://mycompany.com:x/myapp.php", PARAMS, good)


def test_empty_auth_token_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="auth_token"):
        signature_is_valid("", URL, PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


@pytest.mark.parametrize("base", ["https://parley.example.com", "https://parley.example.com/"])
def test_public_url(base: str) -> None:
    assert public_url(base, "/twilio/inbound", "") == "https://parley.example.com/twilio/inbound"
    assert public_url(base, "twilio/inbound", b"a=1&b=%2B") == (
        "https://parley.example.com/twilio/inbound?a=1&b=%2B"
    )
    assert public_url(base, "/x", "?y=1") == "https://parley.example.com/x?y=1"


def test_public_url_keeps_a_path_prefix_and_rejects_non_urls() -> None:
    assert public_url("https://h.example/parley/", "/in", "") == "https://h.example/parley/in"
    for bad in ["", "parley.example.com", "ftp://h.example", "https://h.example/?x=1"]:
        with pytest.raises(ValueError, match="PUBLIC_BASE_URL"):
            public_url(bad, "/in", "")


def test_signature_round_trip_behind_a_proxy() -> None:
    form = MultiDict([("Body", "hi & <bye>"), ("From", "whatsapp:+15551234567"), ("X", "1")])
    twilio_url = "https://parley.example.com/twilio/inbound?tenant=7"
    signature = RequestValidator("secret").compute_signature(twilio_url, form)
    url = public_url("https://parley.example.com/", "/twilio/inbound", b"tenant=7")
    assert signature_is_valid("secret", url, form, signature)
    internal = "http://10.0.0.5:8000/twilio/inbound?tenant=7"
    assert not signature_is_valid("secret", internal, form, signature)


# --- addresses --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("whatsapp:+15551234567", ("whatsapp", "+15551234567")),
        ("+15551234567", ("sms", "+15551234567")),
        ("+31612345678", ("sms", "+31612345678")),
        ("+12345678", ("sms", "+12345678")),  # 8 digits
        ("whatsapp:+123456789012345", ("whatsapp", "+123456789012345")),  # 15 digits
    ],
)
def test_parse_address(address: str, expected: tuple[str, str]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize(
    "address",
    [
        "",
        "+1234567",  # 7 digits
        "+1234567890123456",  # 16 digits: E.164 has at most 15
        "+0123456789",  # no country code starts with 0
        "15551234567",
        "whatsapp:15551234567",
        " 15551234567",  # '+' decoded as a space
        "+1 555 123 4567",
        "+1555123456a",
        "+\u0661\u0665\u0665\u0665\u0661\u0662\u0663\u0664\u0665\u0666\u0667",  # Arabic digits
        "whatsapp:US.1234",  # business-scoped user id, no phone
        "messenger:+15551234567",
        "384387",  # short code
        "+15551234567\n",
    ],
)
def test_parse_address_rejects(address: str) -> None:
    with pytest.raises(ValueError, match=r"phone number|empty"):
        parse_address(address)


def test_parse_address_explains_unencoded_plus() -> None:
    with pytest.raises(ValueError, match="%2B"):
        parse_address(" 15551234567")


# --- inbound webhook ----------------------------------------------------------------


def _samples(name: str) -> list[dict[str, Any]]:
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"Twilio fixtures not available: {path} is missing")
    return json.loads(path.read_text(encoding="utf-8"))["samples"]


def _form_samples(name: str) -> dict[str, dict[str, str]]:
    """Samples captured as form bodies, parsed as Werkzeug parses them."""
    forms = {}
    for sample in _samples(name):
        if "raw_form_body_verbatim" in sample:
            form = dict(parse_qsl(sample["raw_form_body_verbatim"], keep_blank_values=True))
            assert form == sample["parsed_mechanically"]
            forms[sample["id"]] = form
    return forms


def _js_body(sample: dict[str, Any]) -> dict[str, str]:
    """The literal ``"Key": "value"`` pairs of a twilio-labs event's body."""
    body = sample["file_text_verbatim"].split("body:", 1)[1]
    pairs = re.findall(r'"(\w+)"\s*:\s*("(?:[^"\\]|\\.)*")', body)
    return {key: json.loads(value) for key, value in pairs}


def test_parse_real_whatsapp_payloads() -> None:
    forms = _form_samples("inbound_whatsapp.json")
    assert len(forms) >= 6
    for sample_id, form in forms.items():
        if form["From"] == "whatsapp:US.1234":
            continue  # a business-scoped user id: see the next test
        parsed = parse_inbound(form)
        assert parsed.channel == "whatsapp", sample_id
        assert parsed.phone == form["From"].removeprefix("whatsapp:")
        assert parsed.message_sid == form["MessageSid"]
        assert parsed.from_address == form["From"]
        assert parsed.to_address == form["To"]
        assert parsed.body == form.get("Body", "")
        assert parsed.num_media == int(form["NumMedia"]) == len(parsed.media)
        assert parsed.account_sid == form["AccountSid"]

    image = parse_inbound(forms["bb_whatsapp_image"])
    assert image.message_sid.startswith("MM")
    assert image.body == ""
    assert image.phone == "+31612345678"
    assert image.media == (
        "https://api.twilio.com/2010-04-01/Accounts/AC1a03647d811fab342c0ad608e382fab2"
        "/Messages/MM21151abfaadc1fb79b782f8460862a52/Media/ME5f0afa2336bd0f73ca553fb5a2e3150bc",
    )
    assert image.to_inbound() == InboundMessage(
        text="",
        channel="whatsapp",
        message_sid="MM21151abfaadc1fb79b782f8460862a52",
        media=image.media,
        media_types=("image/jpeg",),
    )
    location = parse_inbound(forms["bb_whatsapp_location"])
    assert (location.body, location.media) == ("", ())
    assert location.to_inbound().as_context()["location"] == {
        "latitude": 52.303897857666016,
        "longitude": 4.750025749206543,
        "address": "Evert van de Beekstraat 354, Schiphol, North Holland 1118 CZ",
        "label": "Microsoft",
    }
    button = parse_inbound(forms["courier_waReceiveButtonValid"])
    assert button.to_inbound().as_context()["button"] == {"payload": "", "text": "Confirm"}
    text = parse_inbound(forms["bb_whatsapp_text"])
    assert text.to_inbound().as_context() == {
        "text": "test",
        "channel": "whatsapp",
        "media": [],
        "media_types": [],
        "button": None,
        "location": None,
        "transcribed": False,
    }
    assert text.profile_name is None and text.wa_id is None


def test_whatsapp_business_scoped_user_id_is_not_a_phone() -> None:
    forms = _form_samples("inbound_whatsapp.json")
    with pytest.raises(ValueError, match=r"^From is not a phone number: 'whatsapp:US.1234'"):
        parse_inbound(forms["courier_waReceiveFromBSUID"])
    # With the phone in From and the id in ExternalUserId, the phone is used.
    assert parse_inbound(forms["courier_waReceiveBSUIDValid"]).phone == "+14133881111"


def test_parse_twilio_labs_whatsapp_event_with_profile_name() -> None:
    sample = {s["id"]: s for s in _samples("inbound_whatsapp.json")}[
        "twilio_labs_plugin_webhook_whatsapp"
    ]
    parsed = parse_inbound(_js_body(sample))
    assert parsed.profile_name == "PNaaaaa"
    assert parsed.wa_id == "15017122661"
    assert parsed.account_sid is None  # the sample's spread bug drops it
    assert (parsed.channel, parsed.phone, parsed.body) == (
        "whatsapp",
        "+15017122661",
        "Test whatsapp msg",
    )


def test_parse_real_sms_payloads() -> None:
    forms = _form_samples("inbound_sms.json")
    assert len(forms) >= 5
    for sample_id, form in forms.items():
        parsed = parse_inbound(form)
        assert (parsed.channel, parsed.phone) == ("sms", form["From"]), sample_id
        assert parsed.message_sid == form["MessageSid"]
        assert parsed.body == form.get("Body", "")
        assert parsed.profile_name is None
    media = parse_inbound(forms["courier_receiveMedia"])
    assert (media.body, media.num_media, media.media) == ("", 2, ("cat.jpg", "dog.jpg"))
    assert media.to_inbound().media == ("cat.jpg", "dog.jpg")
    with_text = parse_inbound(forms["courier_receiveMediaWithMsg"])
    assert (with_text.body, with_text.media) == ("Msg", ("cat.jpg", "dog.jpg"))
    short_code = parse_inbound(forms["courier_tmsReceiveExtra"])
    assert (short_code.to_address, short_code.body) == ("384387", "John Cruz")


def test_parse_twilio_labs_sms_and_mms_events() -> None:
    samples = {s["id"]: s for s in _samples("inbound_sms.json")}
    base = _js_body(samples["twilio_labs_plugin_webhook__base"])
    sms = parse_inbound({**base, **_js_body(samples["twilio_labs_plugin_webhook_sms"])})
    assert (sms.channel, sms.phone, sms.body, sms.media) == ("sms", "+15017122661", "Ahoy", ())
    assert sms.account_sid == "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
    mms = parse_inbound({**base, **_js_body(samples["twilio_labs_plugin_webhook_mms"])})
    assert mms.message_sid == "MM" + "a" * 32
    assert mms.num_media == 1 and mms.media[0].endswith("/Media/ME" + "a" * 32)


VALID_FORM = {
    "MessageSid": "SM892512e202b34d4109b10a3893fa9640",
    "AccountSid": "AC1a03647d811fab342c0ad608e382fab2",
    "From": "whatsapp:+31612345678",
    "To": "whatsapp:+14123456789",
    "Body": "Hello <b> & bye",
    "NumMedia": "0",
    "ProfileName": "Ana",
    "WaId": "31612345678",
}


def test_parse_inbound_valid_form_and_multidict() -> None:
    parsed = parse_inbound(VALID_FORM)
    assert parsed == InboundForm(
        message_sid="SM892512e202b34d4109b10a3893fa9640",
        account_sid="AC1a03647d811fab342c0ad608e382fab2",
        from_address="whatsapp:+31612345678",
        to_address="whatsapp:+14123456789",
        channel="whatsapp",
        phone="+31612345678",
        body="Hello <b> & bye",
        profile_name="Ana",
        wa_id="31612345678",
        media=(),
        num_media=0,
    )
    assert parse_inbound(MultiDict(VALID_FORM)) == parsed
    with pytest.raises(AttributeError):
        parsed.body = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"MessageSid": None}, r"^MessageSid is missing"),
        ({"MessageSid": ""}, r"^MessageSid is missing"),
        ({"MessageSid": "SM123"}, r"^MessageSid is not"),
        ({"MessageSid": "CA" + "0" * 32}, r"^MessageSid is not"),
        ({"MessageSid": "SM" + "g" * 32}, r"^MessageSid is not"),
        ({"MessageSid": "SM" + "0" * 33}, r"^MessageSid is not"),
        ({"From": None}, r"^From is missing"),
        ({"From": "whatsapp:US.1234"}, r"^From is not a phone number: 'whatsapp:US.1234'"),
        ({"From": " 31612345678"}, r"^From is not a phone number"),
        ({"From": "Parley"}, r"^From is not a phone number"),
        ({"To": None}, r"^To is missing"),
        ({"NumMedia": "x"}, r"^NumMedia is not a count"),
        ({"NumMedia": "-1"}, r"^NumMedia is not a count"),
        ({"NumMedia": "\u0661"}, r"^NumMedia is not a count"),
        ({"NumMedia": "1"}, r"^MediaUrl0 is missing"),
        ({"NumMedia": "2", "MediaUrl0": "https://x/0"}, r"^MediaUrl1 is missing"),
    ],
)
def test_parse_inbound_malformed(changes: dict[str, str | None], message: str) -> None:
    form = {**VALID_FORM, **changes}
    form = {key: value for key, value in form.items() if value is not None}
    with pytest.raises(ValueError, match=message):
        parse_inbound(form)


def test_parse_inbound_media_order_and_extra_urls() -> None:
    form = {
        **VALID_FORM,
        "NumMedia": "2",
        "MediaUrl1": "https://m/1",
        "MediaUrl0": "https://m/0",
        "MediaUrl2": "https://m/ignored",
    }
    assert parse_inbound(form).media == ("https://m/0", "https://m/1")


# --- split_body -----------------------------------------------------------------------


def _check_parts(text: str, parts: list[str], limit: int) -> None:
    assert parts, "text with words gives parts"
    for part in parts:
        assert part and part == part.strip()
        assert len(part) <= limit
    assert " ".join(parts).split() == text.split()


def test_split_body_short_and_exact_limit() -> None:
    assert MAX_BODY_CHARS == 1600
    assert split_body("Hello there.") == ["Hello there."]
    words = ("word " * 400)[:1599] + "."
    assert len(words) == 1600
    assert split_body(words) == [words]
    solid = "x" * 1600
    assert split_body(solid) == [solid]
    assert split_body("") == [] and split_body(" \n\n ") == []


def test_split_body_one_over_the_limit() -> None:
    text = "a" * 1000 + " " + "b" * 600
    assert len(text) == 1601
    assert split_body(text) == ["a" * 1000, "b" * 600]


def test_split_body_hard_cuts_text_without_spaces() -> None:
    text = "".join(random.Random(1).choice("abcdef0123") for _ in range(5000))
    parts = split_body(text)
    assert [len(p) for p in parts] == [1600, 1600, 1600, 200]
    assert "".join(parts) == text


def test_split_body_prefers_sentence_ends() -> None:
    rng = random.Random(7)
    sentences = [
        " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "epsilon"]) for _ in range(n))
        + rng.choice(".!?")
        for n in (rng.randint(3, 12) for _ in range(120))
    ]
    text = " ".join(sentences)
    parts = split_body(text, 200)
    _check_parts(text, parts, 200)
    assert len(parts) > 5
    for part in parts:
        assert part[-1] in ".!?"  # every cut is at a sentence end
        assert len(part) >= 100  # and no part is wastefully short
    assert split_body(text) == split_body(text, MAX_BODY_CHARS)
    _check_parts(text, split_body(text), MAX_BODY_CHARS)


def test_split_body_prefers_paragraphs_then_lines() -> None:
    p1 = "First paragraph. " * 4 + "End one."
    p2 = "Second one here. " * 4 + "End two."
    text = f"{p1}\n\n{p2}"
    assert split_body(text, 100) == [p1, p2]
    # A line break beats a later sentence end ("Second line.").
    lines = "The first line is right here\nSecond line. It has two sentences.\nThird"
    assert split_body(lines, 45) == [
        "The first line is right here",
        "Second line. It has two sentences.\nThird",
    ]
    # A sentence end beats a space: "More." ends the part, not "also".
    assert split_body("Short words here. More words follow after", 30) == [
        "Short words here.",
        "More words follow after",
    ]


def test_split_body_skips_breaks_that_would_waste_a_message() -> None:
    text = "Hi!\n\n" + "This is a sentence. " * 10
    parts = split_body(text, 120)
    _check_parts(text, parts, 120)
    assert parts[0].startswith("Hi!\n\nThis is a sentence.")
    assert parts[0].endswith(".") and len(parts[0]) > 60


def test_split_body_long_url_is_kept_whole_where_possible() -> None:
    url = "https://example.com/" + "p" * 40
    # No break in the second half of the first part: an early space beats cutting the URL.
    assert split_body("See " + url + " now", 60) == ["See", url, "now"]
    longer = "See " + url * 2 + " now"
    parts = split_body(longer, 60)
    assert parts[0] == "See" and "".join(parts[1:]) == url * 2 + "now"


def test_split_body_counts_emoji_as_two() -> None:
    text = "\U0001f600" * 1000  # 2000 UTF-16 code units
    parts = split_body(text)
    assert [len(p) for p in parts] == [800, 200]
    assert "".join(parts) == text


def test_split_body_random_texts_keep_words_and_order() -> None:
    rng = random.Random(42)
    vocabulary = ["a", "to", "the", "word", "Parley", "message", "x" * 30, "é", "\u4e2d\u6587"]
    for _ in range(200):
        limit = rng.randint(40, 300)
        tokens = []
        for _ in range(rng.randint(1, 200)):
            tokens.append(rng.choice(vocabulary))
            tokens.append(rng.choice([" ", " ", " ", ". ", "! ", "\n", "\n\n", "? "]))
        text = "".join(tokens)
        _check_parts(text, split_body(text, limit), limit)


def test_split_body_rejects_tiny_limits() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_body("hello", 1)


# --- TwiML ------------------------------------------------------------------------------


def _messages(xml: str) -> list[str]:
    root = ET.fromstring(xml.encode("utf-8"))
    assert root.tag == "Response"
    assert all(child.tag == "Message" for child in root)
    return [child.text or "" for child in root]


def test_twiml_reply_escapes() -> None:
    text = "if a < b && c > d then \"quote\" 'x' ]]> <Message>inject</Message>"
    xml = twiml_reply([text])
    assert "&lt;" in xml and "&amp;&amp;" in xml
    assert "<Message>inject" not in xml
    assert _messages(xml) == [text]


def test_twiml_reply_several_messages_in_order() -> None:
    texts = ["one", "two & three", "four\nlines"]
    assert _messages(twiml_reply(texts)) == texts
    assert twiml_reply(texts).count("<Message>") == 3


def test_twiml_reply_empty() -> None:
    xml = twiml_reply([])
    assert xml.endswith("<Response />")
    assert _messages(xml) == []
    assert _messages(twiml_reply(["", "  ", "ok"])) == ["ok"]


def test_twiml_reply_drops_characters_xml_forbids() -> None:
    assert _messages(twiml_reply(["a\x00b\x01c\x1bd\te"])) == ["abcd\te"]


# --- sending, against a fake Twilio REST server -----------------------------------------

ACCOUNT_SID = "AC1a03647d811fab342c0ad608e382fab2"
AUTH_TOKEN = "fake-auth-token"


@pytest.fixture
def fake_twilio(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeTwilio, str]]:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as app:
        yield app, app.base_url


@pytest.fixture
def sender(fake_twilio: tuple[FakeTwilio, str]) -> Iterator[TwilioSender]:
    result = TwilioSender(ACCOUNT_SID, AUTH_TOKEN, api_base_url=fake_twilio[1] + "/", timeout=5)
    yield result
    result.close()


def test_send_posts_the_message_and_returns_its_sid(
    fake_twilio: tuple[FakeTwilio, str], sender: TwilioSender
) -> None:
    app, _ = fake_twilio
    sid = sender.send(
        "whatsapp:+14155238886",
        "whatsapp:+15551234567",
        "Hi & <welcome>",
        status_callback="https://parley.example.com/twilio/status",
    )
    assert re.fullmatch(r"SM[0-9a-f]{32}", sid)
    assert app.requests == [
        {
            "path": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
            "form": {
                "From": "whatsapp:+14155238886",
                "To": "whatsapp:+15551234567",
                "Body": "Hi & <welcome>",
                "StatusCallback": "https://parley.example.com/twilio/status",
            },
        }
    ]


def test_send_without_status_callback(
    fake_twilio: tuple[FakeTwilio, str], sender: TwilioSender
) -> None:
    app, _ = fake_twilio
    first = sender.send("+14155238886", "+15551234567", "one")
    second = sender.send("+14155238886", "+15551234567", "two")
    assert first != second
    assert [r["form"] for r in app.requests] == [
        {"From": "+14155238886", "To": "+15551234567", "Body": "one"},
        {"From": "+14155238886", "To": "+15551234567", "Body": "two"},
    ]


def test_send_surfaces_twilio_errors(sender: TwilioSender) -> None:
    with pytest.raises(TwilioRestException) as info:
        sender.send("+14155238886", "+15551234567", "x" * 1601)
    assert info.value.code == 21617
    assert info.value.status == 400


def test_send_with_wrong_credentials(fake_twilio: tuple[FakeTwilio, str]) -> None:
    wrong = TwilioSender(ACCOUNT_SID, "wrong", api_base_url=fake_twilio[1], timeout=5)
    try:
        with pytest.raises(TwilioRestException) as info:
            wrong.send("+14155238886", "+15551234567", "hi")
        assert info.value.status == 401
    finally:
        wrong.close()


def test_send_goes_through_the_proxy_the_environment_names(
    fake_twilio: tuple[FakeTwilio, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The proxy variables are read once, when the sender is made (requests
    # would read them on every send); an operator's HTTP(S)_PROXY still
    # applies. The fake server acts as the proxy: the API host does not exist.
    app, base = fake_twilio
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("HTTP_PROXY", base)
    proxied = TwilioSender(ACCOUNT_SID, AUTH_TOKEN, api_base_url="http://twilio.invalid", timeout=5)
    monkeypatch.delenv("HTTP_PROXY")  # read already
    try:
        assert proxied.send("+14155238886", "+15551234567", "via proxy").startswith("SM")
    finally:
        proxied.close()
    assert app.bodies == ["via proxy"]


def test_sender_needs_credentials() -> None:
    with pytest.raises(ValueError, match="auth token"):
        TwilioSender(ACCOUNT_SID, "")
    with pytest.raises(ValueError, match="account SID"):
        TwilioSender("", AUTH_TOKEN)
