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
    if let Some(rest) = name.strip_prefix("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.")
    {
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
    let (mut raw, mut encoding, mut content_type): (&[u8], String, String) =
        (&[], String::new(), String::new());
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
                    let elem_wire = if scalar == Kind::Double {
                        WIRE_FIXED64
                    } else {
                        WIRE_VARINT
                    };
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
        let value = match (value, value_kind) {
            (Some(v), _) => v,
            (None, Kind::Message) => {
                let ty = f
                    .message
                    .as_deref()
                    .ok_or("map field without a value type")?;
                self.message(&[], ty, depth + 1)?
            }
            (None, Kind::Bool) => Value::Bool(false),
            (None, Kind::String | Kind::Bytes) => Value::String(String::new()),
            (None, _) => Value::from(0),
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
                let ty = f
                    .message
                    .as_deref()
                    .ok_or("map field without a value type")?;
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
            new.into_iter()
                .for_each(|(k, v)| merge_field(existing, k, v));
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
        Kind::Bytes => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(r.len_delimited(wire)?))
        }
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
            0..1_000 => (0, "ns"),
            1_000..1_000_000 => (3, "µs"),
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
            Err(format!(
                "protobuf wire type {wire} where {expected} was expected"
            ))
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
        Ok(u64::from_le_bytes(
            bytes.try_into().map_err(|_| "truncated fixed64")?,
        ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // --- a tiny protobuf encoder for hand-built vectors ---

    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
        out
    }

    fn vi(tag: u32, v: u64) -> Vec<u8> {
        [varint(u64::from(tag) << 3), varint(v)].concat()
    }

    fn ld(tag: u32, bytes: &[u8]) -> Vec<u8> {
        [
            varint(u64::from(tag) << 3 | 2),
            varint(bytes.len() as u64),
            bytes.to_vec(),
        ]
        .concat()
    }

    fn st(tag: u32, s: &str) -> Vec<u8> {
        ld(tag, s.as_bytes())
    }

    fn fixed64(tag: u32, v: u64) -> Vec<u8> {
        [varint(u64::from(tag) << 3 | 1), v.to_le_bytes().to_vec()].concat()
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [st(1, api_version), st(2, kind)].concat();
        [
            MAGIC.to_vec(),
            ld(1, &type_meta),
            ld(2, raw),
            st(3, ""),
            st(4, ""),
        ]
        .concat()
    }

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn decode(body: &[u8]) -> Value {
        decode_request(body).unwrap().2
    }

    fn decode_as(raw: &[u8], definition: &str) -> Result<Value, String> {
        Decoder { table: table()? }.message(raw, definition, 0)
    }

    #[test]
    fn observed_kubectl_create_namespace() {
        let body = hex(
            "6b 38 73 00 0a 0f 0a 02 76 31 12 09 4e 61 6d 65 73 70 61 63 65 12 1b 0a 13 0a 03 6e \
             73 32 12 00 1a 00 22 00 2a 00 32 00 38 00 42 00 12 00 1a 02 0a 00 1a 00 22 00",
        );
        let (api_version, kind, object) = decode_request(&body).unwrap();
        assert_eq!((api_version.as_str(), kind.as_str()), ("v1", "Namespace"));
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns2"}})
        );
        // apiVersion and kind come first.
        assert!(
            object
                .to_string()
                .starts_with(r#"{"apiVersion":"v1","kind":"Namespace","#)
        );
    }

    /// Request bodies captured from kubectl 1.33 (the v1 autoscale from 1.32).
    /// For the `create` commands the expected JSON equals kubectl's own
    /// `--dry-run=client -o json` output minus nulls and empty non-pointer
    /// structs (`spec: {}`, `resources: {}`).
    const KUBECTL_VECTORS: &[(&str, &str, &str)] = &[
        // kubectl create namespace ns2
        (
            "namespace",
            "6b3873000a0f0a02763112094e616d657370616365121b0a130a036e733212001a0022002a0032003800420012001a02\
         0a001a002200",
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ns2"}}"#,
        ),
        // kubectl create configmap cm1 --from-literal=a=b --from-literal=empty= --from-literal=key.two="hello world"
        (
            "configmap",
            "6b3873000a0f0a0276311209436f6e6669674d617012400a130a03636d3112001a0022002a0032003800420012060a01\
         6112016212090a05656d707479120012160a076b65792e74776f120b68656c6c6f20776f726c641a002200",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm1"},"data":{"a":"b","empty":"","key.two":"hello world"}}"#,
        ),
        // kubectl create secret generic s1 --from-literal=user=admin --from-literal=pw=s3cr3t! --type=Opaque
        (
            "secret",
            "6b3873000a0c0a0276311206536563726574123a0a120a02733112001a0022002a00320038004200120d0a0270771207\
         73336372337421120d0a0475736572120561646d696e1a064f70617175651a002200",
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s1"},"data":{"pw":"czNjcjN0IQ==","user":"YWRtaW4="},"type":"Opaque"}"#,
        ),
        // kubectl create deployment web --image=nginx --replicas=2 --port=80
        (
            "deployment",
            "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412b8010a1f0a0377656212001a0022002a00320038\
         0042005a0a0a0361707012037765621286010802120c0a0a0a0361707012037765621a6c0a1c0a0012001a0022002a00\
         3200380042005a0a0a036170701203776562124c122e0a056e67696e7812056e67696e782a00320a0a00100018502200\
         2a0042006a007200800100880100900100a201001a00320042004a0052005800600068008201008a01009a0100c20100\
         22020a00280038001a0c0800100018002000280038001a002200",
            r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","labels":{"app":"web"}},"spec":{"replicas":2,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"nginx","image":"nginx","ports":[{"containerPort":80}]}]}}}}"#,
        ),
        // kubectl create job j1 --image=busybox -- echo hi
        (
            "job",
            "6b3873000a0f0a0862617463682f763112034a6f621284010a120a026a3112001a0022002a0032003800420012643262\
         0a100a0012001a0022002a00320038004200124e122b0a026a31120762757379626f781a046563686f1a0268692a0042\
         006a007200800100880100900100a201001a054e65766572320042004a0052005800600068008201008a01009a0100c2\
         01001a082000280030003a001a002200",
            r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"j1"},"spec":{"template":{"spec":{"containers":[{"name":"j1","image":"busybox","command":["echo","hi"]}],"restartPolicy":"Never"}}}}"#,
        ),
        // kubectl create cronjob cj --image=busybox --schedule="*/5 * * * *" -- date
        (
            "cronjob",
            "6b3873000a130a0862617463682f7631120743726f6e4a6f6212a4010a120a02636a12001a0022002a00320038004200\
         128b010a0b2a2f35202a202a202a202a1a002a7a0a120a02636a12001a0022002a00320038004200126432620a100a00\
         12001a0022002a00320038004200124e12270a02636a120762757379626f781a04646174652a0042006a007200800100\
         880100900100a201001a094f6e4661696c757265320042004a0052005800600068008201008a01009a0100c201001a00\
         1a002200",
            r#"{"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"cj"},"spec":{"schedule":"*/5 * * * *","jobTemplate":{"metadata":{"name":"cj"},"spec":{"template":{"spec":{"containers":[{"name":"cj","image":"busybox","command":["date"]}],"restartPolicy":"OnFailure"}}}}}}"#,
        ),
        // kubectl create job j2 --from=cronjob/cj (cronjob with emptyDir/configMap volumes, limits, probe, env)
        (
            "job_from",
            "6b3873000a0f0a0862617463682f763112034a6f621293030a80010a026a3212001a0022002a00320038004200622b0a\
         2163726f6e6a6f622e6b756265726e657465732e696f2f696e7374616e746961746512066d616e75616c6a3f0a074372\
         6f6e4a6f621a02636a222461616161616161612d323232322d333333332d343434342d3535353535353535353535352a\
         0862617463682f7631300112830232fe010a100a0012001a0022002a0032003800420012e9010a0f0a07736372617463\
         68120412020a000a140a03636667120d9a010a0a050a03636d3118a403129e010a0163120762757379626f781a046461\
         74652a003a050a014112003a130a014212001a0c220a0a040a0273311202707742220a0d0a0363707512060a04353030\
         6d0a110a066d656d6f727912070a053132384d694a150a077363726174636810001a042f746d70220032005a210a1512\
         130a012f120a080110001a04687474701a002200100018002005280030006a007200800100880100900100a201001a05\
         4e65766572320042004a0052005800600068008201008a01009a0100c2010038001a082000280030003a001a002200",
            r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"j2","annotations":{"cronjob.kubernetes.io/instantiate":"manual"},"ownerReferences":[{"kind":"CronJob","name":"cj","uid":"aaaaaaaa-2222-3333-4444-555555555555","apiVersion":"batch/v1","controller":true}]},"spec":{"template":{"spec":{"volumes":[{"name":"scratch","emptyDir":{}},{"name":"cfg","configMap":{"name":"cm1","defaultMode":420}}],"containers":[{"name":"c","image":"busybox","command":["date"],"env":[{"name":"A"},{"name":"B","valueFrom":{"secretKeyRef":{"name":"s1","key":"pw"}}}],"resources":{"limits":{"cpu":"500m","memory":"128Mi"}},"volumeMounts":[{"name":"scratch","mountPath":"/tmp"}],"readinessProbe":{"httpGet":{"path":"/","port":"http"},"periodSeconds":5}}],"restartPolicy":"Never"}},"backoffLimit":0}}"#,
        ),
        // kubectl create service clusterip s --tcp=80:8080
        (
            "service",
            "6b3873000a0d0a02763112075365727669636512630a1b0a017312001a0022002a003200380042005a080a0361707012\
         017312400a1b0a0738302d38303830120354435018502207080010903f1a00280012080a036170701201731a00220943\
         6c757374657249503a00420052005a00600068001a020a001a002200",
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"s","labels":{"app":"s"}},"spec":{"ports":[{"name":"80-8080","protocol":"TCP","port":80,"targetPort":8080}],"selector":{"app":"s"},"type":"ClusterIP"}}"#,
        ),
        // kubectl create service nodeport np --tcp=443:https --node-port=30080
        (
            "service_np",
            "6b3873000a0d0a027631120753657276696365126e0a1d0a026e7012001a0022002a003200380042005a090a03617070\
         12026e7012490a240a093434332d6874747073120354435018bb03220b080110001a0568747470732880eb0112090a03\
         61707012026e701a0022084e6f6465506f72743a00420052005a00600068001a020a001a002200",
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"np","labels":{"app":"np"}},"spec":{"ports":[{"name":"443-https","protocol":"TCP","port":443,"targetPort":"https","nodePort":30080}],"selector":{"app":"np"},"type":"NodePort"}}"#,
        ),
        // kubectl create serviceaccount sa1
        (
            "serviceaccount",
            "6b3873000a140a027631120e536572766963654163636f756e7412150a130a0373613112001a0022002a003200380042\
         001a002200",
            r#"{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"sa1"}}"#,
        ),
        // kubectl create role r1 --verb=get,list --resource=pods,deployments.apps --resource-name=x
        (
            "role",
            "6b3873000a240a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f76311204526f6c65124f0a120a02\
         723112001a0022002a0032003800420012160a036765740a046c69737412001a04706f647322017812210a036765740a\
         046c6973741204617070731a0b6465706c6f796d656e74732201781a002200",
            r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"r1"},"rules":[{"verbs":["get","list"],"apiGroups":[""],"resources":["pods"],"resourceNames":["x"]},{"verbs":["get","list"],"apiGroups":["apps"],"resources":["deployments"],"resourceNames":["x"]}]}"#,
        ),
        // kubectl create rolebinding rb1 --role=r1 --user=alice --serviceaccount=default:sa1 --group=devs
        (
            "rolebinding",
            "6b3873000a2b0a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f7631120b526f6c6542696e64696e\
         6712b6010a130a0372623112001a0022002a00320038004200122a0a04557365721219726261632e617574686f72697a\
         6174696f6e2e6b38732e696f1a05616c6963652200122a0a0547726f75701219726261632e617574686f72697a617469\
         6f6e2e6b38732e696f1a0464657673220012200a0e536572766963654163636f756e7412001a03736131220764656661\
         756c741a250a19726261632e617574686f72697a6174696f6e2e6b38732e696f1204526f6c651a0272311a002200",
            r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"rb1"},"subjects":[{"kind":"User","apiGroup":"rbac.authorization.k8s.io","name":"alice"},{"kind":"Group","apiGroup":"rbac.authorization.k8s.io","name":"devs"},{"kind":"ServiceAccount","name":"sa1","namespace":"default"}],"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"r1"}}"#,
        ),
        // kubectl create clusterrole cr2 --verb=get,watch --resource=secrets
        (
            "clusterrole2",
            "6b3873000a2b0a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f7631120b436c7573746572526f6c\
         65122e0a130a0363723212001a0022002a0032003800420012170a036765740a05776174636812001a07736563726574\
         731a002200",
            r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"cr2"},"rules":[{"verbs":["get","watch"],"apiGroups":[""],"resources":["secrets"]}]}"#,
        ),
        // kubectl create clusterrole cr3 --aggregation-rule=rbac.example.com/aggregate-to-monitoring=true
        (
            "clusterrole_agg",
            "6b3873000a2b0a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f7631120b436c7573746572526f6c\
         65124b0a130a0363723312001a0022002a003200380042001a340a320a300a28726261632e6578616d706c652e636f6d\
         2f6167677265676174652d746f2d6d6f6e69746f72696e671204747275651a002200",
            r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"cr3"},"aggregationRule":{"clusterRoleSelectors":[{"matchLabels":{"rbac.example.com/aggregate-to-monitoring":"true"}}]}}"#,
        ),
        // kubectl create clusterrolebinding crb1 --clusterrole=cr1 --user=bob
        (
            "clusterrolebinding",
            "6b3873000a320a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f76311212436c7573746572526f6c\
         6542696e64696e67126f0a140a046372623112001a0022002a0032003800420012280a04557365721219726261632e61\
         7574686f72697a6174696f6e2e6b38732e696f1a03626f6222001a2d0a19726261632e617574686f72697a6174696f6e\
         2e6b38732e696f120b436c7573746572526f6c651a036372311a002200",
            r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"crb1"},"subjects":[{"kind":"User","apiGroup":"rbac.authorization.k8s.io","name":"bob"}],"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cr1"}}"#,
        ),
        // kubectl create quota q1 --hard=cpu=1,memory=1Gi,pods=10 --scopes=BestEffort
        (
            "quota",
            "6b3873000a130a027631120d5265736f7572636551756f7461124f0a120a02713112001a0022002a0032003800420012\
         370a0a0a0363707512030a01310a0f0a066d656d6f727912050a033147690a0c0a04706f647312040a023130120a4265\
         73744566666f72741a001a002200",
            r#"{"apiVersion":"v1","kind":"ResourceQuota","metadata":{"name":"q1"},"spec":{"hard":{"cpu":"1","memory":"1Gi","pods":"10"},"scopes":["BestEffort"]}}"#,
        ),
        // kubectl create pdb p1 --selector=app=web --min-available=50%
        (
            "pdb",
            "6b3873000a200a09706f6c6963792f76311213506f6444697372757074696f6e427564676574123b0a120a0270311200\
         1a0022002a0032003800420012190a09080110001a03353025120c0a0a0a0361707012037765621a0a08001800200028\
         0030001a002200",
            r#"{"apiVersion":"policy/v1","kind":"PodDisruptionBudget","metadata":{"name":"p1"},"spec":{"minAvailable":"50%","selector":{"matchLabels":{"app":"web"}}},"status":{"disruptionsAllowed":0,"currentHealthy":0,"desiredHealthy":0,"expectedPods":0}}"#,
        ),
        // kubectl create pdb p2 --selector=app=web --max-unavailable=1
        (
            "pdb_int",
            "6b3873000a200a09706f6c6963792f76311213506f6444697372757074696f6e42756467657412380a120a0270321200\
         1a0022002a003200380042001216120c0a0a0a0361707012037765621a06080010011a001a0a08001800200028003000\
         1a002200",
            r#"{"apiVersion":"policy/v1","kind":"PodDisruptionBudget","metadata":{"name":"p2"},"spec":{"selector":{"matchLabels":{"app":"web"}},"maxUnavailable":1},"status":{"disruptionsAllowed":0,"currentHealthy":0,"desiredHealthy":0,"expectedPods":0}}"#,
        ),
        // kubectl create priorityclass pc1 --value=1000 --description=high --preemption-policy=Never
        (
            "priorityclass",
            "6b3873000a250a147363686564756c696e672e6b38732e696f2f7631120d5072696f72697479436c61737312270a130a\
         0370633112001a0022002a0032003800420010e80718002204686967682a054e657665721a002200",
            r#"{"apiVersion":"scheduling.k8s.io/v1","kind":"PriorityClass","metadata":{"name":"pc1"},"value":1000,"description":"high","preemptionPolicy":"Never"}"#,
        ),
        // kubectl create priorityclass pc0 --value=0 --global-default
        (
            "priorityclass_zero",
            "6b3873000a250a147363686564756c696e672e6b38732e696f2f7631120d5072696f72697479436c61737312310a130a\
         0370633012001a0022002a003200380042001000180122002a14507265656d70744c6f7765725072696f726974791a00\
         2200",
            r#"{"apiVersion":"scheduling.k8s.io/v1","kind":"PriorityClass","metadata":{"name":"pc0"},"value":0,"globalDefault":true,"preemptionPolicy":"PreemptLowerPriority"}"#,
        ),
        // kubectl create ingress ing1 --class=nginx --rule="foo.com/bar*=svc1:8080,tls=my-cert" --annotation=a=b
        (
            "ingress",
            "6b3873000a1f0a146e6574776f726b696e672e6b38732e696f2f76311207496e6772657373126f0a1c0a04696e673112\
         001a0022002a0032003800420062060a0161120162124b12120a07666f6f2e636f6d12076d792d636572741a2e0a0766\
         6f6f2e636f6d12230a210a1f0a042f626172120f220d0a047376633112050a0010903f1a0650726566697822056e6769\
         6e781a020a001a002200",
            r#"{"apiVersion":"networking.k8s.io/v1","kind":"Ingress","metadata":{"name":"ing1","annotations":{"a":"b"}},"spec":{"tls":[{"hosts":["foo.com"],"secretName":"my-cert"}],"rules":[{"host":"foo.com","http":{"paths":[{"path":"/bar","backend":{"service":{"name":"svc1","port":{"number":8080}}},"pathType":"Prefix"}]}}],"ingressClassName":"nginx"}}"#,
        ),
        // kubectl 1.32 autoscale deployment web --min=2 --max=5 --cpu-percent=80
        (
            "autoscale_v1",
            "6b3873000a290a0e6175746f7363616c696e672f76311217486f72697a6f6e74616c506f644175746f7363616c657212\
         3f0a130a0377656212001a0022002a0032003800420012220a1a0a0a4465706c6f796d656e7412037765621a07617070\
         732f76311002180520501a04180020001a002200",
            r#"{"apiVersion":"autoscaling/v1","kind":"HorizontalPodAutoscaler","metadata":{"name":"web"},"spec":{"scaleTargetRef":{"kind":"Deployment","name":"web","apiVersion":"apps/v1"},"minReplicas":2,"maxReplicas":5,"targetCPUUtilizationPercentage":80},"status":{"currentReplicas":0,"desiredReplicas":0}}"#,
        ),
        // kubectl 1.33 autoscale deployment web --min=2 --max=5 --cpu-percent=80
        (
            "autoscale",
            "6b3873000a290a0e6175746f7363616c696e672f76321217486f72697a6f6e74616c506f644175746f7363616c657212\
         610a130a0377656212001a0022002a0032003800420012440a1a0a0a4465706c6f796d656e7412037765621a07617070\
         732f76311002180522220a085265736f7572636522160a03637075120f0a0b5574696c697a6174696f6e20501a041800\
         20001a002200",
            r#"{"apiVersion":"autoscaling/v2","kind":"HorizontalPodAutoscaler","metadata":{"name":"web"},"spec":{"scaleTargetRef":{"kind":"Deployment","name":"web","apiVersion":"apps/v1"},"minReplicas":2,"maxReplicas":5,"metrics":[{"type":"Resource","resource":{"name":"cpu","target":{"type":"Utilization","averageUtilization":80}}}]},"status":{"desiredReplicas":0}}"#,
        ),
        // kubectl auth can-i create deployments.apps --subresource=scale
        (
            "cani",
            "6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f7631121753656c665375626a65637441636365\
         7373526576696577124f0a100a0012001a0022002a0032003800420012310a2f0a0764656661756c7412066372656174\
         651a046170707322002a0b6465706c6f796d656e747332057363616c653a001a08080012001a0020001a002200",
            r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":{"resourceAttributes":{"namespace":"default","verb":"create","group":"apps","resource":"deployments","subresource":"scale"}},"status":{"allowed":false}}"#,
        ),
        // kubectl auth can-i get /logs
        (
            "cani_nonres",
            "6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f7631121753656c665375626a65637441636365\
         7373526576696577122c0a100a0012001a0022002a00320038004200120e120c0a052f6c6f677312036765741a080800\
         12001a0020001a002200",
            r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":{"nonResourceAttributes":{"path":"/logs","verb":"get"}},"status":{"allowed":false}}"#,
        ),
        // kubectl auth can-i --list
        (
            "canilist",
            "6b3873000a310a17617574686f72697a6174696f6e2e6b38732e696f2f7631121653656c665375626a65637452756c65\
         7352657669657712230a100a0012001a0022002a0032003800420012090a0764656661756c741a04180022001a002200",
            r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectRulesReview","spec":{"namespace":"default"},"status":{"incomplete":false}}"#,
        ),
        // kubectl auth whoami
        (
            "whoami",
            "6b3873000a2d0a1861757468656e7469636174696f6e2e6b38732e696f2f7631121153656c665375626a656374526576\
         696577121a0a100a0012001a0022002a0032003800420012060a040a0012001a002200",
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
        ),
        // kubectl create token sa1 --duration=1h --audience=api
        (
            "token",
            "6b3873000a280a1861757468656e7469636174696f6e2e6b38732e696f2f7631120c546f6b656e526571756573741222\
         0a100a0012001a0022002a0032003800420012080a0361706920901c1a040a0012001a002200",
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"audiences":["api"],"expirationSeconds":3600},"status":{"token":""}}"#,
        ),
    ];

    #[test]
    fn kubectl_captured_requests() {
        for (name, body, expected) in KUBECTL_VECTORS {
            let (api_version, kind, object) =
                decode_request(&hex(body)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let expected: Value = serde_json::from_str(expected).unwrap();
            assert_eq!(object, expected, "{name}");
            assert_eq!(object["apiVersion"], api_version.as_str(), "{name}");
            assert_eq!(object["kind"], kind.as_str(), "{name}");
        }
    }

    #[test]
    fn maps_api_version_and_kind_to_definitions() {
        let table = table().unwrap();
        let cases = [
            ("v1", "Namespace", "io.k8s.api.core.v1.Namespace"),
            ("v1", "ConfigMap", "io.k8s.api.core.v1.ConfigMap"),
            ("v1", "Secret", "io.k8s.api.core.v1.Secret"),
            ("v1", "Service", "io.k8s.api.core.v1.Service"),
            ("v1", "ServiceAccount", "io.k8s.api.core.v1.ServiceAccount"),
            ("v1", "ResourceQuota", "io.k8s.api.core.v1.ResourceQuota"),
            ("apps/v1", "Deployment", "io.k8s.api.apps.v1.Deployment"),
            ("batch/v1", "Job", "io.k8s.api.batch.v1.Job"),
            ("batch/v1", "CronJob", "io.k8s.api.batch.v1.CronJob"),
            (
                "rbac.authorization.k8s.io/v1",
                "Role",
                "io.k8s.api.rbac.v1.Role",
            ),
            (
                "rbac.authorization.k8s.io/v1",
                "RoleBinding",
                "io.k8s.api.rbac.v1.RoleBinding",
            ),
            (
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                "io.k8s.api.rbac.v1.ClusterRole",
            ),
            (
                "rbac.authorization.k8s.io/v1",
                "ClusterRoleBinding",
                "io.k8s.api.rbac.v1.ClusterRoleBinding",
            ),
            (
                "policy/v1",
                "PodDisruptionBudget",
                "io.k8s.api.policy.v1.PodDisruptionBudget",
            ),
            ("policy/v1", "Eviction", "io.k8s.api.policy.v1.Eviction"),
            (
                "scheduling.k8s.io/v1",
                "PriorityClass",
                "io.k8s.api.scheduling.v1.PriorityClass",
            ),
            (
                "networking.k8s.io/v1",
                "Ingress",
                "io.k8s.api.networking.v1.Ingress",
            ),
            (
                "autoscaling/v1",
                "HorizontalPodAutoscaler",
                "io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler",
            ),
            (
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler",
            ),
            (
                "authorization.k8s.io/v1",
                "SelfSubjectAccessReview",
                "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
            ),
            (
                "authorization.k8s.io/v1",
                "SelfSubjectRulesReview",
                "io.k8s.api.authorization.v1.SelfSubjectRulesReview",
            ),
            (
                "authentication.k8s.io/v1",
                "SelfSubjectReview",
                "io.k8s.api.authentication.v1.SelfSubjectReview",
            ),
            (
                "authentication.k8s.io/v1",
                "TokenRequest",
                "io.k8s.api.authentication.v1.TokenRequest",
            ),
            (
                "flowcontrol.apiserver.k8s.io/v1",
                "FlowSchema",
                "io.k8s.api.flowcontrol.v1.FlowSchema",
            ),
            (
                "internal.apiserver.k8s.io/v1alpha1",
                "StorageVersion",
                "io.k8s.api.apiserverinternal.v1alpha1.StorageVersion",
            ),
            (
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
            ),
            (
                "apiregistration.k8s.io/v1",
                "APIService",
                "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIService",
            ),
            // Options types travel with the resource's group version.
            (
                "apps/v1",
                "DeleteOptions",
                "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
            ),
        ];
        for (api_version, kind, expected) in cases {
            assert_eq!(
                table.definition_for(api_version, kind),
                Some(expected),
                "{api_version} {kind}"
            );
        }
        for (api_version, kind) in [
            ("apps.example.com/v1", "Deployment"),
            ("example.com/v1", "Widget"),
            ("v1", "Deployment"),
            ("apps/v9", "Deployment"),
        ] {
            assert_eq!(
                table.definition_for(api_version, kind),
                None,
                "{api_version} {kind}"
            );
        }
    }

    #[test]
    fn table_is_consistent() {
        let table = table().unwrap();
        assert!(table.messages.len() > 1000);
        for (name, msg) in &table.messages {
            for (tag, f) in &msg.fields {
                let needs_type = f.kind == Kind::Message || f.map_value == Some(Kind::Message);
                assert_eq!(f.message.is_some(), needs_type, "{name} {tag}");
                if let Some(ty) = &f.message {
                    assert!(table.messages.contains_key(ty), "{name} {tag}: {ty}");
                }
                assert_eq!(f.kind == Kind::Map, f.map_value.is_some(), "{name} {tag}");
                assert!(f.name.is_some() || f.kind == Kind::Message, "{name} {tag}");
            }
        }
        let pod_ip = &table.messages["io.k8s.api.core.v1.PodStatus"].fields;
        assert!(pod_ip.values().any(|f| f.name.as_deref() == Some("podIP")));
        let special = |n: &str| table.messages[n].special;
        assert_eq!(
            special("io.k8s.api.authentication.v1.ExtraValue"),
            Special::StringList
        );
        assert_eq!(
            special("io.k8s.api.core.v1.DownwardAPIProjection"),
            Special::None
        );
    }

    #[test]
    fn times_durations_quantities_and_maps() {
        // metrics.k8s.io/v1beta1 NodeMetrics {metadata, timestamp: Time,
        // window: Duration, usage: map<string, Quantity>}
        let time = [vi(1, 1_704_067_200), vi(2, 999_999_999)].concat();
        let usage = |k: &str, q: &str| ld(4, &[st(1, k), ld(2, &st(1, q))].concat());
        let raw = [
            ld(1, &st(1, "node-1")),
            ld(2, &time),
            ld(3, &vi(1, 3_600_000_000_000)),
            usage("cpu", "250m"),
            usage("memory", "1Gi"),
            ld(4, &st(1, "empty")), // value missing: zero Quantity
        ]
        .concat();
        assert_eq!(
            decode(&envelope("metrics.k8s.io/v1beta1", "NodeMetrics", &raw)),
            json!({
                "apiVersion": "metrics.k8s.io/v1beta1", "kind": "NodeMetrics",
                "metadata": {"name": "node-1"},
                "timestamp": "2024-01-01T00:00:00Z",
                "window": "1h0m0s",
                "usage": {"cpu": "250m", "memory": "1Gi", "empty": ""},
            })
        );
        // coordination.k8s.io/v1 Lease: MicroTime, pointer int32 zero kept.
        let spec = [
            st(1, "me"),
            vi(2, 0),
            ld(3, &[vi(1, 1_704_067_200), vi(2, 123_456_789)].concat()),
            ld(4, &[]), // zero MicroTime -> null -> dropped
        ]
        .concat();
        assert_eq!(
            decode(&envelope("coordination.k8s.io/v1", "Lease", &ld(2, &spec))),
            json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "spec": {
                    "holderIdentity": "me",
                    "leaseDurationSeconds": 0,
                    "acquireTime": "2024-01-01T00:00:00.123456Z",
                },
            })
        );
    }

    #[test]
    fn go_duration_strings() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (100_000_000, "100ms"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (-90_000_000_000, "-1m30s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for (nanos, expected) in cases {
            assert_eq!(go_duration(nanos), expected);
        }
    }

    #[test]
    fn presence_follows_go_struct_tags() {
        let meta = [st(1, "x"), st(2, ""), vi(7, 0), vi(10, 0), ld(8, &[])].concat();
        let port = [st(1, ""), vi(2, 0), vi(3, 0), st(4, "TCP")].concat();
        let container = [st(1, "c"), ld(6, &port), vi(16, 0), vi(18, 0)].concat();
        let pod_spec = ld(2, &container);
        let template = ld(2, &pod_spec);
        let spec = [vi(1, 0), ld(3, &template), ld(4, &[]), vi(7, 0)].concat();
        let raw = [ld(1, &meta), ld(2, &spec), ld(3, &[])].concat();
        assert_eq!(
            decode(&envelope("apps/v1", "Deployment", &raw)),
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                // generation (omitempty) dropped; deletionGracePeriodSeconds (*int64) kept
                "metadata": {"name": "x", "deletionGracePeriodSeconds": 0},
                "spec": {
                    "replicas": 0, // *int32
                    // hostPort (omitempty) dropped, containerPort (no omitempty) kept;
                    // stdin/tty (omitempty bools) dropped
                    "template": {"spec": {"containers": [
                        {"name": "c", "ports": [{"containerPort": 0, "protocol": "TCP"}]}
                    ]}},
                },
            })
        );
        // *bool false kept; pointer structs kept even when empty, inline
        // embedded structs merged into their parent.
        let sa = [ld(1, &st(1, "sa")), vi(4, 0)].concat();
        assert_eq!(
            decode(&envelope("v1", "ServiceAccount", &sa))["automountServiceAccountToken"],
            json!(false)
        );
        let volume = [st(1, "scratch"), ld(2, &ld(2, &[]))].concat();
        let pod = ld(2, &ld(1, &volume));
        assert_eq!(
            decode(&envelope("v1", "Pod", &pod))["spec"],
            json!({"volumes": [{"name": "scratch", "emptyDir": {}}]})
        );
    }

    #[test]
    fn packed_negative_and_unknown_fields() {
        // PodPortForwardOptions.ports: repeated int32, packed and unpacked.
        let packed = [varint(80), varint(-1i64 as u64)].concat();
        let raw = [
            ld(1, &packed),
            vi(1, 443),
            vi(99, 7),
            fixed64(98, 1),
            st(97, "x"),
            [varint(96 << 3 | 5), vec![0; 4]].concat(),
        ]
        .concat();
        assert_eq!(
            decode(&envelope("v1", "PodPortForwardOptions", &raw))["ports"],
            json!([80, -1, 443])
        );
    }

    #[test]
    fn raw_json_string_lists_and_schemas() {
        // authorization/v1 SubjectAccessReview: extra is map<string, ExtraValue>.
        let extra = ld(
            5,
            &[st(1, "scopes"), ld(2, &[st(1, "a"), st(1, "b")].concat())].concat(),
        );
        let raw = ld(2, &[st(3, "alice"), extra].concat());
        assert_eq!(
            decode(&envelope(
                "authorization.k8s.io/v1",
                "SubjectAccessReview",
                &raw
            ))["spec"],
            json!({"user": "alice", "extra": {"scopes": ["a", "b"]}})
        );

        // managedFields: FieldsV1 raw JSON, Time.
        let entry = [
            st(1, "kubectl"),
            ld(4, &vi(1, 86_400)),
            st(6, "FieldsV1"),
            ld(7, &st(1, r#"{"f:data":{}}"#)),
        ]
        .concat();
        let raw = ld(1, &[st(1, "cm"), ld(17, &entry)].concat());
        assert_eq!(
            decode(&envelope("v1", "ConfigMap", &raw))["metadata"]["managedFields"],
            json!([{"manager": "kubectl", "time": "1970-01-02T00:00:00Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {}}}])
        );

        // v1 List of RawExtensions: JSON and a nested protobuf object.
        let nested = envelope("v1", "Namespace", &ld(1, &st(1, "inner")));
        let raw = [
            ld(2, &st(1, r#"{"kind":"X"}"#)),
            ld(2, &st(1, "")),
            ld(2, &ld(1, &nested)),
        ]
        .concat();
        assert_eq!(
            decode(&envelope("v1", "List", &raw))["items"],
            json!([{"kind": "X"}, null,
                   {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "inner"}}])
        );

        // apiextensions JSONSchemaProps: $ref spelling, doubles, JSON, unions.
        let props = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";
        let child = st(5, "string");
        let raw = [
            st(3, "#/x"),
            st(5, "object"),
            fixed64(9, 10.0f64.to_bits()),
            fixed64(19, 0.5f64.to_bits()),
            ld(8, &st(1, "[1,2]")),
            ld(24, &ld(2, &child)), // items: OrArray with a list
            ld(30, &vi(1, 1)),      // additionalProperties: true
            ld(29, &[st(1, "p"), ld(2, &child)].concat()),
            ld(32, &[st(1, "d"), ld(2, &st(2, "q"))].concat()), // dependencies: string array
            vi(38, 1),
        ]
        .concat();
        assert_eq!(
            decode_as(&raw, props).unwrap(),
            json!({
                "$ref": "#/x", "type": "object", "maximum": 10, "multipleOf": 0.5,
                "default": [1, 2], "items": [{"type": "string"}],
                "additionalProperties": true, "properties": {"p": {"type": "string"}},
                "dependencies": {"d": ["q"]}, "x-kubernetes-preserve-unknown-fields": true,
            })
        );
        let not_allowed = decode_as(&ld(30, &[]), props).unwrap();
        assert_eq!(not_allowed, json!({"additionalProperties": false}));
    }

    #[test]
    fn rejects_malformed_input() {
        let ns = ld(1, &st(1, "x"));
        let bad: Vec<(&str, Vec<u8>)> = vec![
            ("no magic", b"{\"kind\":\"Namespace\"}".to_vec()),
            ("empty", Vec::new()),
            ("no type meta", MAGIC.to_vec()),
            ("truncated", envelope("v1", "Namespace", &ns)[..20].to_vec()),
            ("unknown kind", envelope("v1", "Gizmo", &ns)),
            ("custom group", envelope("example.com/v1", "Namespace", &ns)),
            ("wrong wire type", envelope("v1", "Namespace", &vi(1, 5))),
            (
                "group wire type",
                envelope("v1", "Namespace", &varint(1 << 3 | 3)),
            ),
            ("field number 0", envelope("v1", "Namespace", &vi(0, 1))),
            (
                "long varint",
                envelope(
                    "v1",
                    "Namespace",
                    &[
                        0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                    ],
                ),
            ),
            (
                "length past end",
                envelope("v1", "Namespace", &[0x0a, 0x05, 0x01]),
            ),
            (
                "bad embedded json",
                envelope("v1", "List", &ld(2, &st(1, "{"))),
            ),
        ];
        for (what, body) in &bad {
            assert!(decode_request(body).is_err(), "{what}");
        }
        let gzip = [
            MAGIC.to_vec(),
            ld(1, &[st(1, "v1"), st(2, "Namespace")].concat()),
            st(3, "gzip"),
        ]
        .concat();
        assert!(
            decode_request(&gzip)
                .unwrap_err()
                .contains("contentEncoding")
        );
        let props = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";
        assert!(decode_as(&fixed64(9, f64::NAN.to_bits()), props).is_err());
    }

    #[test]
    fn nesting_depth_is_bounded() {
        let mut body = envelope("v1", "Namespace", &[]);
        for _ in 0..200 {
            body = envelope("v1", "List", &ld(2, &ld(1, &body)));
        }
        assert!(decode_request(&body).unwrap_err().contains("deep"));
        let mut schema = Vec::new();
        for _ in 0..200 {
            schema = ld(28, &schema); // not: JSONSchemaProps
        }
        let props = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";
        assert!(decode_as(&schema, props).is_err());
    }

    /// Random, truncated and mutated bodies must produce Ok or Err, never a
    /// panic or a hang.
    #[test]
    fn fuzz_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let seeds: Vec<Vec<u8>> = KUBECTL_VECTORS.iter().map(|(_, h, _)| hex(h)).collect();
        let mut decoded_ok = 0;
        for i in 0..6000 {
            let seed = &seeds[i % seeds.len()];
            let mut body = match i % 4 {
                0 => seed[..(next() as usize % (seed.len() + 1))].to_vec(),
                1 => {
                    let mut b = seed.clone();
                    for _ in 0..1 + next() % 4 {
                        let at = next() as usize % b.len();
                        b[at] = next() as u8;
                    }
                    b
                }
                2 => {
                    let mut b = seed.clone();
                    let at = 4 + next() as usize % (b.len() - 4);
                    let junk: Vec<u8> = (0..next() % 8).map(|_| next() as u8).collect();
                    b.splice(at..at, junk);
                    b
                }
                _ => {
                    let len = next() as usize % 64;
                    let mut b = MAGIC.to_vec();
                    b.extend((0..len).map(|_| next() as u8));
                    b
                }
            };
            if i % 7 == 0 {
                body.truncate(body.len().saturating_sub(1));
            }
            if decode_request(&body).is_ok() {
                decoded_ok += 1;
            }
        }
        assert!(decoded_ok > 0);
    }
}
