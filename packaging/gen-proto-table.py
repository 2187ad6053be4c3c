#!/usr/bin/env python3
"""Generate embedded/proto-fields.json.gz, the field table used by src/api/protobuf.rs.

Sources:
  * Field numbers and wire types: the prost-generated Rust types of the
    `k8s-pb` crate, version 0.9.0 (https://crates.io/crates/k8s-pb,
    Apache-2.0, generated from the upstream k8s.io/* generated.proto files).
    Only its `#[prost(...)]` field attributes are parsed.
  * Spellings: prost renames things (message `JSONSchemaProps` ->
    `JsonSchemaProps`, field `podIP` -> `pod_ip`), so the JSON names are
    recovered by case/punctuation-insensitive matching against the Kubernetes
    OpenAPI definitions shipped in the PyPI package kubernetes-validate
    (kubernetes-json-schema/v1.33.0-local/_definitions.json; other releases
    there only fill in names v1.33 lacks), falling back to lowerCamelCase.
  * Presence: protobuf (unlike JSON) always carries Go's non-pointer fields,
    so whether a zero value would have appeared in the client's JSON depends
    on the Go struct tags.  These come from the Go sources of k8s.io/api and
    k8s.io/apimachinery (Apache-2.0; tag v0.35.7, the release k8s-pb 0.9.0 was
    generated from), e.g. `git archive v0.35.7 | tar -x -C DIR` in clones of
    github.com/kubernetes/api and github.com/kubernetes/apimachinery.

Output (gzip, mtime 0, deterministic):
  { "<definition name>": { "<tag>": [json_name, kind, repeated, message_type, map_value, presence] } }
  json_name:    JSON property name, or null when Go embeds the struct inline
                (`json:",inline"`, e.g. Volume.volumeSource)
  kind:         prost scalar type ("string", "bytes", "int32", "int64",
                "bool", "double"), "message", or "map" (keys are always strings)
  repeated:     true for repeated fields
  message_type: definition name for "message" fields and message-valued maps
  map_value:    for "map": the value kind ("string", "bytes", "message"), else null
  presence:     Go field shape: "pointer" (zero values and {} are meaningful),
                "omitempty" (non-pointer, zero value omitted from JSON),
                "always" (non-pointer, no omitempty), or null (not in the Go sources)

Usage:
  packaging/gen-proto-table.py --go-api DIR --go-apimachinery DIR
      [--source DIR_OR_CRATE] [--definitions FILE]... [--out FILE] [-v]
"""

import argparse
import glob
import gzip
import io
import json
import os
import re
import sys
import tarfile

CRATE = "k8s-pb-0.9.0"
HERE = os.path.dirname(os.path.abspath(__file__))

# Top-level k8s-pb modules whose OpenAPI prefix uses a hyphen.
TOP_LEVEL_RENAMES = {
    "apiextensions_apiserver": "apiextensions-apiserver",
    "kube_aggregator": "kube-aggregator",
}

ATTR_RE = re.compile(r"^\s*#\[prost\((.*)\)\]\s*$")
STRUCT_RE = re.compile(r"^pub struct (\w+) \{")
FIELD_RE = re.compile(r"^\s*pub (?:r#)?(\w+):(.*)$")
TAG_RE = re.compile(r'tag\s*=\s*"(\d+)"')
MAP_RE = re.compile(r'btree_map\s*=\s*"string,\s*(\w+)"')


def norm(s):
    """Spelling key: lowercase, alphanumerics only (podIP ~ pod_ip, $ref ~ ref)."""
    return re.sub(r"[^a-z0-9]", "", s.lower())


def lower_camel(snake):
    parts = snake.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def find_source():
    pats = [
        os.path.expanduser(f"~/.cargo/registry/src/*/{CRATE}"),
        os.path.expanduser(f"~/.cargo/registry/cache/*/{CRATE}.crate"),
    ]
    for p in pats:
        hits = sorted(glob.glob(p))
        if hits:
            return hits[0]
    sys.exit(f"cannot find {CRATE}; run `cargo fetch` for a project depending on k8s-pb = \"=0.9.0\" or pass --source")


def read_sources(src):
    """[(module path parts, file text)] for every src/**/mod.rs of the crate, sorted."""
    out = []
    if os.path.isdir(src):
        root = os.path.join(src, "src") if os.path.isdir(os.path.join(src, "src")) else src
        for dirpath, _, files in os.walk(root):
            for f in files:
                if f == "mod.rs":
                    rel = os.path.relpath(dirpath, root)
                    with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                        out.append((rel.split(os.sep), fh.read()))
    else:
        with tarfile.open(src, "r:gz") as tar:
            for m in tar.getmembers():
                parts = m.name.split("/")
                # <crate>/src/<module...>/mod.rs
                if len(parts) >= 4 and parts[1] == "src" and parts[-1] == "mod.rs":
                    text = tar.extractfile(m).read().decode("utf-8")
                    out.append((parts[2:-1], text))
    out.sort()
    return out


def find_definitions():
    """Paths of the kubernetes-validate definition files, v1.33 first.

    v1.33 is authoritative; the other releases (newest first) only help recover
    spellings of messages/fields that v1.33 does not serve (old group versions,
    newer fields).
    """
    try:
        import kubernetes_validate
    except ImportError:
        sys.exit("pip install kubernetes-validate (or pass --definitions)")
    root = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
    primary = os.path.join(root, "v1.33.0-local", "_definitions.json")
    others = sorted(glob.glob(os.path.join(root, "v1.*-local", "_definitions.json")), reverse=True)
    return [primary] + [o for o in others if o != primary]


GO_STRUCT_RE = re.compile(r"^type (\w+) struct \{")
GO_FIELD_RE = re.compile(r"^\s*(?:(\w+)\s+)?(\S+)\s+`([^`]*)`")
GO_TAG_RE = re.compile(r'(\w+):"([^"]*)"')


def parse_go_presence(root, prefix_of_dir):
    """{(definition prefix, norm(struct)): {tag: (presence, json name)}} from Go struct tags."""
    out = {}
    for dirpath, _, files in sorted(os.walk(root)):
        prefix = prefix_of_dir(os.path.relpath(dirpath, root).replace(os.sep, "/"))
        if prefix is None:
            continue
        for f in sorted(files):
            if not f.endswith(".go") or f.endswith("_test.go") or f.startswith("zz_generated"):
                continue
            with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                struct = None
                for line in fh:
                    if struct is None:
                        m = GO_STRUCT_RE.match(line)
                        if m:
                            struct = out.setdefault((prefix, norm(m.group(1))), {})
                        continue
                    if line.startswith("}"):
                        struct = None
                        continue
                    if line.lstrip().startswith("//"):
                        continue
                    m = GO_FIELD_RE.match(line)
                    if not m:
                        continue
                    tags = dict(GO_TAG_RE.findall(m.group(3)))
                    pb = tags.get("protobuf", "").split(",")
                    if len(pb) < 2 or not pb[1].isdigit():
                        continue
                    gotype = m.group(2)
                    if gotype.startswith("*"):
                        presence = "pointer"
                    elif "omitempty" in tags.get("json", "").split(",")[1:]:
                        presence = "omitempty"
                    else:
                        presence = "always"
                    json_name = tags.get("json", "").split(",")[0]
                    struct[pb[1]] = (presence, json_name if json_name not in ("", "-") else None)
    return out


def go_api_prefix(rel):
    # <group>/<version> -> io.k8s.api.<group>.<version>
    parts = rel.split("/")
    if len(parts) == 2 and re.fullmatch(r"v\d+((alpha|beta)\d+)?", parts[1]):
        return "io.k8s.api." + ".".join(parts)
    return None


def go_apimachinery_prefix(rel):
    if rel.startswith("pkg/") and "/internal" not in rel and "testing" not in rel:
        return "io.k8s.apimachinery." + rel.replace("/", ".")
    return None


def parse_structs(text):
    """Return {struct: [(attr, field_name, type_text)]} for one module file."""
    structs = {}
    cur = None
    pending_attr = None
    field = None  # [attr, name, type_text] still collecting the type text
    for line in text.splitlines():
        if cur is None:
            m = STRUCT_RE.match(line)
            if m:
                structs[m.group(1)] = []
                # `pub struct X {}` (no fields) opens and closes on one line.
                if not line.rstrip().endswith("{}"):
                    cur = structs[m.group(1)]
            continue
        if line.startswith("}"):
            if field:
                cur.append(tuple(field))
            cur, field, pending_attr = None, None, None
            continue
        stripped = line.strip()
        m = ATTR_RE.match(line)
        if m:
            if field:
                cur.append(tuple(field))
                field = None
            pending_attr = m.group(1)
            continue
        if stripped.startswith("///") or stripped.startswith("#["):
            if field:
                cur.append(tuple(field))
                field = None
            continue
        m = FIELD_RE.match(line)
        if m and pending_attr is not None:
            if field:
                cur.append(tuple(field))
            field = [pending_attr, m.group(1), m.group(2).strip()]
            pending_attr = None
            continue
        if field:
            field[2] += stripped
    return structs


def resolve(module, type_text):
    """Resolve the message type named at the end of a Rust type to (module parts, struct)."""
    t = type_text
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
        t = t.replace(wrapper, "")
    if "BTreeMap<" in t:
        t = t.split(",", 1)[1]
    t = t.strip().rstrip(",> ")
    segs = t.split("::")
    name, path = segs[-1], segs[:-1]
    mod = list(module)
    if path and path[0] == "crate":
        mod, path = [], path[1:]
    while path and path[0] == "super":
        mod.pop()
        path = path[1:]
    return tuple(mod + path), name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", help=f"unpacked {CRATE} directory or .crate file")
    ap.add_argument("--definitions", action="append", help="_definitions.json (repeatable; first wins)")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "embedded", "proto-fields.json.gz"), help="output file")
    ap.add_argument("--go-api", help="k8s.io/api source tree (tag v0.35.7)")
    ap.add_argument("--go-apimachinery", help="k8s.io/apimachinery source tree (tag v0.35.7)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if not (args.go_api and args.go_apimachinery):
        sys.exit("--go-api and --go-apimachinery are required (see --help)")

    # OpenAPI knowledge: definition name -> {norm(prop): prop}; also by short
    # message name (across groups/versions) and a global spelling dictionary.
    props_by_def = {}
    props_by_short = {}
    def_by_norm = {}
    short_by_norm = {}
    spelling = {}
    for path in args.definitions or find_definitions():
        with open(path, encoding="utf-8") as fh:
            defs = json.load(fh)["$defs"]
        for d, schema in defs.items():
            prefix, _, msg = d.rpartition(".")
            def_by_norm.setdefault((prefix, norm(msg)), d)
            short_by_norm.setdefault(norm(msg), msg)
            for p in schema.get("properties", {}):
                props_by_def.setdefault(d, {}).setdefault(norm(p), p)
                props_by_short.setdefault(norm(msg), {}).setdefault(norm(p), p)
                spelling.setdefault(norm(p), p)

    presence_by_struct = parse_go_presence(args.go_api, go_api_prefix)
    presence_by_struct.update(parse_go_presence(args.go_apimachinery, go_apimachinery_prefix))

    modules = read_sources(args.source or find_source())
    parsed = {}  # (module tuple, struct) -> fields
    for module, text in modules:
        for struct, fields in parse_structs(text).items():
            parsed[(tuple(module), struct)] = fields

    def prefix_of(module):
        top = TOP_LEVEL_RENAMES.get(module[0], module[0])
        return ".".join(["io", "k8s", top] + list(module[1:]))

    def def_name(module, struct):
        prefix = prefix_of(module)
        known = def_by_norm.get((prefix, norm(struct)))
        if known:
            return known
        # e.g. extensions/v1beta1 `IngressTls` -> `IngressTLS` as spelled elsewhere
        return f"{prefix}.{short_by_norm.get(norm(struct), struct)}"

    def props_of(name):
        return props_by_def.get(name) or props_by_short.get(norm(name.rpartition(".")[2]), {})

    visible_memo = {}

    def visible_fields(key, depth=0):
        """Normalized JSON field names a struct contributes, expanding inline embeds."""
        if key in visible_memo:
            return visible_memo[key]
        props = props_of(def_name(*key))
        out = set()
        for attr, fname, ty in parsed.get(key, []):
            if norm(fname) in props or not attr.startswith("message") or depth > 8:
                out.add(norm(fname))
                continue
            sub = visible_fields(resolve(key[0], ty), depth + 1)
            out |= sub if sub and sub <= set(props) else {norm(fname)}
        visible_memo[key] = out
        return out

    table = {}
    notes = []
    for (module, struct), fields in sorted(parsed.items()):
        name = def_name(module, struct)
        props = props_of(name)
        prefix, _, short = name.rpartition(".")
        go_presence = presence_by_struct.get((prefix, norm(short)), {})
        entry = {}
        for attr, fname, ty in fields:
            tag = TAG_RE.search(attr)
            if not tag:
                sys.exit(f"{name}.{fname}: no tag in {attr!r}")
            kind = attr.split(",")[0].strip()
            repeated = ", repeated" in attr
            msg_type = None
            map_value = None
            child = None
            mm = MAP_RE.search(attr)
            if mm:
                kind, map_value = "map", mm.group(1)
                if map_value == "message":
                    msg_type = def_name(*resolve(module, ty))
            elif kind == "message":
                child = resolve(module, ty)
                msg_type = def_name(*child)
            elif kind.startswith("bytes"):
                kind = "bytes"
            json_name = props.get(norm(fname))
            presence, go_json = go_presence.get(tag.group(1), (None, None))
            if json_name is None and child is not None and not repeated and props:
                # Go embeds the struct with `json:",inline"` (e.g. Volume.volumeSource):
                # its fields belong to the parent JSON object.  Marked by a null name.
                child_fields = visible_fields(child)
                if child_fields and child_fields <= set(props):
                    notes.append(f"inline: {name}.{fname} ({msg_type})")
                    entry[tag.group(1)] = [None, kind, repeated, msg_type, map_value, presence]
                    continue
            if json_name is None and go_json is not None and norm(go_json) == norm(fname):
                json_name = go_json
            if json_name is None:
                json_name = spelling.get(norm(fname)) or lower_camel(fname)
                notes.append(f"guessed: {name}.{json_name}")
            if presence is None:
                notes.append(f"no Go field: {name}.{json_name}")
            entry[tag.group(1)] = [json_name, kind, repeated, msg_type, map_value, presence]
        table[name] = dict(sorted(entry.items(), key=lambda kv: int(kv[0])))

    # Every referenced message type must exist in the table.
    for name, entry in table.items():
        for tag, (_, _, _, mt, _, _) in entry.items():
            if mt is not None and mt not in table:
                sys.exit(f"{name} tag {tag}: unresolved message type {mt}")

    data = json.dumps(table, separators=(",", ":")).encode()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "wb") as fh:
        fh.write(buf.getvalue())
    if args.verbose:
        for n in notes:
            print(n, file=sys.stderr)
    print(
        f"wrote {args.out}: {len(table)} messages, {sum(len(e) for e in table.values())} fields "
        f"({sum(n.startswith('inline') for n in notes)} inline, "
        f"{sum(n.startswith('guessed') for n in notes)} spelled without a matching definition, "
        f"{sum(n.startswith('no Go') for n in notes)} without Go presence info), "
        f"{len(buf.getvalue())} bytes",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
