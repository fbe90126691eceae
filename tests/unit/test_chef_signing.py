"""Chef request signing, pinned to the vectors Chef publishes for its protocol.

The key, request and expected `X-Ops-Authorization-N` lines are the ones of
mixlib-authentication's spec (Chef's reference implementation), so passing
here means a real Chef server computes the same signature.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from dockship.chef import (
    CanonicalRequest,
    ChefClient,
    canonical_path,
    chef_timestamp,
    load_private_key,
    sign_request,
    split_authorization,
)
from dockship.errors import ConfigError, Unreachable

# Chef's published test key (mixlib-authentication spec); not a secret.
SPEC_KEY_PEM = b"""-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEA0ueqo76MXuP6XqZBILFziH/9AI7C6PaN5W0dSvkr9yInyGHS
z/IR1+4tqvP2qlfKVKI4CP6BFH251Ft9qMUBuAsnlAVQ1z0exDtIFFOyQCdR7iXm
jBIWMSS4buBwRQXwDK7id1OxtU23qVJv+xwEV0IzaaSJmaGLIbvRBD+qatfUuQJB
MU/04DdJIwvLtZBYdC2219m5dUBQaa4bimL+YN9EcsDzD9h9UxQo5ReK7b3cNMzJ
BKJWLzFBcJuePMzAnLFktr/RufX4wpXe6XJxoVPaHo72GorLkwnQ0HYMTY8rehT4
mDi1FI969LHCFFaFHSAaRnwdXaQkJmSfcxzCYQIDAQABAoIBAQCW3I4sKN5B9jOe
xq/pkeWBq4OvhW8Ys1yW0zFT8t6nHbB1XrwscQygd8gE9BPqj3e0iIEqtdphbPmj
VHqTYbC0FI6QDClifV7noTwTBjeIOlgZ0NSUN0/WgVzIOxUz2mZ2vBZUovKILPqG
TOi7J7RXMoySMdcXpP1f+PgvYNcnKsT72UcWaSXEV8/zo+Zm/qdGPVWwJonri5Mp
DVm5EQSENBiRyt028rU6ElXORNmoQpVjDVqZ1gipzXkifdjGyENw2rt4V/iKYD7V
5iqXOsvP6Cemf4gbrjunAgDG08S00kiUgvVWcdXW+dlsR2nCvH4DOEe3AYYh/aH8
DxEE7FbtAoGBAPcNO8fJ56mNw0ow4Qg38C+Zss/afhBOCfX4O/SZKv/roRn5+gRM
KRJYSVXNnsjPI1plzqR4OCyOrjAhtuvL4a0DinDzf1+fiztyNohwYsW1vYmqn3ti
EN0GhSgE7ppZjqvLQ3f3LUTxynhA0U+k9wflb4irIlViTUlCsOPkrNJDAoGBANqL
Q+vvuGSsmRLU/Cenjy+Mjj6+QENg51dz34o8JKuVKIPKU8pNnyeLa5fat0qD2MHm
OB9opeQOcw0dStodxr6DB3wi83bpjeU6BWUGITNiWEaZEBrQ0aiqNJJKrrHm8fAZ
9o4l4oHc4hI0kYVYYDuxtKuVJrzZiEapTwoOcYiLAoGBAI/EWbeIHZIj9zOjgjEA
LHvm25HtulLOtyk2jd1njQhlHNk7CW2azIPqcLLH99EwCYi/miNH+pijZ2aHGCXb
/bZrSxM0ADmrZKDxdB6uGCyp+GS2sBxjEyEsfCyvwhJ8b3Q100tqwiNO+d5FCglp
HICx2dgUjuRVUliBwOK93nx1AoGAUI8RhIEjOYkeDAESyhNMBr0LGjnLOosX+/as
qiotYkpjWuFULbibOFp+WMW41vDvD9qrSXir3fstkeIAW5KqVkO6mJnRoT3Knnra
zjiKOITCAZQeiaP8BO5o3pxE9TMqb9VCO3ffnPstIoTaN4syPg7tiGo8k1SklVeH
2S8lzq0CgYAKG2fljIYWQvGH628rp4ZcXS4hWmYohOxsnl1YrszbJ+hzR+IQOhGl
YlkUQYXhy9JixmUUKtH+NXkKX7Lyc8XYw5ETr7JBT3ifs+G7HruDjVG78EJVojbd
8uLA+DdQm5mg4vd1GTiSK65q/3EeoBlUaVor3HhLFki+i9qpT8CBsg==
-----END RSA PRIVATE KEY-----
"""

USER_ID = "spec-user"
BODY = b"Spec Body"
PATH = "/organizations/clownco"
TIMESTAMP = "2009-01-01T12:00:00Z"

AUTH_LINES_V1_0 = [
    "jVHrNniWzpbez/eGWjFnO6lINRIuKOg40ZTIQudcFe47Z9e/HvrszfVXlKG4",
    "NMzYZgyooSvU85qkIUmKuCqgG2AIlvYa2Q/2ctrMhoaHhLOCWWoqYNMaEqPc",
    "3tKHE+CfvP+WuPdWk4jv4wpIkAz6ZLxToxcGhXmZbXpk56YTmqgBW2cbbw4O",
    "IWPZDHSiPcw//AYNgW1CCDptt+UFuaFYbtqZegcBd2n/jzcWODA7zL4KWEUy",
    "9q4rlh/+1tBReg60QdsmDRsw/cdO1GZrKtuCwbuD4+nbRdVBKv72rqHX9cu0",
    "utju9jzczCyB+sSAQWrxSsXB/b8vV2qs0l4VD2ML+w==",
]
AUTH_LINES_V1_1 = [
    "UfZD9dRz6rFu6LbP5Mo1oNHcWYxpNIcUfFCffJS1FQa0GtfU/vkt3/O5HuCM",
    "1wIFl/U0f5faH9EWpXWY5NwKR031Myxcabw4t4ZLO69CIh/3qx1XnjcZvt2w",
    "c2R9bx/43IWA/r8w8Q6decuu0f6ZlNheJeJhaYPI8piX/aH+uHBH8zTACZu8",
    "vMnl5MF3/OIlsZc8cemq6eKYstp8a8KYq9OmkB5IXIX6qVMJHA6fRvQEB/7j",
    "281Q7oI/O+lE8AmVyBbwruPb7Mp6s4839eYiOdjbDwFjYtbS3XgAjrHlaD7W",
    "FDlbAG7H8Dmvo+wBxmtNkszhzbBnEYtuwQqT8nM/8A==",
]
AUTH_LINES_V1_3 = [
    "FZOmXAyOBAZQV/uw188iBljBJXOm+m8xQ/8KTGLkgGwZNcRFxk1m953XjE3W",
    "VGy1dFT76KeaNWmPCNtDmprfH2na5UZFtfLIKrPv7xm80V+lzEzTd9WBwsfP",
    "42dZ9N+V9I5SVfcL/lWrrlpdybfceJC5jOcP5tzfJXWUITwb6Z3Erg3DU3Uh",
    "H9h9E0qWlYGqmiNCVrBnpe6Si1gU/Jl+rXlRSNbLJ4GlArAPuL976iTYJTzE",
    "MmbLUIm3JRYi00Yb01IUCCKdI90vUq1HHNtlTEu93YZfQaJwRxXlGkCNwIJe",
    "fy49QzaCIEu1XiOx5Jn+4GmkrZch/RrK9VzQWXgs+w==",
]
HASHED_BODY_SHA1 = "DFteJZPVv6WKdQmMqZUQUumUyRs="
HASHED_BODY_SHA256 = "hDlKNZhIhgso3Fs0S0pZwJ0xyBWtR1RBaeHs1DrzOho="
HASHED_PATH_SHA1 = "YtBWDn1blGGuFIuKksdwXzHU9oE="


@pytest.fixture(scope="module")
def spec_key() -> rsa.RSAPrivateKey:
    return load_private_key(SPEC_KEY_PEM)


def sign(key: rsa.RSAPrivateKey, version: str, **overrides: object) -> dict[str, str]:
    args: dict[str, object] = dict(method="POST", path=PATH, body=BODY, user_id=USER_ID,
                                   private_key=key, timestamp=TIMESTAMP, version=version)
    args.update(overrides)
    return sign_request(**args)  # type: ignore[arg-type]


def auth_lines(headers: dict[str, str]) -> list[str]:
    count = sum(1 for name in headers if name.startswith("X-Ops-Authorization-"))
    return [headers[f"X-Ops-Authorization-{i}"] for i in range(1, count + 1)]


# -- published vectors -------------------------------------------------------

def test_version_1_0_matches_chefs_published_signature(spec_key):
    headers = sign(spec_key, "1.0")
    assert auth_lines(headers) == AUTH_LINES_V1_0
    assert headers["X-Ops-Sign"] == "algorithm=sha1;version=1.0;"
    assert headers["X-Ops-Content-Hash"] == HASHED_BODY_SHA1
    assert headers["X-Ops-Userid"] == USER_ID
    assert headers["X-Ops-Timestamp"] == TIMESTAMP


def test_version_1_1_matches_chefs_published_signature(spec_key):
    headers = sign(spec_key, "1.1")
    assert auth_lines(headers) == AUTH_LINES_V1_1
    assert headers["X-Ops-Sign"] == "algorithm=sha1;version=1.1;"


def test_version_1_3_matches_chefs_published_signature(spec_key):
    headers = sign(spec_key, "1.3")
    assert auth_lines(headers) == AUTH_LINES_V1_3
    assert headers["X-Ops-Sign"] == "algorithm=sha256;version=1.3;"
    assert headers["X-Ops-Content-Hash"] == HASHED_BODY_SHA256
    assert headers["X-Ops-Server-API-Version"] == "1"
    assert headers["X-Chef-Version"]


def test_version_1_0_canonical_request_hashes_the_path_but_not_the_user():
    canonical = CanonicalRequest.build(method="post", path=PATH, body=BODY, user_id=USER_ID,
                                       timestamp=TIMESTAMP, version="1.0")
    assert canonical.text() == (
        "Method:POST\n"
        f"Hashed Path:{HASHED_PATH_SHA1}\n"
        f"X-Ops-Content-Hash:{HASHED_BODY_SHA1}\n"
        f"X-Ops-Timestamp:{TIMESTAMP}\n"
        f"X-Ops-UserId:{USER_ID}"
    )


def test_version_1_1_canonical_request_hashes_the_user_too():
    canonical = CanonicalRequest.build(method="POST", path=PATH, body=BODY, user_id=USER_ID,
                                       timestamp=TIMESTAMP, version="1.1")
    hashed_user = base64.b64encode(hashlib.sha1(USER_ID.encode()).digest()).decode()
    assert canonical.text().splitlines()[-1] == f"X-Ops-UserId:{hashed_user}"


def test_version_1_3_canonical_request_lists_every_signed_field_in_order():
    canonical = CanonicalRequest.build(method="POST", path=PATH, body=BODY, user_id=USER_ID,
                                       timestamp=TIMESTAMP, version="1.3")
    assert canonical.text() == (
        "Method:POST\n"
        f"Path:{PATH}\n"
        f"X-Ops-Content-Hash:{HASHED_BODY_SHA256}\n"
        "X-Ops-Sign:version=1.3\n"
        f"X-Ops-Timestamp:{TIMESTAMP}\n"
        f"X-Ops-UserId:{USER_ID}\n"
        "X-Ops-Server-API-Version:1"
    )


def test_version_1_3_signature_verifies_with_the_public_key(spec_key):
    headers = sign(spec_key, "1.3", method="GET", path="/nodes", body=b"")
    signature = base64.b64decode("".join(auth_lines(headers)))
    canonical = CanonicalRequest.build(method="GET", path="/nodes", body=b"", user_id=USER_ID,
                                       timestamp=TIMESTAMP, version="1.3")
    spec_key.public_key().verify(signature, canonical.text().encode(), padding.PKCS1v15(),
                                 hashes.SHA256())


def test_server_api_version_is_signed_in_1_3(spec_key):
    assert sign(spec_key, "1.3", server_api_version="0") != sign(spec_key, "1.3")


# -- path canonicalization ---------------------------------------------------

@pytest.mark.parametrize(("raw", "canonical"), [
    ("/organizations/clownco", "/organizations/clownco"),
    ("/organizations/clownco/", "/organizations/clownco"),
    ("//organizations///clownco//", "/organizations/clownco"),
    ("/search/node?q=role:web&rows=2", "/search/node"),
    ("/", "/"),
    ("//", "/"),
    ("", "/"),
])
def test_canonical_path_collapses_slashes_and_drops_trailing_slash_and_query(raw, canonical):
    assert canonical_path(raw) == canonical


def test_equivalent_paths_sign_identically(spec_key):
    assert sign(spec_key, "1.3", path="//organizations/clownco/?x=1") == sign(spec_key, "1.3")
    assert sign(spec_key, "1.0", path="/organizations//clownco/") == sign(spec_key, "1.0")


# -- header splitting --------------------------------------------------------

@pytest.mark.parametrize("size", [1, 44, 45, 46, 90, 256, 512])
def test_authorization_is_split_into_60_character_lines_numbered_from_1(size):
    signature = bytes(range(256)) * 2
    headers = split_authorization(signature[:size])
    encoded = base64.b64encode(signature[:size]).decode()
    lines = [headers[f"X-Ops-Authorization-{i}"] for i in range(1, len(headers) + 1)]
    assert "".join(lines) == encoded
    assert all(len(line) == 60 for line in lines[:-1])
    assert 0 < len(lines[-1]) <= 60
    assert "X-Ops-Authorization-0" not in headers


def test_2048_bit_signature_takes_six_lines(spec_key):
    assert len(auth_lines(sign(spec_key, "1.3"))) == 6


# -- inputs and keys -----------------------------------------------------------

def test_unknown_version_is_refused(spec_key):
    with pytest.raises(ValueError, match="1.2"):
        sign(spec_key, "1.2")


def test_version_1_0_refuses_a_request_too_long_for_the_key(spec_key):
    with pytest.raises(ValueError, match="use sign version 1.3"):
        sign(spec_key, "1.0", user_id="A" * 200)


def test_timestamp_is_utc_seconds_with_z():
    moment = datetime(2009, 1, 1, 13, 0, 0, 500, tzinfo=timezone(timedelta(hours=1)))
    assert chef_timestamp(moment) == "2009-01-01T12:00:00Z"


def test_key_is_read_from_a_path_bytes_or_text(tmp_path, spec_key):
    pem_file = tmp_path / "client.pem"
    pem_file.write_bytes(SPEC_KEY_PEM)
    numbers = spec_key.private_numbers()
    for given in (pem_file, str(pem_file), SPEC_KEY_PEM, SPEC_KEY_PEM.decode()):
        assert load_private_key(given).private_numbers() == numbers


def test_missing_key_file_names_the_setting_and_path(tmp_path):
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError) as info:
        ChefClient("http://127.0.0.1:1", "dockship", missing, setting="environments.stage.chef")
    message = str(info.value)
    assert message.startswith("environments.stage.chef.key:")
    assert str(missing) in message and "does not exist" in message


def test_non_key_file_is_a_config_error_without_its_content(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("SECRET-LOOKING-CONTENT\n")
    with pytest.raises(ConfigError) as info:
        load_private_key(junk)
    assert str(junk) in str(info.value)
    assert "SECRET" not in str(info.value)


def test_non_rsa_key_is_refused(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(ConfigError, match="not an RSA key"):
        load_private_key(pem)


def test_encrypted_key_is_refused_with_a_hint(spec_key):
    pem = spec_key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(ConfigError, match="passphrase"):
        load_private_key(pem)


def test_unreadable_key_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_private_key(tmp_path)  # a directory


def test_client_repr_shows_no_key_material(tmp_path):
    client = ChefClient("http://127.0.0.1:4545/", "dockship", SPEC_KEY_PEM)
    assert repr(client) == "ChefClient(url='http://127.0.0.1:4545', client='dockship')"


def test_client_url_keeps_the_organization_prefix():
    client = ChefClient("https://chef.example.com/organizations/acme/", "dockship", SPEC_KEY_PEM)
    assert client.url_for("/search/node") == "https://chef.example.com/organizations/acme/search/node"
    assert client.url_for("nodes/web1") == "https://chef.example.com/organizations/acme/nodes/web1"


def test_bad_url_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^chef\.url:"):
        ChefClient("chef.example.com", "dockship", SPEC_KEY_PEM)


# -- search paging, against a scripted page source (no server) ---------------------
# These pin the paging rules; tests/integration/test_chef_goiardi.py runs the
# same paths against a real goiardi.

class ScriptedPages(ChefClient):
    """A ChefClient whose search pages come from `order(request_number)`."""

    def __init__(self, names, *, order=None, fail_at=None):
        super().__init__("http://chef.invalid", "dockship", SPEC_KEY_PEM)
        self.names = list(names)
        self.order = order or (lambda n, names: names)
        self.fail_at = fail_at
        self.requests: list[tuple[int, int]] = []

    def _search_page(self, index, query, body, *, start, rows):
        self.requests.append((start, rows))
        if self.fail_at is not None and start >= self.fail_at:
            raise Unreachable("Chef server at http://chef.invalid did not answer")
        ordered = self.order(len(self.requests), self.names)
        page = ordered[start:start + rows]
        if body is None:
            return [{"name": n, "chef_type": "node"} for n in page]
        return [{"url": f"http://chef.invalid/nodes/{n}", "data": {"name": n}} for n in page]


NAMES = [f"n{i:02d}" for i in range(7)]


def test_stable_pages_are_read_once_each_until_a_short_page():
    chef = ScriptedPages(NAMES)
    assert [r["name"] for r in chef.search("node", "*:*", rows=3)] == NAMES
    assert chef.requests == [(0, 3), (3, 3), (6, 3)]


def test_an_exactly_full_last_page_costs_one_empty_request():
    chef = ScriptedPages(NAMES[:6])
    assert len(chef.search("node", "*:*", rows=3)) == 6
    assert chef.requests == [(0, 3), (3, 3), (6, 3)]


def test_results_are_sorted_by_name_whatever_the_server_order():
    chef = ScriptedPages(NAMES, order=lambda n, names: list(reversed(names)))
    assert [r["name"] for r in chef.search("node", "*:*", rows=100)] == NAMES


def test_pages_reshuffled_per_request_fall_back_to_one_whole_page():
    import random
    shuffle = random.Random(7)
    chef = ScriptedPages(NAMES, order=lambda n, names: shuffle.sample(names, len(names)))
    result = chef.search("node", "*:*", rows=2, keys={"name": ["name"]})
    assert result == [{"name": n} for n in NAMES]
    assert chef.requests[-1][0] == 0 and chef.requests[-1][1] > len(NAMES)


def test_a_later_page_failing_falls_back_to_one_whole_page():
    class DropsLaterPagesOnce(ScriptedPages):
        def _search_page(self, index, query, body, *, start, rows):
            if start > 0:
                self.requests.append((start, rows))
                raise Unreachable("dropped")
            return super()._search_page(index, query, body, start=start, rows=rows)
    chef = DropsLaterPagesOnce(NAMES)
    assert [r["name"] for r in chef.search("node", "*:*", rows=3)] == NAMES


def test_a_failing_first_page_is_reported():
    chef = ScriptedPages(NAMES, fail_at=0)
    with pytest.raises(Unreachable):
        chef.search("node", "*:*", rows=3)
