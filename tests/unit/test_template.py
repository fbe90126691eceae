"""The Dockerfile template: placeholders, their errors, pip's index options and the default template."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from dockship.errors import ConfigError, UsageError
from dockship.template import (
    DEFAULT_TEMPLATE_SOURCE,
    PLACEHOLDERS,
    TemplateValues,
    load_template,
    pip_index_args,
    render,
)

VALUES = TemplateValues(base_image="python:3.12-slim", package="hello-svc", version="1.10.0",
                        index_url="http://127.0.0.1:8081/simple/", port=8000, command=(), image="hello")

# Every Dockerfile instruction (docker/docs reference), for the "plausible Dockerfile" check.
INSTRUCTIONS = {"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
                "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}


# -- rendering -----------------------------------------------------------------------------------

def test_placeholders_are_replaced_with_or_without_spaces():
    text = "FROM {{base_image}}\nRUN pip install {{ pip_index_args }} {{  package  }}=={{ version }}\n"
    assert render(text, VALUES, source="t") == (
        "FROM python:3.12-slim\nRUN pip install --index-url http://127.0.0.1:8081/simple/ hello-svc==1.10.0\n")


def test_every_known_placeholder_renders():
    text = "\n".join(f"{name}={{{{ {name} }}}}" for name in PLACEHOLDERS) + "\n"
    lines = dict(line.split("=", 1) for line in render(text, VALUES, source="t").splitlines()
                 if not line.startswith("RUN "))
    assert lines == {
        "base_image": "python:3.12-slim", "package": "hello-svc", "version": "1.10.0",
        "requirement": "hello-svc==1.10.0", "index_url": "http://127.0.0.1:8081/simple/",
        "pip_index_args": "--index-url http://127.0.0.1:8081/simple/",
        "port": "8000", "cmd_json": '["hello-svc"]', "image": "hello", "user": "app",
        "dependency_layers": "# (no dependencies)",
        "package_layer": "COPY wheelhouse/service/ /opt/dockship/",
    }


def test_the_requirement_pins_exactly_when_the_index_holds_a_local_build_of_the_version():
    # PEP 440: ==1.10.0 also matches 1.10.0+abc, and pip would take that (it sorts higher)
    exact = dataclasses.replace(VALUES, exact=True)
    assert exact.as_mapping()["requirement"] == "hello-svc===1.10.0"
    assert render("RUN pip install {{ requirement }}\n", exact, source="t") == \
        "RUN pip install hello-svc===1.10.0\n"


def test_text_without_placeholders_is_unchanged_including_line_ends():
    text = "FROM x\r\nRUN echo '{ not a placeholder }' }}\n\nCMD [\"a\"]"
    assert render(text, VALUES, source="t") == text


def test_literal_braces_can_be_written():
    text = "HEALTHCHECK CMD docker inspect --format '{{ '{{' }}.State{{ \"}}\" }}'\n"
    assert render(text, VALUES, source="t") == "HEALTHCHECK CMD docker inspect --format '{{.State}}'\n"


def test_an_unknown_placeholder_names_the_template_the_line_and_the_known_ones():
    text = "FROM {{ base_image }}\n\nEXPOSE {{ prot }}\n"
    with pytest.raises(UsageError) as e:
        render(text, VALUES, source="/srv/ci/Dockerfile.template")
    message = str(e.value)
    assert message.startswith("/srv/ci/Dockerfile.template, line 3: unknown placeholder {{ prot }}; known: ")
    assert all(name in message for name in PLACEHOLDERS)
    assert "\n" not in message and e.value.exit_code == 2


@pytest.mark.parametrize(("text", "shown"), [("{{ }}", "'{{ }}'"), ("{{ a b }}", "'{{ a b }}'"),
                                             ("{{ Package }}", "{{ Package }}")])
def test_empty_or_malformed_placeholders_are_unknown(text, shown):
    with pytest.raises(UsageError, match=re.escape(f"line 1: unknown placeholder {shown}")):
        render(text, VALUES, source="t")


@pytest.mark.parametrize("text", ["RUN echo {{ package\n", "RUN echo {{ package }\n", "{{\n}}\n", "x {{"])
def test_an_unclosed_placeholder_is_an_error(text):
    with pytest.raises(UsageError, match=r"^T, line 1: '\{\{' without a closing '\}\}'"):
        render(text, VALUES, source="T")


# -- values --------------------------------------------------------------------------------------

def test_an_empty_command_runs_the_console_script_named_like_the_package():
    assert VALUES.as_mapping()["cmd_json"] == '["hello-svc"]'


def test_a_command_is_rendered_as_a_json_exec_form():
    values = replace(VALUES, command=["gunicorn", "-b", "0.0.0.0:8000", 'app:"main"', "é"])
    assert isinstance(values.command, tuple)
    assert json.loads(values.as_mapping()["cmd_json"]) == ["gunicorn", "-b", "0.0.0.0:8000", 'app:"main"', "é"]


@pytest.mark.parametrize(("field", "value", "match"), [
    ("package", "hello svc", "package"),
    ("package", "x\nRUN rm -rf /", "package"),
    ("version", "1.0-foo-bar", "PEP 440"),
    ("version", "1.0\nRUN id", "PEP 440"),
    ("port", 0, "port"), ("port", 70000, "port"), ("port", "8000", "port"), ("port", True, "port"),
    ("user", "root user", "user"), ("user", "App", "user"),
    ("base_image", "python:3.12\nRUN id", "base_image"), ("base_image", "", "base_image"),
    ("index_url", "file:///srv/simple", "index_url"), ("index_url", "http://x/ y", "index_url"),
    ("image", "a b", "image"),
    ("command", ("a\nb",), "command"),
])
def test_values_that_would_break_the_dockerfile_are_refused(field, value, match):
    with pytest.raises(UsageError, match=match):
        replace(VALUES, **{field: value})


@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:8081/simple/", "--index-url http://127.0.0.1:8081/simple/"),
    ("http://127.8.9.10/simple/", "--index-url http://127.8.9.10/simple/"),
    ("http://localhost:8081/simple/", "--index-url http://localhost:8081/simple/"),
    ("http://[::1]:8081/simple/", "--index-url 'http://[::1]:8081/simple/'"),
    ("https://pypi.internal.test/simple/", "--index-url https://pypi.internal.test/simple/"),
    ("https://10.77.0.1:8443/simple/", "--index-url https://10.77.0.1:8443/simple/"),
    ("http://10.77.0.1:8081/simple/", "--index-url http://10.77.0.1:8081/simple/"),
    ("http://pypi.internal.test/simple/", "--index-url http://pypi.internal.test/simple/"),
    ("http://[fd00::5]:8081/simple/", "--index-url 'http://[fd00::5]:8081/simple/'"),
])
def test_pip_is_never_told_to_trust_a_plain_http_index(url, expected):
    assert pip_index_args(url) == expected


def test_pip_index_args_are_shell_quoted():
    args = pip_index_args("https://u:p$x&y@idx.test/simple/?a=1")
    assert shlex.split(args) == ["--index-url", "https://u:p$x&y@idx.test/simple/?a=1"]


# -- loading -------------------------------------------------------------------------------------

def test_the_default_template_is_shipped_in_the_package():
    text, source = load_template(None)
    assert source == DEFAULT_TEMPLATE_SOURCE
    assert "{{ base_image }}" in text and "{{ cmd_json }}" in text


def test_a_template_file_is_read_and_named_by_its_path(tmp_path: Path):
    path = tmp_path / "Dockerfile.template"
    path.write_text("FROM {{ base_image }}\n", encoding="utf-8")
    assert load_template(path) == ("FROM {{ base_image }}\n", str(path))


def test_a_missing_template_names_the_path_and_the_config_key(tmp_path: Path):
    path = tmp_path / "nope.template"
    with pytest.raises(ConfigError) as e:
        load_template(path)
    assert str(e.value) == f"build.template: {path} does not exist"
    assert isinstance(e.value, UsageError) and e.value.exit_code == 2


def test_an_unreadable_template_names_the_path_and_the_config_key(tmp_path: Path):
    with pytest.raises(UsageError, match=rf"^build\.template: {re.escape(str(tmp_path))} is a directory"):
        load_template(tmp_path)
    binary = tmp_path / "t"
    binary.write_bytes(b"FROM \xff\xfe\n")
    with pytest.raises(UsageError, match=r"^build\.template: .* is not UTF-8 text"):
        load_template(binary)


# -- the default template ------------------------------------------------------------------------

def default_dockerfile(**changes) -> str:
    text, source = load_template(None)
    return render(text, replace(VALUES, **changes), source=source)


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuations joined; fails on any other line."""
    result: list[tuple[str, str]] = []
    continuing = False
    for n, line in enumerate(dockerfile.splitlines(), start=1):
        stripped = line.strip()
        if not continuing and (not stripped or stripped.startswith("#")):
            continue
        if continuing:
            result[-1] = (result[-1][0], result[-1][1] + " " + stripped.rstrip("\\").strip())
        else:
            word, _, rest = stripped.partition(" ")
            assert word in INSTRUCTIONS, f"line {n} is neither an instruction nor a continuation: {line!r}"
            result.append((word, rest.rstrip("\\").strip()))
        continuing = stripped.endswith("\\")
    assert not continuing, "the last line continues into nothing"
    return result


def test_the_default_template_renders_to_a_plausible_dockerfile():
    dockerfile = default_dockerfile()
    assert "{{" not in dockerfile and "}}" not in dockerfile
    steps = instructions(dockerfile)
    words = [word for word, _ in steps]
    assert words[0] == "FROM" and steps[0][1] == "python:3.12-slim"
    assert "LABEL" not in words
    assert words[-4:] == ["USER", "WORKDIR", "EXPOSE", "CMD"]
    args = dict(steps[-4:])
    assert args["USER"] == "app" and args["EXPOSE"] == "8000"
    assert json.loads(args["CMD"]) == ["hello-svc"]
    env = next(rest for word, rest in steps if word == "ENV")
    assert "PYTHONUNBUFFERED=1" in env.split() and "PATH=/opt/venv/bin:$PATH" in env.split()
    runs = [rest for word, rest in steps if word == "RUN"]
    assert any("python3 -m venv /opt/venv" in run for run in runs)
    install = next(run for run in runs if "pip install" in run)
    assert shlex.split(install) == ["python3", "-m", "pip", "install", "--no-cache-dir", "--no-index",
                                    "--require-hashes", "--find-links", "/opt/dockship",
                                    "-r", "/opt/dockship/requirements.txt"]
    assert all(shlex.split(run) for run in runs)   # every RUN is a well-formed shell command
    assert "index-url" not in dockerfile and "127.0.0.1:8081" not in dockerfile


def test_the_default_template_installs_each_dependency_group_in_its_own_layers_below_the_package():
    steps = instructions(default_dockerfile(dependency_groups=3))
    copies = [rest for word, rest in steps if word == "COPY"]
    assert copies == ["wheelhouse/01/ /opt/dockship/wheelhouse/01/", "wheelhouse/02/ /opt/dockship/wheelhouse/02/",
                      "wheelhouse/03/ /opt/dockship/wheelhouse/03/", "wheelhouse/service/ /opt/dockship/"]
    installs = [shlex.split(rest) for word, rest in steps if word == "RUN" and "pip install" in rest]
    assert [i[-1] for i in installs] == ["/opt/dockship/wheelhouse/01/requirements.txt",
                                         "/opt/dockship/wheelhouse/02/requirements.txt",
                                         "/opt/dockship/wheelhouse/03/requirements.txt",
                                         "/opt/dockship/requirements.txt"]
    assert all({"--no-index", "--require-hashes"} <= set(i) for i in installs)
    assert all("--no-deps" in i for i in installs[:-1]) and "--no-deps" not in installs[-1]


@pytest.mark.parametrize("groups", [-1, 100, True, "2"])
def test_a_dependency_group_count_out_of_range_is_refused(groups):
    with pytest.raises(UsageError, match="dependency_groups"):
        replace(VALUES, dependency_groups=groups)


def test_the_template_at_the_top_of_the_repository_is_the_one_dockship_ships():
    top = Path(__file__).resolve().parents[2] / "Dockerfile.template"
    assert top.read_text(encoding="utf-8") == load_template(None)[0]


def test_the_default_template_creates_the_user_before_it_becomes_that_user():
    steps = instructions(default_dockerfile(user="svc"))
    user_at = next(i for i, (word, _) in enumerate(steps) if word == "USER")
    creates = [i for i, (word, rest) in enumerate(steps) if word == "RUN" and "useradd" in rest]
    assert creates and creates[0] < user_at and steps[user_at][1] == "svc"
    assert "useradd --system --create-home --home-dir /home/svc" in steps[creates[0]][1]


def test_the_default_template_renders_the_version_and_command_it_is_given():
    dockerfile = default_dockerfile(index_url="http://10.77.0.1:8081/simple/", version="1!2.0+abc.1",
                                    command=("hello-svc", "--port", "9000"), port=9000)
    assert "hello-svc 1!2.0+abc.1" in dockerfile.splitlines()[0]
    assert 'CMD ["hello-svc", "--port", "9000"]' in dockerfile and "EXPOSE 9000" in dockerfile
    assert "10.77.0.1" not in dockerfile
