//! Decoding of `application/vnd.kubernetes.protobuf` request bodies.
//!
//! kubectl's typed clients (`kubectl create namespace|deployment|…`,
//! `autoscale`, `auth can-i`, `auth whoami`, `create token`) send protobuf and
//! never retry with JSON, so such bodies are turned into the JSON the client
//! would otherwise have sent and handled like any JSON request.
//!
//! The decoder is generic and table driven.  `embedded/proto-fields.json.gz`
//! (written by `packaging/gen-proto-table.py` from the k8s-pb crate, the
//! Kubernetes OpenAPI definitions and the Go struct tags) lists, for every
//! message, each field's number, JSON name, wire kind and Go presence.  The
//! wire format is read by hand; the few Kubernetes types with custom JSON forms
//! (Time, Quantity, IntOrString, …) are converted to those forms.
//!
//! Body layout: the magic `k8s\0`, then a `runtime.Unknown` message
//! {1: TypeMeta{1: apiVersion, 2: kind}, 2: raw object bytes,
//! 3: contentEncoding, 4: contentType}.

use std::collections::HashMap;
use std::io::Read;
use std::sync::OnceLock;

use base64::Engine as _;
use chrono::Datelike as _;
use serde_json::{Map, Number, Value};

const MAGIC: &[u8] = b"k8s\0";
/// Bound on message nesting, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

static TABLE_GZ: &[u8] = include_bytes!("../../embedded/proto-fields.json.gz");

/// Decodes a Kubernetes protobuf request body into `(apiVersion, kind, object)`,
/// where `object` is the JSON the client would have sent, with `apiVersion` and
/// `kind` set.  Malformed or unsupported input yields `Err(message)`.
pub fn decode_request(body: &[u8]) -> Result<(String, String, Value), String> {
    decode_envelope(table()?, body, 0)
}

// ---------------------------------------------------------------------------
// The field table

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Double,
    Message,
    Map,
}

/// How Go declares the field, which decides whether its zero value would have
/// been in the client's JSON: protobuf always carries non-pointer fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presence {
    /// `*T`: present means set, even to a zero value or `{}`.
    Pointer,
    /// `T` with `omitempty`: JSON leaves out zero values.
    OmitEmpty,
    /// `T` without `omitempty`: JSON always has it.
    Always,
    /// Not in the Go sources: drop empty strings, keep numbers and booleans.
    Unknown,
}

struct Field {
    /// `None`: Go embeds the struct inline; its fields join the parent object.
    name: Option<String>,
    kind: Kind,
    repeated: bool,
    /// Definition name for message fields and message-valued maps.
    message: Option<String>,
    map_value: Option<Kind>,
    presence: Presence,
}

/// Messages whose JSON form is not an object of their fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Special {
    None,
    Time,
    MicroTime,
    Duration,
    Quantity,
    IntOrString,
    /// RawExtension, FieldsV1, apiextensions JSON: field 1 holds JSON bytes.
    RawJson,
    /// Go `[]string` types (ExtraValue, Verbs), wrapped as {repeated string items = 1}.
    StringList,
    SchemaOrArray,
    SchemaOrBool,
    SchemaOrStringArray,
}

struct Message {
    fields: HashMap<u32, Field>,
    special: Special,
}

struct Table {
    messages: HashMap<String, Message>,
    /// (version, Kind) -> candidate definition names, sorted.
    by_kind: HashMap<(String, String), Vec<String>>,
}

fn table() -> Result<&'static Table, String> {
    static TABLE: OnceLock<Result<Table, String>> = OnceLock::new();
    TABLE.get_or_init(load_table).as_ref().map_err(Clone::clone)
}

/// One table row: [json_name, kind, repeated, message_type, map_value, presence].
type RawField = (
    Option<String>,
    String,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn load_table() -> Result<Table, String> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(TABLE_GZ)
        .read_to_end(&mut json)
        .map_err(|e| format!("protobuf field table: {e}"))?;
    let raw: HashMap<String, HashMap<String, RawField>> =
        serde_json::from_slice(&json).map_err(|e| format!("protobuf field table: {e}"))?;
    let mut messages = HashMap::with_capacity(raw.len());
    let mut by_kind: HashMap<(String, String), Vec<String>> = HashMap::new();
    for (name, raw_fields) in raw {
        let mut fields = HashMap::with_capacity(raw_fields.len());
        for (tag, (json_name, kind, repeated, message, map_value, presence)) in raw_fields {
            let tag = tag
                .parse::<u32>()
                .map_err(|_| format!("protobuf field table: bad tag {tag:?} in {name}"))?;
            let presence = match presence.as_deref() {
                Some("pointer") => Presence::Pointer,
                Some("omitempty") => Presence::OmitEmpty,
                Some("always") => Presence::Always,
                None => Presence::Unknown,
                Some(other) => return Err(format!("protobuf field table: presence {other:?}")),
            };
            let field = Field {
                name: json_name,
                kind: parse_kind(&kind)?,
                repeated,
                message,
                map_value: map_value.as_deref().map(parse_kind).transpose()?,
                presence,
            };
            fields.insert(tag, field);
        }
        let special = special_for(&name, &fields);
        let mut parts = name.rsplit('.');
        if let (Some(kind), Some(version)) = (parts.next(), parts.next()) {
            by_kind
                .entry((version.to_owned(), kind.to_owned()))
                .or_default()
                .push(name.clone());
        }
        messages.insert(name, Message { fields, special });
    }
    by_kind.values_mut().for_each(|v| v.sort());
    Ok(Table { messages, by_kind })
}

fn parse_kind(kind: &str) -> Result<Kind, String> {
    Ok(match kind {
        "string" => Kind::String,
        "bytes" => Kind::Bytes,
        "bool" => Kind::Bool,
        "int32" => Kind::Int32,
        "int64" => Kind::Int64,
        "double" => Kind::Double,
        "message" => Kind::Message,
        "map" => Kind::Map,
        other => return Err(format!("protobuf field table: unsupported kind {other:?}")),
    })
}

fn special_for(name: &str, fields: &HashMap<u32, Field>) -> Special {
    match name {
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time" => return Special::Time,
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime" => return Special::MicroTime,
        "io.k8s.apimachinery.pkg.apis.meta.v1.Duration" => return Special::Duration,
        "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1" => return Special::RawJson,
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => return Special::Quantity,
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => return Special::IntOrString,
        "io.k8s.apimachinery.pkg.runtime.RawExtension" => return Special::RawJson,
        _ => {}
    }
    if let Some(rest) = name.strip_prefix("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.") {
        match rest.split_once('.').map(|(_, msg)| msg) {
            Some("JSON") => return Special::RawJson,
            Some("JSONSchemaPropsOrArray") => return Special::SchemaOrArray,
            Some("JSONSchemaPropsOrBool") => return Special::SchemaOrBool,
            Some("JSONSchemaPropsOrStringArray") => return Special::SchemaOrStringArray,
            _ => {}
        }
    }
    let string_list = fields.len() == 1
        && fields.get(&1).is_some_and(|f| {
            f.repeated
                && f.kind == Kind::String
                && f.name.as_deref() == Some("items")
                && f.presence == Presence::Unknown
        });
    if string_list {
        Special::StringList
    } else {
        Special::None
    }
}

impl Table {
    /// Definition name for an apiVersion/kind, e.g. `rbac.authorization.k8s.io/v1`
    /// `Role` -> `io.k8s.api.rbac.v1.Role`.
    fn definition_for(&self, api_version: &str, kind: &str) -> Option<&str> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let key = (version.to_owned(), kind.to_owned());
        if let Some(found) = self
            .by_kind
            .get(&key)
            .and_then(|c| c.iter().find(|d| group_matches(d, group)))
        {
            return Some(found);
        }
        // Options types (DeleteOptions, …) are sent with the resource's group version.
        let meta = format!("io.k8s.apimachinery.pkg.apis.meta.{version}.{kind}");
        self.messages.get_key_value(&meta).map(|(k, _)| k.as_str())
    }
}

/// Whether a definition `io.k8s.<…>.<segment>.<version>.<Kind>` belongs to an
/// API group: the segment is the group's first label without `.k8s.io`
/// (`rbac.authorization.k8s.io` -> `rbac`), its labels reversed
/// (`internal.apiserver.k8s.io` -> `apiserverinternal`), or `core` for "".
fn group_matches(definition: &str, group: &str) -> bool {
    let Some(segment) = definition.rsplit('.').nth(2) else {
        return false;
    };
    if group.is_empty() {
        return definition.starts_with("io.k8s.api.core.");
    }
    let short = match group.strip_suffix(".k8s.io") {
        Some(short) => short,
        // Only the legacy groups (apps, batch, …) lack the suffix; a dotted
        // group is a custom one, which has no protobuf schema.
        None if !group.contains('.') => group,
        None => return false,
    };
    let first = short.split('.').next().unwrap_or(short);
    segment == first || segment == short.rsplit('.').collect::<String>()
}

// ---------------------------------------------------------------------------
// Decoding

fn decode_envelope(
    table: &Table,
    body: &[u8],
    depth: usize,
) -> Result<(String, String, Value), String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("not a Kubernetes protobuf body (missing k8s\\0 prefix)")?;
    let (mut api_version, mut kind) = (String::new(), String::new());
    let (mut raw, mut encoding, mut content_type): (&[u8], String, String) = (&[], String::new(), String::new());
    scan(rest, |tag, wire, r| {
        match tag {
            1 => scan(r.len_delimited(wire)?, |tag, wire, r| {
                match tag {
                    1 => api_version = lossy(r.len_delimited(wire)?),
                    2 => kind = lossy(r.len_delimited(wire)?),
                    _ => r.skip(wire)?,
                }
                Ok(())
            })?,
            2 => raw = r.len_delimited(wire)?,
            3 => encoding = lossy(r.len_delimited(wire)?),
            4 => content_type = lossy(r.len_delimited(wire)?),
            _ => r.skip(wire)?,
        }
        Ok(())
    })?;
    if !encoding.is_empty() {
        return Err(format!("unsupported protobuf contentEncoding {encoding:?}"));
    }
    if api_version.is_empty() || kind.is_empty() {
        return Err("protobuf body lacks apiVersion or kind".into());
    }
    let object = if content_type.starts_with("application/json") {
        serde_json::from_slice(raw).map_err(|e| format!("embedded JSON: {e}"))?
    } else {
        let definition = table
            .definition_for(&api_version, &kind)
            .ok_or_else(|| format!("no protobuf schema for {api_version} {kind}"))?;
        Decoder { table }.message(raw, definition, depth + 1)?
    };
    let Value::Object(fields) = object else {
        return Err(format!("{api_version} {kind}: body is not an object"));
    };
    let mut out = Map::with_capacity(fields.len() + 2);
    out.insert("apiVersion".into(), Value::String(api_version.clone()));
    out.insert("kind".into(), Value::String(kind.clone()));
    for (k, v) in fields {
        if k != "apiVersion" && k != "kind" {
            out.insert(k, v);
        }
    }
    Ok((api_version, kind, Value::Object(out)))
}

struct Decoder<'t> {
    table: &'t Table,
}

impl Decoder<'_> {
    fn message(&self, buf: &[u8], name: &str, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("protobuf message nested too deeply".into());
        }
        let msg = self
            .table
            .messages
            .get(name)
            .ok_or_else(|| format!("unknown protobuf message {name}"))?;
        if msg.special != Special::None {
            return self.special(msg, buf, depth);
        }
        let mut obj = Map::new();
        scan(buf, |tag, wire, r| match msg.fields.get(&tag) {
            Some(field) => self.field(&mut obj, field, wire, r, depth),
            None => r.skip(wire),
        })?;
        Ok(Value::Object(obj))
    }

    fn field(
        &self,
        obj: &mut Map<String, Value>,
        f: &Field,
        wire: u8,
        r: &mut Reader,
        depth: usize,
    ) -> Result<(), String> {
        let name = f.name.as_deref();
        match f.kind {
            Kind::Map => {
                let (key, value) = self.map_entry(r.len_delimited(wire)?, f, depth)?;
                let slot = obj
                    .entry(name.unwrap_or_default())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(map) = slot {
                    map.insert(key, value);
                }
            }
            Kind::Message => {
                let bytes = r.len_delimited(wire)?;
                let ty = f.message.as_deref().ok_or("message field without a type")?;
                let value = self.message(bytes, ty, depth + 1)?;
                match name {
                    // Inline embedding: the child object was already trimmed.
                    None => {
                        if let Value::Object(child) = value {
                            child.into_iter().for_each(|(k, v)| merge_field(obj, k, v));
                        }
                    }
                    Some(name) if f.repeated => push(obj, name, value),
                    Some(name) => {
                        let presence_only = self
                            .table
                            .messages
                            .get(ty)
                            .is_some_and(|m| m.fields.is_empty() && m.special == Special::None);
                        // proto2 merges repeated occurrences of a message field.
                        if !omit(&value, f, presence_only) {
                            merge_field(obj, name.to_owned(), value);
                        }
                    }
                }
            }
            scalar => {
                let Some(name) = name else {
                    return r.skip(wire);
                };
                if !f.repeated {
                    let value = scalar_value(scalar, wire, r)?;
                    // Last occurrence wins, as in protobuf.
                    if omit(&value, f, false) {
                        obj.shift_remove(name);
                    } else {
                        obj.insert(name.to_owned(), value);
                    }
                } else if wire == WIRE_LEN && !matches!(scalar, Kind::String | Kind::Bytes) {
                    // Packed repeated numbers.
                    let mut packed = Reader::new(r.len_delimited(wire)?);
                    let elem_wire = if scalar == Kind::Double { WIRE_FIXED64 } else { WIRE_VARINT };
                    while !packed.is_empty() {
                        push(obj, name, scalar_value(scalar, elem_wire, &mut packed)?);
                    }
                } else {
                    push(obj, name, scalar_value(scalar, wire, r)?);
                }
            }
        }
        Ok(())
    }

    /// A map entry is a nested message {1: key, 2: value}; missing parts take
    /// their zero values.
    fn map_entry(&self, buf: &[u8], f: &Field, depth: usize) -> Result<(String, Value), String> {
        let value_kind = f.map_value.ok_or("map field without a value kind")?;
        let (mut key, mut value) = (String::new(), None);
        scan(buf, |tag, wire, r| {
            match tag {
                1 => key = lossy(r.len_delimited(wire)?),
                2 => value = Some(self.map_value(value_kind, f, wire, r, depth)?),
                _ => r.skip(wire)?,
            }
            Ok(())
        })?;
        let value = match value {
            Some(v) => v,
            None => self.map_value(value_kind, f, WIRE_LEN, &mut Reader::new(&[0]), depth)?,
        };
        Ok((key, value))
    }

    fn map_value(
        &self,
        kind: Kind,
        f: &Field,
        wire: u8,
        r: &mut Reader,
        depth: usize,
    ) -> Result<Value, String> {
        match kind {
            Kind::Message => {
                let ty = f.message.as_deref().ok_or("map field without a value type")?;
                self.message(r.len_delimited(wire)?, ty, depth + 1)
            }
            scalar => scalar_value(scalar, wire, r),
        }
    }

    fn special(&self, msg: &Message, buf: &[u8], depth: usize) -> Result<Value, String> {
        match msg.special {
            Special::Time | Special::MicroTime => {
                let (mut seconds, mut nanos) = (0i64, 0i32);
                scan(buf, |tag, wire, r| {
                    match tag {
                        1 => seconds = r.varint_for(wire)? as i64,
                        2 => nanos = r.varint_for(wire)? as i32,
                        _ => r.skip(wire)?,
                    }
                    Ok(())
                })?;
                format_time(seconds, nanos, msg.special == Special::MicroTime)
            }
            Special::Duration => {
                let mut nanos = 0i64;
                scan(buf, |tag, wire, r| {
                    match tag {
                        1 => nanos = r.varint_for(wire)? as i64,
                        _ => r.skip(wire)?,
                    }
                    Ok(())
                })?;
                Ok(Value::String(go_duration(nanos)))
            }
            Special::Quantity => {
                let mut s = String::new();
                scan(buf, |tag, wire, r| {
                    match tag {
                        1 => s = lossy(r.len_delimited(wire)?),
                        _ => r.skip(wire)?,
                    }
                    Ok(())
                })?;
                Ok(Value::String(s))
            }
            Special::IntOrString => {
                let (mut is_string, mut int_val, mut str_val) = (false, 0i32, String::new());
                scan(buf, |tag, wire, r| {
                    match tag {
                        1 => is_string = r.varint_for(wire)? as i64 == 1,
                        2 => int_val = r.varint_for(wire)? as i32,
                        3 => str_val = lossy(r.len_delimited(wire)?),
                        _ => r.skip(wire)?,
                    }
                    Ok(())
                })?;
                Ok(if is_string {
                    Value::String(str_val)
                } else {
                    Value::from(int_val)
                })
            }
            Special::RawJson => {
                let mut raw: &[u8] = &[];
                scan(buf, |tag, wire, r| {
                    match tag {
                        1 => raw = r.len_delimited(wire)?,
                        _ => r.skip(wire)?,
                    }
                    Ok(())
                })?;
                if raw.is_empty() {
                    Ok(Value::Null)
                } else if raw.starts_with(MAGIC) {
                    // An embedded object serialized as protobuf in turn.
                    Ok(decode_envelope(self.table, raw, depth + 1)?.2)
                } else {
                    serde_json::from_slice(raw).map_err(|e| format!("embedded JSON: {e}"))
                }
            }
            Special::StringList => {
                let mut items = Vec::new();
                scan(buf, |tag, wire, r| {
                    match tag {
                        1 => items.push(Value::String(lossy(r.len_delimited(wire)?))),
                        _ => r.skip(wire)?,
                    }
                    Ok(())
                })?;
                Ok(Value::Array(items))
            }
            Special::SchemaOrArray | Special::SchemaOrBool | Special::SchemaOrStringArray => {
                self.schema_union(msg, buf, depth)
            }
            Special::None => Err("not a special message".into()),
        }
    }

    /// apiextensions' JSONSchemaPropsOr{Array,Bool,StringArray}, as their Go
    /// MarshalJSON writes them.
    fn schema_union(&self, msg: &Message, buf: &[u8], depth: usize) -> Result<Value, String> {
        let (mut schema, mut allows, mut list) = (None, false, Vec::new());
        scan(buf, |tag, wire, r| {
            let f = msg.fields.get(&tag);
            match (tag, msg.special, f.and_then(|f| f.message.as_deref())) {
                (1, Special::SchemaOrBool, _) => allows = r.varint_for(wire)? != 0,
                (1, _, Some(ty)) | (2, Special::SchemaOrBool, Some(ty)) => {
                    schema = Some(self.message(r.len_delimited(wire)?, ty, depth + 1)?)
                }
                (2, Special::SchemaOrArray, Some(ty)) => {
                    list.push(self.message(r.len_delimited(wire)?, ty, depth + 1)?)
                }
                (2, Special::SchemaOrStringArray, _) => {
                    list.push(Value::String(lossy(r.len_delimited(wire)?)))
                }
                _ => r.skip(wire)?,
            }
            Ok(())
        })?;
        Ok(match (msg.special, schema) {
            (Special::SchemaOrBool, Some(schema)) => schema,
            (Special::SchemaOrBool, None) => Value::Bool(allows),
            (_, _) if !list.is_empty() => Value::Array(list),
            (_, schema) => schema.unwrap_or(Value::Null),
        })
    }
}

/// Whether a singular field's decoded value would be absent from the client's
/// JSON.  Go writes zero values of non-pointer fields into protobuf, so those
/// of `omitempty` fields are dropped; empty non-pointer structs (`spec: {}`),
/// zero times and empty lists/maps are dropped as noise.  `presence_only`:
/// the field's message type has no fields, so only its presence means anything.
fn omit(value: &Value, f: &Field, presence_only: bool) -> bool {
    let scalar = !matches!(f.kind, Kind::Message | Kind::Map);
    let zero_omitted = scalar && f.presence == Presence::OmitEmpty;
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(m) => m.is_empty() && f.presence != Presence::Pointer && !presence_only,
        Value::String(s) if scalar => {
            s.is_empty() && matches!(f.presence, Presence::OmitEmpty | Presence::Unknown)
        }
        // A Quantity or IntOrString string.
        Value::String(s) => s.is_empty() && f.presence != Presence::Pointer,
        Value::Number(n) => zero_omitted && is_zero(n),
        Value::Bool(b) => zero_omitted && !b,
    }
}

fn is_zero(n: &Number) -> bool {
    n.as_i64() == Some(0) || n.as_u64() == Some(0) || n.as_f64() == Some(0.0)
}

/// Inserts a field value, merging objects into an existing one (proto2
/// merges repeated occurrences of a message field).
fn merge_field(obj: &mut Map<String, Value>, key: String, value: Value) {
    match (obj.get_mut(&key), value) {
        (Some(Value::Object(existing)), Value::Object(new)) => {
            new.into_iter().for_each(|(k, v)| merge_field(existing, k, v));
        }
        (_, value) => {
            obj.insert(key, value);
        }
    }
}

fn push(obj: &mut Map<String, Value>, key: &str, value: Value) {
    let slot = obj.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    if let Value::Array(items) = slot {
        items.push(value);
    }
}

fn scalar_value(kind: Kind, wire: u8, r: &mut Reader) -> Result<Value, String> {
    Ok(match kind {
        Kind::String => Value::String(lossy(r.len_delimited(wire)?)),
        // JSON carries []byte as standard base64.
        Kind::Bytes => Value::String(base64::engine::general_purpose::STANDARD.encode(r.len_delimited(wire)?)),
        Kind::Bool => Value::Bool(r.varint_for(wire)? != 0),
        // int32 travels sign-extended to 64 bits; the low half is the value.
        Kind::Int32 => Value::from(r.varint_for(wire)? as i32),
        Kind::Int64 => Value::from(r.varint_for(wire)? as i64),
        Kind::Double => {
            let x = f64::from_bits(r.fixed64_for(wire)?);
            // Go prints integral floats without a fraction (`1`, not `1.0`).
            if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
                Value::from(x as i64)
            } else {
                Value::Number(Number::from_f64(x).ok_or("non-finite double")?)
            }
        }
        Kind::Message | Kind::Map => return Err("not a scalar kind".into()),
    })
}

/// Invalid UTF-8 becomes U+FFFD, as Go's JSON encoder does.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// metav1.Time is RFC 3339 in seconds, MicroTime with 6 fractional digits
/// (both UTC); the zero time is JSON `null`.
fn format_time(seconds: i64, nanos: i32, micro: bool) -> Result<Value, String> {
    if seconds == 0 && nanos == 0 {
        return Ok(Value::Null);
    }
    let total = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    let secs = i64::try_from(total.div_euclid(1_000_000_000)).map_err(|_| "time out of range")?;
    let nsecs = total.rem_euclid(1_000_000_000) as u32;
    let t = chrono::DateTime::from_timestamp(secs, nsecs)
        .filter(|t| (0..=9999).contains(&t.year()))
        .ok_or("time out of range")?;
    let format = if micro {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(Value::String(t.format(format).to_string()))
}

/// Go's `time.Duration.String()`: "1h0m0s", "1.5s", "100ms", "0s".
fn go_duration(nanos: i64) -> String {
    /// `v / 10^prec` and its fraction digits without trailing zeros (".5").
    fn split(v: u64, prec: u32) -> (u64, String) {
        let scale = 10u64.pow(prec);
        let frac = v % scale;
        if frac == 0 {
            return (v / scale, String::new());
        }
        let digits = format!("{frac:0width$}", width = prec as usize);
        (v / scale, format!(".{}", digits.trim_end_matches('0')))
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let body = if u == 0 {
        "0s".to_owned()
    } else if u < 1_000_000_000 {
        let (prec, unit) = match u {
            ..1_000 => (0, "ns"),
            ..1_000_000 => (3, "µs"),
            _ => (6, "ms"),
        };
        let (whole, frac) = split(u, prec);
        format!("{whole}{frac}{unit}")
    } else {
        let (secs, frac) = split(u, 9);
        let (mins, secs) = (secs / 60, secs % 60);
        let (hours, mins) = (mins / 60, mins % 60);
        match (hours, mins) {
            (0, 0) => format!("{secs}{frac}s"),
            (0, _) => format!("{mins}m{secs}{frac}s"),
            _ => format!("{hours}h{mins}m{secs}{frac}s"),
        }
    };
    format!("{sign}{body}")
}

// ---------------------------------------------------------------------------
// Wire format

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("truncated protobuf varint")?;
            self.buf = rest;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err("protobuf varint too long".into())
    }

    fn key(&mut self) -> Result<(u32, u8), String> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| "protobuf field number too large")?;
        if tag == 0 {
            return Err("protobuf field number 0".into());
        }
        Ok((tag, (key & 7) as u8))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err("truncated protobuf field".into());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn expect(wire: u8, expected: u8) -> Result<(), String> {
        if wire == expected {
            Ok(())
        } else {
            Err(format!("protobuf wire type {wire} where {expected} was expected"))
        }
    }

    fn len_delimited(&mut self, wire: u8) -> Result<&'a [u8], String> {
        Self::expect(wire, WIRE_LEN)?;
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| "protobuf length too large")?)
    }

    fn varint_for(&mut self, wire: u8) -> Result<u64, String> {
        Self::expect(wire, WIRE_VARINT)?;
        self.varint()
    }

    fn fixed64_for(&mut self, wire: u8) -> Result<u64, String> {
        Self::expect(wire, WIRE_FIXED64)?;
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| "truncated fixed64")?))
    }

    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_FIXED64 => self.take(8).map(drop),
            WIRE_LEN => self.len_delimited(wire).map(drop),
            WIRE_FIXED32 => self.take(4).map(drop),
            other => Err(format!("unsupported protobuf wire type {other}")),
        }
    }
}

/// Calls `f(tag, wire type, reader)` for each field of a message; `f` must
/// consume the field's value (read or skip it).
fn scan<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(u32, u8, &mut Reader<'a>) -> Result<(), String>,
) -> Result<(), String> {
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let (tag, wire) = r.key()?;
        f(tag, wire, &mut r)?;
    }
    Ok(())
}
