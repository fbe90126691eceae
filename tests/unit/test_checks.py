"""checks: every validator says None to good values and one escaped line to bad ones."""

import math

import pytest

from dockship import checks

LONG = "a" * 100_000


@pytest.mark.parametrize("value", ["node1", "stage", "a", "eu-west.1_b", "A" * 63, "9lives"])
def test_good_names(value):
    assert checks.name_problem(value) is None


@pytest.mark.parametrize("value", ["", ";", "a;b", "a\nb", "-a", ".a", "a b", "A" * 64, LONG,
                                   "\x1b[2J", "n\u00e9", 3, None, ["a"]])
def test_bad_names(value):
    assert checks.name_problem(value)


def test_service_names_are_the_lowercase_subset_of_names():
    assert checks.service_name_problem("hello-svc.v2_x") is None
    assert checks.name_problem("Hello") is None and checks.service_name_problem("Hello")


def test_a_problem_quotes_the_value_escaped_and_short():
    problem = checks.name_problem("\x1b]0;owned\x07" + LONG)
    assert "\x1b" not in problem and "\\x1b" in problem
    assert len(problem) < 300 and "(100010 characters)" in problem


@pytest.mark.parametrize("value", ["LOG_LEVEL", "_x", "a1", "PATH"])
def test_good_env_var_names(value):
    assert checks.env_var_problem(value) is None


@pytest.mark.parametrize("value", ["A=B", "", "1A", "A-B", "A B", "A\n"])
def test_bad_env_var_names(value):
    assert checks.env_var_problem(value)


@pytest.mark.parametrize("value", [0, 1, 0.5, 10, 10.0])
def test_numbers_in_range(value):
    assert checks.number_problem(value, 0, 10) is None


@pytest.mark.parametrize("value, words", [
    (math.nan, "not a finite number"), (math.inf, "not a finite number"),
    (-math.inf, "not a finite number"), (-1, "at least 0"), (11, "at most 10"),
    (10 ** 400, "a huge integer"), (True, "got true"), ("5", "got '5'"), (None, "got a NoneType"),
])
def test_numbers_refused(value, words):
    problem = checks.number_problem(value, 0, 10)
    assert problem and words in problem


def test_integers_refuse_floats():
    assert checks.number_problem(3.0, 0, 10, integer=True)
    assert checks.number_problem(3, 0, 10, integer=True) is None


@pytest.mark.parametrize("value", [1, 22, 65535])
def test_good_ports(value):
    assert checks.port_problem(value) is None


@pytest.mark.parametrize("value", [0, -1, 65536, 99999, 1.5, "80"])
def test_bad_ports(value):
    assert checks.port_problem(value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8081/simple/", "https://index.example.com/simple",
                                 "http://[::1]:8081/", "http://[fd00::1]/simple/",
                                 "http://user:p%2Fw@index.local:8081/simple/", "http://h:65535/"])
def test_good_urls(url):
    assert checks.url_problem(url) is None


@pytest.mark.parametrize("url, words", [
    ("http://[::1/", "not a valid URL"), ("http://h:99999/", "bad port"), ("http://h:0/", "port 0"),
    ("http://h:-1/", "bad port"), ("ftp://h/", "must start with"), ("http:///x", "no host"),
    ("http://h /", "whitespace"), ("http://h/\r\nX: y", "control character"),
    ("http://[v1.x]/", "IPv6"), ("http://-h/", "host"), ("", "must be a URL"), (8081, "must be a URL"),
])
def test_bad_urls(url, words):
    problem = checks.url_problem(url)
    assert problem and words in problem


def test_a_bad_url_never_shows_its_credentials():
    problem = checks.url_problem("http://user:pa/ss@host:99999/simple/")
    assert problem and "pa/ss" not in problem and "user" not in problem


@pytest.mark.parametrize("host", ["10.0.0.1", "::1", "fd00::1", "node1", "node1.example.com",
                                  "node1.example.com.", "my_host"])
def test_good_hosts(host):
    assert checks.host_problem(host) is None


@pytest.mark.parametrize("host", ["attacker@127.0.0.1:47107", "10.0.0.1:22", "-oProxyCommand=id",
                                  "a b", "a\nb", "", "h/x", "999.1.2.3", "[::1]", "a..b", "x" * 254,
                                  "\x1b[2J", 3, None])
def test_bad_hosts(host):
    assert checks.host_problem(host)


@pytest.mark.parametrize("url", ["ssh://root@10.0.0.1", "ssh://deploy@host:2222", "ssh://host",
                                 "ssh://root@[fd00::1]:22", "tcp://10.0.0.5:2376",
                                 "tcp://[::1]:2375", "unix:///var/run/docker.sock"])
def test_good_docker_endpoints(url):
    assert checks.docker_endpoint_problem(url) is None


@pytest.mark.parametrize("url", [
    "ssh://-oProxyCommand=id", "ssh://-oProxyCommand=id@host", "ssh://root@-host",
    "ssh://root@attacker@10.0.0.1", "ssh://u:secret@h", "ssh://root@h:0", "ssh://root@h:99999",
    "ssh://root@h/path", "ssh://root@h\n", "ssh://", "tcp://host", "tcp://h:2376/x",
    "unix://relative", "http://x:1", "host:22", "ssh://root@[::1", "",
])
def test_bad_docker_endpoints(url):
    assert checks.docker_endpoint_problem(url)


def test_an_ssh_password_is_not_repeated():
    assert "secret" not in checks.docker_endpoint_problem("ssh://u:secret@h")


@pytest.mark.parametrize("path", ["/health", "/", "/a/b?x=1", "/%20"])
def test_good_health_paths(path):
    assert checks.health_path_problem(path) is None


@pytest.mark.parametrize("path", ["health", "", "/a b", "/a\r\nX-Evil: 1", "/\x1b[2J", "/\t", 5])
def test_bad_health_paths(path):
    assert checks.health_path_problem(path)


@pytest.mark.parametrize("value", ["127.0.0.1:5000", "registry.example.com", "r.local:443",
                                   "[::1]:5000", "[fd00::1]"])
def test_good_registries(value):
    assert checks.registry_problem(value) is None


@pytest.mark.parametrize("value", ["https://r:5000", "r:5000/", "r/ns", "::1", "[::1", "[::1]x",
                                   "r:0", "r:99999", "r:", "r:ab", "-r", "user@r", ""])
def test_bad_registries(value):
    assert checks.registry_problem(value)


@pytest.mark.parametrize("value", ["python:3.12-slim", "python", "10.77.0.1:5000/dockship-lab/python:3-bookworm",
                                   "localhost:5000/a/b", "[::1]:5000/x:1", "a@sha256:" + "0" * 64])
def test_good_image_references(value):
    assert checks.image_reference_problem(value) is None


@pytest.mark.parametrize("value", ["[bold]x", "Python:3", "python:", "python:-x", "a@sha256:xyz",
                                   "x y", "", "bad:5000:5000/x"])
def test_bad_image_references(value):
    assert checks.image_reference_problem(value)


def test_images_are_lowercase_path_components():
    assert checks.image_problem("team/hello") is None
    for bad in ("Hello", "hello:1", "-x", "a//b", "", "x" * 256):
        assert checks.image_problem(bad)


@pytest.mark.parametrize("value", ["1.4.0", "2.0rc1", "1!2.0", "1.4.0+abc.1", "1.0.post1"])
def test_good_versions(value):
    assert checks.version_problem(value) is None


@pytest.mark.parametrize("value", ["x", "", "1.0;rm", "1.0+" + "a" * 200, None])
def test_bad_versions(value):
    assert checks.version_problem(value)


def test_tags_follow_design_4():
    assert checks.tag_problem("latest") is None
    assert checks.tag_problem("1.4.0-abc.1", version_only=True) is None
    assert checks.tag_problem("1_2.0", version_only=True) is None
    assert checks.tag_problem("v1.0", version_only=True)       # not the tag of any version
    for bad in ("", "-x", "a/b", "a" * 129, "1.0\n"):
        assert checks.tag_problem(bad)


@pytest.mark.parametrize("value", ["hello-svc", "a", "Flask", "zope.interface", "x_1"])
def test_good_packages(value):
    assert checks.package_problem(value) is None


@pytest.mark.parametrize("value", ["-x", "x-", "a b", "", "a;b", "a==1", LONG])
def test_bad_packages(value):
    assert checks.package_problem(value)


@pytest.mark.parametrize("user", ["root", "deploy", "svc_1", "a.b"])
def test_good_ssh_users(user):
    assert checks.ssh_user_problem(user) is None


@pytest.mark.parametrize("user", ["-oProxyCommand=id", "", "a b", "a@b", "a\n"])
def test_bad_ssh_users(user):
    assert checks.ssh_user_problem(user)
