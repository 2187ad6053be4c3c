"""Integration tests driving skiff with the official Python `kubernetes` client.

The module starts its own skiff server (binary from $SKIFF_BIN, default
target/debug/skiff in the repository) on a free port of 127.0.0.1 with a
temporary data directory, and kills it by PID at the end.
"""

import base64
import http.client
import json
import os
import pathlib
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
READY_TIMEOUT = 10.0

# Only 127.0.0.1 may be contacted: never go through a proxy from the environment.
for _var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _readyz(port, kubeconfig):
    """GET /readyz over TLS, verifying the serving cert against the kubeconfig CA."""
    with open(kubeconfig) as f:
        kc = yaml.safe_load(f)
    ca = base64.b64decode(kc["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
    ctx = ssl.create_default_context(cadata=ca)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=2)
    try:
        conn.request("GET", "/readyz")
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    finally:
        conn.close()


def _log_tail(path, lines=60):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def _die_with_parent():
    """In the child before exec: get SIGKILL if pytest dies without teardown."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


class _Server:
    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="skiff-pytest-")
        self.dir = pathlib.Path(self.tmp.name)
        self.kubeconfig = self.dir / "kc.yaml"
        self.log_path = self.dir / "server.log"
        self.bin = os.environ.get("SKIFF_BIN") or str(REPO_ROOT / "target" / "debug" / "skiff")
        self.proc = None
        self.port = None

    def start(self):
        last = "not started"
        for _ in range(3):
            self.port = _free_port()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [
                    self.bin,
                    "server",
                    "--data-dir", str(self.dir),
                    "--https-listen-port", str(self.port),
                    "--bind-address", "127.0.0.1",
                    "--write-kubeconfig", str(self.kubeconfig),
                    "--disable-agent",
                    "--config", str(self.dir / "no-such-config.yaml"),
                ],
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
                stdout=log,
                stderr=log,
            )
            log.close()
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last = f"server exited with {self.proc.returncode}"
                    break
                if self.kubeconfig.exists():
                    try:
                        if _readyz(self.port, self.kubeconfig):
                            return
                        last = "/readyz not 200"
                    except (OSError, ssl.SSLError, KeyError, TypeError, yaml.YAMLError) as e:
                        last = f"/readyz: {e!r}"
                time.sleep(0.05)
            else:
                last = f"not ready after {READY_TIMEOUT} s ({last})"
            self.stop()  # maybe the port was taken meanwhile: retry on another
        raise RuntimeError(f"skiff server did not start: {last}\n{_log_tail(self.log_path)}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def server():
    s = _Server()
    s.start()
    try:
        yield s
    finally:
        s.stop()
        if os.environ.get("SKIFF_KEEP_LOGS"):
            print(_log_tail(s.log_path, 200))
        s.tmp.cleanup()


@pytest.fixture(scope="module")
def api_client(server):
    config.load_kube_config(config_file=str(server.kubeconfig))
    cfg = client.Configuration.get_default_copy()
    assert cfg.host == f"https://127.0.0.1:{server.port}", cfg.host
    assert cfg.verify_ssl
    cfg.proxy = None
    api = client.ApiClient(cfg)
    yield api
    api.close()


@pytest.fixture
def core(api_client):
    return client.CoreV1Api(api_client)


@pytest.fixture
def apps(api_client):
    return client.AppsV1Api(api_client)


def _name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _status_body(exc):
    try:
        return json.loads(exc.body)
    except (TypeError, ValueError):
        return {}


def _deployment(name, replicas=1):
    labels = {"app": name}
    return client.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="web", image="nginx:1.27")]
                ),
            ),
        ),
    )


def test_list_namespaces_has_system_namespaces(core):
    names = {ns.metadata.name for ns in core.list_namespace().items}
    for expected in ("default", "kube-system", "kube-public", "kube-node-lease"):
        assert expected in names, names


def test_configmap_create_strategic_patch_read(core):
    name = _name("cm")
    created = core.create_namespaced_config_map(
        "default",
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name, labels={"a": "1"}),
            data={"k1": "v1", "k2": "v2"},
        ),
    )
    assert created.metadata.name == name
    assert created.metadata.resource_version

    # A dict body is sent as application/strategic-merge-patch+json.
    patched = core.patch_namespaced_config_map(
        name,
        "default",
        {"metadata": {"labels": {"b": "2"}}, "data": {"k2": None, "k3": "v3"}},
    )
    assert patched.data == {"k1": "v1", "k3": "v3"}, patched.data
    assert patched.metadata.labels == {"a": "1", "b": "2"}, patched.metadata.labels
    assert patched.metadata.resource_version != created.metadata.resource_version

    got = core.read_namespaced_config_map(name, "default")
    assert got.data == {"k1": "v1", "k3": "v3"}, got.data
    assert got.metadata.labels == {"a": "1", "b": "2"}, got.metadata.labels


def test_deployment_scale_subresource(apps):
    name = _name("web")
    created = apps.create_namespaced_deployment("default", _deployment(name, replicas=1))
    assert created.spec.replicas == 1

    scale = apps.patch_namespaced_deployment_scale(name, "default", {"spec": {"replicas": 5}})
    assert scale.spec.replicas == 5, scale

    got = apps.read_namespaced_deployment(name, "default")
    assert got.spec.replicas == 5, got.spec
    assert got.spec.template.spec.containers[0].image == "nginx:1.27"

    scale = apps.read_namespaced_deployment_scale(name, "default")
    assert scale.spec.replicas == 5, scale


def test_watch_receives_added(core):
    name = _name("watched")
    errors = []

    def create_later():
        try:
            time.sleep(0.5)
            core.create_namespaced_config_map(
                "default",
                client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"k": "v"}),
            )
        except Exception as e:  # reported by the main thread
            errors.append(e)

    creator = threading.Thread(target=create_later)
    w = watch.Watch()
    seen = []
    found = None
    creator.start()
    try:
        for event in w.stream(
            core.list_namespaced_config_map,
            namespace="default",
            timeout_seconds=5,
            _request_timeout=30,  # client-side guard should the server not end the watch
        ):
            seen.append((event["type"], event["object"].metadata.name))
            if event["type"] == "ADDED" and event["object"].metadata.name == name:
                found = event["object"]
                w.stop()
    finally:
        creator.join()
    assert not errors, errors
    assert found is not None, f"no ADDED event for {name}; events seen: {seen}"
    assert found.data == {"k": "v"}


def test_dynamic_client_lists_deployments(api_client, apps, server):
    name = _name("dyn")
    apps.create_namespaced_deployment("default", _deployment(name))
    dyn = DynamicClient(api_client, cache_file=str(server.dir / "dynamic-discovery.json"))
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    assert deployments.namespaced
    result = deployments.get(namespace="default")
    assert result.kind == "DeploymentList", result.kind
    names = [item.metadata.name for item in result.items]
    assert name in names, names
    one = deployments.get(name=name, namespace="default")
    assert one.spec.replicas == 1


def test_invalid_name_is_422_invalid(core):
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map(
            "default",
            client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Bad_Name"), data={"k": "v"}),
        )
    exc = info.value
    body = _status_body(exc)
    assert exc.status == 422, (exc.status, exc.body)
    assert body.get("kind") == "Status", exc.body
    assert body.get("reason") == "Invalid", exc.body
    assert body.get("code") == 422, exc.body


def test_missing_object_is_404(core):
    with pytest.raises(ApiException) as info:
        core.read_namespaced_config_map("no-such-configmap", "default")
    exc = info.value
    body = _status_body(exc)
    assert exc.status == 404, (exc.status, exc.body)
    assert body.get("reason") == "NotFound", exc.body
    assert body.get("code") == 404, exc.body
