"""What `sshengine` borrows from docker-py, requests and urllib3 beyond their public APIs.

Issue 8: these are version bounds in disguise. Each assumption is checked
here by name, so that an upgrade that breaks one fails this file, not the
first roll in the lab. The list (and why each is needed) is in sshengine's
docstring.
"""

from __future__ import annotations

import inspect
import socket

import docker
import docker.api.client
import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool

from dockship import sshengine


def test_a_docker_api_client_is_a_requests_session_to_mount_our_adapter_on():
    assert issubclass(docker.APIClient, requests.Session)


def test_docker_py_digs_the_channel_out_of_a_response_for_the_ssh_base_url():
    # attach/exec/logs hijack the connection; for this base URL docker-py reads the
    # paramiko channel from the response, which is what our connection's socket is.
    source = inspect.getsource(docker.api.client.APIClient._get_raw_response_socket)
    assert sshengine._BASE_URL in source and ".channel" in source


def test_a_client_given_its_api_version_contacts_nothing_when_made():
    with socket.socket() as placeholder:       # a port where nothing answers
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{port}", version="1.43", timeout=1)
        client.close()


def test_requests_lets_an_adapter_choose_the_pool_and_the_request_path():
    adapter = requests.adapters.HTTPAdapter
    assert hasattr(adapter, "get_connection_with_tls_context")     # requests >= 2.32.2
    assert hasattr(adapter, "request_url")


def test_urllib3_pools_make_connections_of_our_class_and_ask_if_they_are_connected():
    assert urllib3.connectionpool.HTTPConnectionPool.ConnectionCls is urllib3.connection.HTTPConnection
    assert isinstance(inspect.getattr_static(urllib3.connection.HTTPConnection, "is_connected"),
                      property)
    # Unknown keyword arguments of the pool reach the connection class (our open_channel).
    assert "conn_kw" in inspect.signature(urllib3.connectionpool.HTTPConnectionPool).parameters
