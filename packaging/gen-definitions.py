#!/usr/bin/env python3
"""Regenerates embedded/definitions.json.gz, the Kubernetes v1.33 API schemas.

Source: the `kubernetes-validate` PyPI package (Apache-2.0, by Will Thames),
file kubernetes-json-schema/v1.33.0-local/_definitions.json. That file is
generated from the upstream Kubernetes OpenAPI spec (kubernetes/kubernetes,
api/openapi-spec, Apache-2.0) and converted to JSON-schema form.

We write its `$defs` map unchanged (refs stay `#/$defs/NAME`); the server
converts to OpenAPI 3 form when it builds /openapi/v3 documents. Output is
deterministic: compact JSON, gzip header without name and with mtime 0.

Usage: pip install kubernetes-validate && python3 packaging/gen-definitions.py
"""

import gzip
import io
import json
import os
import sys

KUBE_VERSION = "v1.33.0"


def main() -> int:
    import kubernetes_validate

    src = os.path.join(
        os.path.dirname(kubernetes_validate.__file__),
        "kubernetes-json-schema",
        f"{KUBE_VERSION}-local",
        "_definitions.json",
    )
    with open(src, encoding="utf-8") as f:
        defs = json.load(f)["$defs"]

    data = json.dumps(defs, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    buf = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header byte-identical across runs.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = os.path.join(root, "embedded", "definitions.json.gz")
    with open(out, "wb") as f:
        f.write(buf.getvalue())
    print(f"{out}: {len(defs)} definitions, {len(data)} bytes json, {len(buf.getvalue())} bytes gzip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
