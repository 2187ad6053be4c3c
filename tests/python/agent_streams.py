"""Exec and port-forward with the official Python client against a real
node (run by tests/agent_python.rs): exec over the v4 WebSocket channel
protocol, port-forward over the v4 WebSocket port-forward protocol."""
import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()

out = stream(v1.connect_get_namespaced_pod_exec, "py", "default",
             command=["sh", "-c", "echo from-exec; echo to-stderr >&2"],
             stderr=True, stdin=False, stdout=True, tty=False)
print("EXEC", out.strip().replace("\n", "|"))

resp = stream(v1.connect_get_namespaced_pod_exec, "py", "default",
              command=["sh", "-c", "exit 4"], stderr=True, stdin=False,
              stdout=True, tty=False, _preload_content=False)
resp.run_forever(timeout=10)
print("EXITCODE", resp.returncode)

pf = portforward(v1.connect_get_namespaced_pod_portforward, "py", "default", ports="8080")
sock = pf.socket(8080)
sock.setblocking(True)
sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
data = b""
while True:
    chunk = sock.recv(4096)
    if not chunk:
        break
    data += chunk
sock.close()
print("PORTFORWARD", data.decode(errors="replace").splitlines()[0], "hello from skiff" in data.decode(errors="replace"))
