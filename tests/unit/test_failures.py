"""Failed requests and engine calls read as one line, the same way for every server, without secrets."""

from __future__ import annotations

import socket
import threading

import docker.errors
import pytest
import requests

from dockship.errors import DockshipError, Unreachable, UsageError
from dockship.failures import engine_failure, http_failure, reason


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failure_of(url: str, **kwargs) -> requests.RequestException:
    """The exception requests really raises for a GET of `url`."""
    with pytest.raises(requests.RequestException) as info:
        requests.get(url, **kwargs)
    return info.value


# -- reasons of real requests failures ---------------------------------------------------------

def test_a_closed_port_is_connection_refused():
    assert reason(failure_of(f"http://127.0.0.1:{closed_port()}/")) == "connection refused"


def test_a_server_that_never_answers_is_no_answer_within_the_timeout():
    with socket.socket() as silent:            # accepts (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        exc = failure_of(f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout=0.2)
    assert reason(exc) == "no answer within 0.2s"


def test_a_server_that_hangs_up_without_answering_says_so():
    with socket.socket() as rude:
        rude.bind(("127.0.0.1", 0))
        rude.listen(1)

        def hang_up() -> None:
            conn, _ = rude.accept()
            conn.recv(1024)
            conn.close()

        t = threading.Thread(target=hang_up)
        t.start()
        exc = failure_of(f"http://127.0.0.1:{rude.getsockname()[1]}/", timeout=5)
        t.join()
    assert reason(exc) == "remote end closed connection without response"


# -- reasons of failures seen elsewhere (texts as requests, urllib3 and docker-py write them) -----

@pytest.mark.parametrize(("exc", "phrase"), [
    (requests.exceptions.ConnectTimeout(
        "HTTPConnectionPool(host='10.9.9.9', port=80): Max retries exceeded with url: / (Caused by "
        "ConnectTimeoutError(<urllib3.connection.HTTPConnection object at 0x7f00>, 'Connection to "
        "10.9.9.9 timed out. (connect timeout=0.5)'))"), "no connection within 0.5s"),
    (requests.exceptions.ReadTimeout("read timed out"), "timed out"),
    (requests.exceptions.ConnectionError(
        "HTTPConnectionPool(host='x.invalid', port=80): Max retries exceeded with url: / (Caused by "
        "NameResolutionError(\"<urllib3.connection.HTTPConnection object at 0x7f00>: Failed to "
        "resolve 'x.invalid' ([Errno -2] Name or service not known)\"))"), "host name not resolved"),
    (requests.exceptions.SSLError(
        "HTTPSConnectionPool(host='r', port=443): Max retries exceeded with url: /v2/ (Caused by "
        "SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
        "failed: self-signed certificate (_ssl.c:1006)')))"),
     "TLS failed: certificate verify failed: self-signed certificate"),
    (requests.exceptions.SSLError("something odd"), "TLS failed: certificate or handshake error"),
    (requests.exceptions.ConnectionError(
        "('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))"),
     "no such file or directory"),
    (ConnectionResetError(104, "Connection reset by peer"), "connection reset by peer"),
    (TimeoutError("timed out"), "timed out"),
    (EOFError(), "EOFError"),
    (requests.exceptions.ConnectionError(
        "<urllib3.connection.HTTPConnection object at 0x7f00>: something new\nand more"),
     "something new and more"),
])
def test_reasons_are_short_phrases(exc, phrase):
    assert reason(exc) == phrase


def test_a_dockship_error_is_its_own_reason():
    assert reason(Unreachable("ssh://root@n1: cannot open an SSH connection: connection refused")) == \
        "ssh://root@n1: cannot open an SSH connection: connection refused"


# -- http_failure --------------------------------------------------------------------------------

def test_http_failure_names_what_did_not_answer_and_why():
    url = f"http://127.0.0.1:{closed_port()}/simple/"
    assert http_failure(f"index {url}", failure_of(url)) == f"index {url} did not answer (connection refused)"


def test_every_server_fails_in_the_same_words():
    exc = requests.exceptions.ReadTimeout("HTTPConnectionPool(host='h', port=1): Read timed out. "
                                          "(read timeout=5)")
    assert http_failure("registry h:1", exc) == "registry h:1 did not answer (no answer within 5s)"
    assert http_failure("Chef server http://h:1", exc) == \
        "Chef server http://h:1 did not answer (no answer within 5s)"


def test_the_index_registry_and_chef_clients_say_it_the_same_way():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from dockship.chef import ChefClient
    from dockship.index import IndexClient
    from dockship.registry import RegistryClient

    port = closed_port()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    calls = {
        f"index http://127.0.0.1:{port}/simple/":
            lambda: IndexClient(f"http://127.0.0.1:{port}/simple/").project_files("hello-svc"),
        f"registry 127.0.0.1:{port}": lambda: RegistryClient(f"127.0.0.1:{port}", timeout=3).ping(),
        f"Chef server http://127.0.0.1:{port}":
            lambda: ChefClient(f"http://127.0.0.1:{port}", "dockship", key).get("nodes"),
    }
    for what, call in calls.items():
        with pytest.raises(Unreachable) as info:
            call()
        assert str(info.value).startswith(f"{what} did not answer (connection refused)")


@pytest.mark.parametrize("url", [
    "https://ci:s3cret@idx.example:8443/simple/",
    "https://s3cret@idx.example:8443/simple/",              # a token as the user name
    "https://idx.example:8443/simple/?token=s3cret",
    "https://idx.example:8443/simple/#s3cret",
])
def test_no_credential_from_a_url_reaches_the_line(url):
    exc = requests.exceptions.ConnectionError(f"GET {url} failed: [Errno 111] Connection refused")
    line = http_failure(f"index {url}", exc)
    assert "s3cret" not in line
    assert "idx.example:8443/simple/" in line and "\n" not in line
    assert line.endswith("did not answer (connection refused)")


def test_credentials_inside_the_exception_are_masked_too():
    exc = requests.exceptions.ConnectionError("weird failure for http://u:s3cret@h/x?sig=abc")
    line = http_failure("index http://h/x", exc)
    assert "s3cret" not in line and "sig=abc" not in line and "http://***@h/x" in line


# -- engine_failure ------------------------------------------------------------------------------

def test_an_engine_that_does_not_answer_is_unreachable():
    err = engine_failure("node1", failure_of(f"http://127.0.0.1:{closed_port()}/"), "create the lock")
    assert type(err) is Unreachable and err.exit_code == 1
    assert str(err) == "node node1: engine unreachable while trying to create the lock (connection refused)"


def test_an_unreachable_transport_stays_unreachable_with_its_own_words():
    err = engine_failure("node2", Unreachable("ssh://root@n2: cannot open an SSH connection: timed out"),
                         "read the history")
    assert type(err) is Unreachable
    assert str(err) == ("node node2: engine unreachable while trying to read the history "
                        "(ssh://root@n2: cannot open an SSH connection: timed out)")


def test_an_engine_that_refuses_is_a_plain_error_with_its_explanation():
    response = requests.Response()
    response.status_code = 409
    exc = docker.errors.APIError("409 Client Error", response=response,
                                 explanation="Conflict.\nThe container name is already in use")
    err = engine_failure("node1", exc, "create the lock")
    assert type(err) is DockshipError
    assert str(err) == ("node node1: the engine refused to create the lock: "
                        "The container name is already in use")


def test_an_engine_refusal_without_explanation_gives_its_status():
    response = requests.Response()
    response.status_code = 500
    err = engine_failure("node1", docker.errors.APIError("", response=response, explanation=""), "pull")
    assert type(err) is DockshipError and str(err).startswith("node node1: the engine refused to pull: ")


def test_another_dockship_error_keeps_its_message_under_the_node_name():
    err = engine_failure("node3", UsageError("bad tag"), "pull")
    assert type(err) is DockshipError and str(err) == "node node3: bad tag"
