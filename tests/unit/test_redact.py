"""No secret survives redaction, in any URL form and in any text around it."""

from __future__ import annotations

import socket
from urllib.parse import quote

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from dockship import redact as R
from dockship.redact import Secrets, redact, redact_url, safe, url_secrets

# Every "Q" of a generated secret is the secret's: no template below holds one, so a Q in the
# output is a piece of the secret that leaked.
_HOSTILE = "Qz/%@:#?"
secrets_ = st.text(alphabet=_HOSTILE, max_size=12).map(lambda s: f"Q{s}Q")
encodings = st.sampled_from([lambda s: s, lambda s: quote(s, safe=""), lambda s: quote(s)])
hosts = st.sampled_from(["idx.example", "127.0.0.1", "[::1]", "[fe80::1%25eth0]", "[::1", "h"])
ports = st.sampled_from(["", ":8443", ":1"])
paths = st.sampled_from(["", "/", "/simple/", "/simple/pkg/?x=1", "/a@b/c", "/v2/r/manifests/sha256:ab"])
URL_FORMS = [
    "http://user:{pw}@{host}{port}{path}",
    "https://{pw}@{host}{port}{path}",                 # a token as the user name
    "https://{pw}:x-oauth-basic@{host}{path}",
    "ssh://root:{pw}@{host}{port}",
    "http://{host}{port}/simple/?token={pw}",
    "http://{host}{port}/simple/#{pw}",
]
TEXT_FORMS = [
    "{url}",
    "GET {url} failed: [Errno 111] Connection refused",
    "Invalid URL '{url}': No host supplied",
    "Failed to parse: {url}",
    "see ({url}), then",
    "url={url!r}",
    'config: index.url "{url}" is wrong\nnext line',
]


@settings(max_examples=400)
@given(secret=secrets_, enc=encodings, host=hosts, port=ports, path=paths,
       url_form=st.sampled_from(URL_FORMS), text_form=st.sampled_from(TEXT_FORMS))
def test_no_password_or_token_survives_in_any_url_form_or_text(secret, enc, host, port, path,
                                                                url_form, text_form):
    pw = enc(secret)
    url = url_form.format(pw=pw, host=host, port=port, path=path)
    text = text_form.format(url=url)
    for shown in (redact(text), redact_url(url)):
        assert "Q" not in shown, (text, shown)
    assert redact(redact(text)) == redact(text)      # what is shown is shown again as it is


@settings(max_examples=200)
@given(secret=st.text(alphabet=_HOSTILE, min_size=2, max_size=12).map(lambda s: f"Q{s}Q"), enc=encodings)
def test_the_scrubber_hides_a_known_secret_in_any_encoding(secret, enc):
    text = f"pip said: could not fetch https://h/{enc(secret)}/simple/ (401)"
    assert secret not in Secrets(values=frozenset({secret})).scrub(text)
    assert "Q" not in Secrets(values=frozenset({secret})).scrub(text)


@pytest.mark.parametrize(("text", "shown"), [
    ("ssh://root@10.0.0.1:22", "ssh://root@10.0.0.1:22"),                  # a login name, no secret
    ("ssh://root:pw@10.0.0.1", "ssh://***@10.0.0.1"),
    ("see (http://u:p@h/a?b=c), then", "see (http://***@h/a), then"),
    ("no url here", "no url here"),
    ("http://h:8080/simple/", "http://h:8080/simple/"),                   # a port is no password
    ("http://[::1]:5000/v2/", "http://[::1]:5000/v2/"),
    ("https://me:p/ss@[::1]:8443/a1b2c3d4e5f6g7h8i9j0/simple/", "https://***@[::1]:8443/***/simple/"),
    ("https://pkgs.example/simple/opentelemetry-instrumentation/", "https://pkgs.example/simple/opentelemetry-instrumentation/"),
    ("node n1 (ssh://root@n1:) refused", "node n1 (ssh://root@n1:) refused"),
    ("Authorization: Bearer abcdefgh1234", "Authorization: Bearer ***"),
    ("x access_token=zzz&b=1 password=hunter22", "x access_token=***&b=1 password=***"),
    ("http://u:pa", "http://u:***"),                                     # cut before its @
    ("1http://u:p@h/x", "1http://***@h/x"),                             # whatever the scheme
    ("('://u:p@h')", "('://***@h')"),
    ("a http://h/x, then ssh://root@n2/, done.", "a http://h/x, then ssh://root@n2/, done."),
])
def test_what_is_shown(text, shown):
    assert redact(text) == shown


def test_what_is_not_guessable_is_documented_as_such():
    # A short or all-letter path token looks like a package name: only the scrubber can hide it.
    assert redact("https://h/abcdefghij/simple/") == "https://h/abcdefghij/simple/"
    assert Secrets(values=frozenset({"abcdefghij"})).scrub("https://h/abcdefghij/simple/") == \
        "https://h/***/simple/"


def test_urllib3_paths_lose_their_query_and_token_segments():
    text = ("HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: "
            "/t0k3n1234567890abcdef/simple/?token=abc (Caused by NewConnectionError(...))")
    assert redact(text) == ("HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded "
                            "with url: /***/simple/ (Caused by NewConnectionError(...))")


def test_a_real_requests_failure_shows_no_credential():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://user:s3cr%2Fet@127.0.0.1:{port}/t0k3n1234567890abcdef/simple/?access_token=zz9"
    with pytest.raises(requests.RequestException) as info:
        requests.get(url, timeout=2)
    shown = redact(f"index {url}: {info.value}")
    assert "s3cr" not in shown and "t0k3n" not in shown and "zz9" not in shown
    assert f"127.0.0.1:{port}" in shown


def test_url_secrets_are_what_a_configured_url_carries():
    assert url_secrets("https://tok3n@h/simple/") == {"tok3n"}
    assert url_secrets("http://me:p@ss:w@h/") == {"me", "p@ss:w"}
    assert url_secrets("ssh://root@n1") == frozenset()
    assert url_secrets("ssh://root:pw@n1") == {"pw"}
    assert url_secrets("http://h/simple/") == frozenset()


def test_secrets_from_the_environment_and_remembered_ones_are_scrubbed(monkeypatch):
    monkeypatch.setenv("DOCKSHIP_REGISTRY_PASSWORD", "regpass-42")
    monkeypatch.setenv("DOCKSHIP_SMTP_PASSWORD", "smtp/pass")
    monkeypatch.setattr(R, "_remembered", set())
    R.remember("helper-token-7")
    shown = safe("regpass-42 smtp%2Fpass helper-token-7 fine")
    assert shown == "*** *** *** fine"


def test_short_values_are_not_scrubbed():
    assert Secrets(values=frozenset({"ab"})).scrub("about tabs") == "about tabs"


def test_the_environment_cleaner_drops_secret_names_and_values():
    env = {"PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8", "DOCKSHIP_CONFIG": "/x.toml",
           "DOCKSHIP_REGISTRY_USER": "u", "DOCKSHIP_REGISTRY_PASSWORD": "pw-1234",
           "DOCKSHIP_SMTP_PASSWORD": "smtp-1234", "DOCKER_AUTH_CONFIG": "{}",
           "COPY_OF_IT": "x pw-1234 y", "DATABASE_URL": "postgres://u:dbpass@h/db"}
    cleaned = Secrets(names=frozenset({"DATABASE_URL"})).with_environ(env).clean_environ(env)
    assert cleaned == {"PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8",
                       "DOCKSHIP_CONFIG": "/x.toml"}


@pytest.mark.parametrize("hostile", [
    "\x1b]0;owned\x07", "\x1b[2J", "a\rb", "\x9b31m", "\u202egnp.exe", "\x00", "\u2028", "\x7f",
])
def test_safe_escapes_what_a_terminal_would_obey(hostile):
    shown = safe(f"node {hostile} end")
    assert all(ch.isprintable() for ch in shown)
    assert shown.startswith("node ") and shown.endswith(" end")


def test_safe_keeps_line_breaks_only_when_asked():
    assert safe("a\nb") == "a\\nb"
    assert safe("a\nb", newlines=True) == "a\nb"
