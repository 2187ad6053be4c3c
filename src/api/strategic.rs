//! Strategic merge patch, as kube-apiserver applies it.
//!
//! This is a port of the *apply* half of
//! `k8s.io/apimachinery/pkg/util/strategicpatch` (v0.33): `mergeMap`,
//! `mergeSlice`, the `$patch` / `$retainKeys` / `$setElementOrder` /
//! `$deleteFromPrimitiveList` directives, and the element-ordering rules.
//! The Go code looks patch metadata up in Go struct tags; here the same
//! `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` values are
//! read from the OpenAPI definitions (JSON-schema form, `$ref: "#/$defs/…"`).
//!
//! Error messages mirror upstream's, including Go's `%v` rendering of maps.
//! Upstream behaviours kept on purpose: `$patch: merge` is rejected (on maps
//! "unknown patch type", in lists "merging lists cannot yet be specified");
//! without `$setElementOrder`, new merge-list items sort *before* the items
//! only the server has; ordering even reproduces Go's in-place slice
//! mutation and `sort.SliceStable` on its inconsistent comparator. The code
//! was checked differentially against the Go implementation.
//!
//! Deliberate differences from the Go code:
//! * Go walks patch keys in random map order; we use patch order. This only
//!   matters when `$deleteFromPrimitiveList/x` and `x` touch the same items,
//!   or for which of several errors is reported.
//! * Values that the Go code copies verbatim from the patch into the result
//!   (appended list elements, replaced maps/lists) may still contain directive
//!   keys and `null`s there; kube-apiserver then decodes the result into a Go
//!   struct, which drops both. We have no typed decode step, so those values
//!   are cleaned here instead.
//! * A key missing from a known schema (or any key below a schema-less
//!   definition such as `RawExtension`) is merged without patch metadata, where
//!   Go fails with "unable to find api field"; the original object we patch is
//!   not guaranteed to be pruned the way a typed Go object is.
//! * Where Go would panic (comparing maps, a list starting with `null`), an
//!   error is returned.

use serde_json::{Map, Value};

type JMap = Map<String, Value>;

const DIRECTIVE_MARKER: &str = "$patch";
const DELETE_DIRECTIVE: &str = "delete";
const REPLACE_DIRECTIVE: &str = "replace";
const MERGE_DIRECTIVE: &str = "merge";
const RETAIN_KEYS_STRATEGY: &str = "retainKeys";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder";

const ERR_NO_LIST_OF_LISTS: &str = "lists of lists are not supported";
const ERR_BAD_PATCH_FORMAT_FOR_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const ERR_BAD_PATCH_FORMAT_FOR_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const ERR_BAD_PATCH_FORMAT_FOR_SET_ELEMENT_ORDER_LIST: &str =
    "invalid patch format of setElementOrder list";

/// Maximum `$ref` chain followed when resolving a schema (guards against cycles).
const MAX_REF_DEPTH: usize = 32;

/// Applies the strategic merge patch `patch` to `original`.
///
/// `defs` is the OpenAPI definitions map (`$defs`), `def_name` the definition
/// of the root object (e.g. `io.k8s.api.apps.v1.Deployment`). With `None` (or
/// a name not in `defs`) no patch metadata is known: maps merge, `null`
/// deletes, lists are replaced, directives are still honoured.
pub fn apply(
    original: &Value,
    patch: &Value,
    defs: &Map<String, Value>,
    def_name: Option<&str>,
) -> Result<Value, String> {
    let original = match original {
        Value::Object(m) => m.clone(),
        Value::Null => JMap::new(),
        other => return Err(err_bad_arg_type(GO_MAP_TYPE, other)),
    };
    let patch = match patch {
        Value::Object(m) => m.clone(),
        // Go unmarshals `null` into a nil map: nothing to apply.
        Value::Null => return Ok(Value::Object(original)),
        other => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                json_type_word(other)
            ));
        }
    };
    let schema = Schema {
        defs,
        node: def_name
            .and_then(|n| defs.get(n))
            .and_then(|v| resolve(defs, v)),
    };
    merge_map(original, patch, schema).map(Value::Object)
}

// ---------------------------------------------------------------------------
// Schema lookup (the equivalent of upstream's LookupPatchMeta).

#[derive(Clone, Copy)]
struct Schema<'a> {
    defs: &'a JMap,
    /// Resolved schema node of the current value; `None` = unknown.
    node: Option<&'a Value>,
}

#[derive(Default)]
struct PatchMeta {
    strategies: Vec<String>,
    merge_key: String,
}

impl PatchMeta {
    fn from_property(p: &Value) -> PatchMeta {
        let strategies = p
            .get("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        let merge_key = p
            .get("x-kubernetes-patch-merge-key")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        PatchMeta {
            strategies,
            merge_key,
        }
    }
}

/// Follows `$ref` (and a single-element `allOf`) to the schema that describes
/// the value's shape.
fn resolve<'a>(defs: &'a JMap, v: &'a Value) -> Option<&'a Value> {
    let mut cur = v;
    for _ in 0..MAX_REF_DEPTH {
        if let Some(r) = cur.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or(r);
            cur = defs.get(name)?;
            continue;
        }
        if let Some(first) = cur
            .get("allOf")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 1)
            .and_then(|a| a.first())
        {
            cur = first;
            continue;
        }
        return Some(cur);
    }
    None
}

impl<'a> Schema<'a> {
    fn unknown(&self) -> Schema<'a> {
        Schema {
            defs: self.defs,
            node: None,
        }
    }

    fn with(&self, node: Option<&'a Value>) -> Schema<'a> {
        Schema {
            defs: self.defs,
            node: node.and_then(|n| resolve(self.defs, n)),
        }
    }

    /// Schema and patch metadata of field `key`; `slice` asks for the schema
    /// of the list's elements instead of the field itself.
    fn lookup(&self, key: &str, slice: bool) -> (Schema<'a>, PatchMeta) {
        let Some(node) = self.node else {
            return (self.unknown(), PatchMeta::default());
        };
        let elem = |s: Schema<'a>| -> Schema<'a> {
            if slice {
                s.with(s.node.and_then(|n| n.get("items")))
            } else {
                s
            }
        };
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            return match props.get(key) {
                Some(p) => (elem(self.with(Some(p))), PatchMeta::from_property(p)),
                None => (self.unknown(), PatchMeta::default()),
            };
        }
        if let Some(ap) = node.get("additionalProperties").filter(|v| v.is_object()) {
            // Map values carry no patch tags of their own.
            return (elem(self.with(Some(ap))), PatchMeta::default());
        }
        (self.unknown(), PatchMeta::default())
    }

    /// Upstream's `PatchMetaFromStruct.Name()`: the Go kind of the type.
    fn name(&self) -> &'static str {
        match self.node {
            Some(n) if n.get("properties").is_none() && n.get("additionalProperties").is_some() => {
                "map"
            }
            _ => "struct",
        }
    }
}

// ---------------------------------------------------------------------------
// Go value model helpers.

const GO_MAP_TYPE: &str = "map[string]interface {}";
const GO_SLICE_TYPE: &str = "[]interface {}";

/// The Go dynamic type a JSON value decodes to (ints are preserved as int64).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Nil,
    Bool,
    Int,
    Float,
    Str,
    Map,
    Slice,
}

fn kind_of(v: &Value) -> Kind {
    match v {
        Value::Null => Kind::Nil,
        Value::Bool(_) => Kind::Bool,
        Value::Number(n) if n.is_i64() => Kind::Int,
        Value::Number(_) => Kind::Float,
        Value::String(_) => Kind::Str,
        Value::Array(_) => Kind::Slice,
        Value::Object(_) => Kind::Map,
    }
}

fn go_type_name(v: &Value) -> &'static str {
    match kind_of(v) {
        Kind::Nil => "%!s(<nil>)",
        Kind::Bool => "bool",
        Kind::Int => "int64",
        Kind::Float => "float64",
        Kind::Str => "string",
        Kind::Map => GO_MAP_TYPE,
        Kind::Slice => GO_SLICE_TYPE,
    }
}

fn json_type_word(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Object(_) => "object",
        Value::Null => "null",
    }
}

/// Go's `%v` formatting of a decoded JSON value.
fn go_fmt(v: &Value) -> String {
    let mut s = String::new();
    go_fmt_into(v, &mut s);
    s
}

fn go_fmt_into(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => out.push_str(&i.to_string()),
            (None, Some(f)) => out.push_str(&go_float(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => out.push_str(s),
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                go_fmt_into(e, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            // fmt prints map keys sorted.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push_str("map[");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                go_fmt_into(&m[k], out);
            }
            out.push(']');
        }
    }
}

/// Go's `%v` for float64: `strconv.FormatFloat(f, 'g', -1, 64)`.
fn go_float(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // Rust's `{:e}` yields the shortest round-trip digits, e.g. "-1.5e-7".
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let neg = mant.starts_with('-');
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return f.to_string();
    }
    let sign = if neg { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.abs());
    }
    let nd = digits.len() as i32;
    let dp = exp + 1; // position of the decimal point within the digits
    if dp <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-dp) as usize))
    } else if dp >= nd {
        format!("{sign}{digits}{}", "0".repeat((dp - nd) as usize))
    } else {
        let (a, b) = digits.split_at(dp as usize);
        format!("{sign}{a}.{b}")
    }
}

/// Go's `%s` of an arbitrary value (as used by `ErrBadPatchType`): strings
/// print as is, other scalars as `%!s(type=value)`, containers recursively.
fn go_fmt_s(v: &Value) -> String {
    match v {
        Value::Null => "%!s(<nil>)".to_string(),
        other => {
            let mut s = String::new();
            go_fmt_s_into(other, &mut s);
            s
        }
    }
}

fn go_fmt_s_into(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::String(s) => out.push_str(s),
        Value::Bool(_) | Value::Number(_) => {
            out.push_str(&format!("%!s({}={})", go_type_name(v), go_fmt(v)));
        }
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                go_fmt_s_into(e, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push_str("map[");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                go_fmt_s_into(&m[k], out);
            }
            out.push(']');
        }
    }
}

fn err_bad_arg_type(expected: &str, actual: &Value) -> String {
    format!(
        "expected a {expected}, but received a {}",
        go_type_name(actual)
    )
}

fn err_no_merge_key(m: &JMap, k: &str) -> String {
    format!(
        "map: {} does not contain declared merge key: {k}",
        go_fmt(&Value::Object(m.clone()))
    )
}

fn err_bad_patch_type(t: &Value, m: &JMap) -> String {
    format!(
        "unknown patch type: {} in map: {}",
        go_fmt_s(t),
        go_fmt(&Value::Object(m.clone()))
    )
}

fn is_directive_key(k: &str) -> bool {
    k == DIRECTIVE_MARKER
        || k == RETAIN_KEYS_DIRECTIVE
        || k.starts_with(SET_ELEMENT_ORDER_PREFIX)
        || k.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
}

/// Stands in for the typed decode that follows patching upstream: drops
/// directive keys and `null` members from a value taken from the patch.
fn clean(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, v)| !v.is_null() && !is_directive_key(k))
                .map(|(k, v)| (k, clean(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(clean).collect()),
        other => other,
    }
}

/// Upstream `removeDirectives`: drops every map carrying `$patch`.
fn remove_directives(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.contains_key(DIRECTIVE_MARKER) {
                return None;
            }
            Some(Value::Object(
                m.into_iter()
                    .filter_map(|(k, v)| remove_directives(v).map(|v| (k, v)))
                    .collect(),
            ))
        }
        Value::Array(a) => Some(Value::Array(
            a.into_iter().filter_map(remove_directives).collect(),
        )),
        other => Some(other),
    }
}

/// Upstream `discardNullValuesFromPatch`.
fn discard_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(discard_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(discard_nulls),
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Map merging.

fn merge_map(mut original: JMap, mut patch: JMap, schema: Schema) -> Result<JMap, String> {
    if let Some(directive) = patch.get(DIRECTIVE_MARKER).cloned() {
        return handle_directive_in_merge_map(&directive, patch);
    }
    apply_retain_keys_directive(&mut original, &mut patch)?;
    merge_patch_into_original(&mut original, &mut patch, schema)?;

    for (key, patch_v) in patch {
        let (is_delete_list, key) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
            (true, extract_key(&key, DELETE_FROM_PRIMITIVE_LIST_PREFIX)?)
        } else {
            (false, key)
        };

        // null deletes the key; unmatched nulls are ignored.
        if patch_v.is_null() {
            original.shift_remove(&key);
            continue;
        }

        let Some(orig_v) = original.get_mut(&key) else {
            if !is_delete_list {
                let mut v = patch_v;
                discard_nulls(&mut v);
                if let Some(v) = remove_directives(v) {
                    original.insert(key, clean(v));
                }
            }
            continue;
        };

        let same_type = kind_of(orig_v) == kind_of(&patch_v);
        match (orig_v, patch_v) {
            (Value::Object(o), Value::Object(p)) => {
                let (sub, meta) = schema.lookup(&key, false);
                let (_, strategy) = extract_retain_keys_patch_strategy(&meta.strategies)?;
                let o = std::mem::take(o);
                let merged = merge_map_handler(o, p, sub, &strategy)?;
                original.insert(key, Value::Object(merged));
            }
            (Value::Array(o), Value::Array(p)) => {
                let (sub, meta) = schema.lookup(&key, true);
                let (_, strategy) = extract_retain_keys_patch_strategy(&meta.strategies)?;
                let o = std::mem::take(o);
                let merged =
                    merge_slice_handler(o, p, sub, &strategy, &meta.merge_key, is_delete_list)?;
                original.insert(key, Value::Array(merged));
            }
            (orig_v, patch_v) if same_type => {
                // Scalars of the same Go type: take the patch value.
                *orig_v = patch_v;
            }
            (_, mut patch_v) => {
                if !is_delete_list {
                    discard_nulls(&mut patch_v);
                    match remove_directives(patch_v) {
                        Some(v) => {
                            original.insert(key, clean(v));
                        }
                        None => {
                            original.shift_remove(&key);
                        }
                    }
                }
            }
        }
    }
    Ok(original)
}

fn handle_directive_in_merge_map(directive: &Value, mut patch: JMap) -> Result<JMap, String> {
    match directive.as_str() {
        Some(REPLACE_DIRECTIVE) => {
            patch.shift_remove(DIRECTIVE_MARKER);
            match clean(Value::Object(patch)) {
                Value::Object(m) => Ok(m),
                _ => Ok(JMap::new()),
            }
        }
        Some(DELETE_DIRECTIVE) => Ok(JMap::new()),
        _ => Err(err_bad_patch_type(directive, &patch)),
    }
}

fn merge_map_handler(
    original: JMap,
    patch: JMap,
    schema: Schema,
    strategy: &str,
) -> Result<JMap, String> {
    if strategy != REPLACE_DIRECTIVE {
        return merge_map(original, patch, schema);
    }
    match clean(Value::Object(patch)) {
        Value::Object(m) => Ok(m),
        _ => Ok(JMap::new()),
    }
}

/// Upstream `extractKey`: `$prefix/field` → `field`.
fn extract_key(s: &str, prefix: &str) -> Result<String, String> {
    match s.split_once('/') {
        Some((head, rest)) if head == prefix => Ok(rest.to_string()),
        _ => Err(match prefix {
            DELETE_FROM_PRIMITIVE_LIST_PREFIX => {
                ERR_BAD_PATCH_FORMAT_FOR_PRIMITIVE_LIST.to_string()
            }
            SET_ELEMENT_ORDER_PREFIX => ERR_BAD_PATCH_FORMAT_FOR_SET_ELEMENT_ORDER_LIST.to_string(),
            _ => format!("fail to find unknown prefix {prefix:?} in {s}\n"),
        }),
    }
}

/// Splits `"merge,retainKeys"`-style strategies into (has retainKeys, other).
fn extract_retain_keys_patch_strategy(strategies: &[String]) -> Result<(bool, String), String> {
    let unexpected = || format!("unexpected patch strategy: [{}]", strategies.join(" "));
    match strategies {
        [] => Ok((false, String::new())),
        [one] if one == RETAIN_KEYS_STRATEGY => Ok((true, String::new())),
        [one] => Ok((false, one.clone())),
        [a, b] if a == RETAIN_KEYS_STRATEGY => Ok((true, b.clone())),
        [a, b] if b == RETAIN_KEYS_STRATEGY => Ok((true, a.clone())),
        _ => Err(unexpected()),
    }
}

/// `$retainKeys`: clear keys of the original not listed in the directive.
fn apply_retain_keys_directive(original: &mut JMap, patch: &mut JMap) -> Result<(), String> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS_DIRECTIVE) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(ERR_BAD_PATCH_FORMAT_FOR_RETAIN_KEYS.to_string());
    };
    let listed = |k: &str| retain.iter().any(|v| v.as_str() == Some(k));
    // Every field set by the patch must be retained.
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
            || k.starts_with(SET_ELEMENT_ORDER_PREFIX)
        {
            continue;
        }
        if !listed(k) {
            return Err(ERR_BAD_PATCH_FORMAT_FOR_RETAIN_KEYS.to_string());
        }
    }
    original.retain(|k, _| listed(k));
    Ok(())
}

/// Processes `$setElementOrder/<field>` directives together with the list
/// they order (upstream `mergePatchIntoOriginal`). Precedence of ordering:
/// `$setElementOrder` > order in the patch list > order in the live list.
fn merge_patch_into_original(
    original: &mut JMap,
    patch: &mut JMap,
    schema: Schema,
) -> Result<(), String> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER_PREFIX))
        .cloned()
        .collect();
    for key in keys {
        let Some(set_order) = patch.shift_remove(&key) else {
            continue;
        };
        let Value::Array(set_order) = set_order else {
            return Err(err_bad_arg_type(GO_SLICE_TYPE, &set_order));
        };
        let original_key = extract_key(&key, SET_ELEMENT_ORDER_PREFIX)?;

        let original_list = match original.get(&original_key) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => return Err(err_bad_arg_type(GO_SLICE_TYPE, other)),
        };
        let patch_list = match patch.get(&original_key) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => return Err(err_bad_arg_type(GO_SLICE_TYPE, other)),
        };

        let (sub, meta) = schema.lookup(&original_key, true);
        let (_, strategy) = extract_retain_keys_patch_strategy(&meta.strategies)?;
        let merge_key = meta.merge_key.as_str();
        validate_patch_with_set_order_list(
            patch_list.as_deref().unwrap_or_default(),
            &set_order,
            merge_key,
        )?;

        // The live order used for interleaving. Upstream merges the list in
        // place, so when it is a merge list of maps this becomes a view of the
        // mutated backing array (see `merge_slice`).
        let mut server_order: Option<Vec<Value>> = None;
        let merged = match (&original_list, &patch_list) {
            (Some(o), None) => o.clone(),
            (None, Some(p)) => match remove_directives(Value::Array(p.clone())) {
                Some(Value::Array(a)) => a.into_iter().map(clean).collect(),
                _ => continue,
            },
            (Some(o), Some(p)) => {
                if strategy == MERGE_DIRECTIVE {
                    let (merged, view) = merge_slice(o.clone(), p.clone(), sub, merge_key, false)?;
                    if let Some(view) = view {
                        server_order = Some(view);
                    }
                    merged
                } else {
                    p.iter().cloned().map(clean).collect()
                }
            }
            (None, None) => continue,
        };

        let (patch_items, server_only) = if merge_key.is_empty() {
            partition_primitives_by_present_in_list(merged, &set_order)
        } else {
            partition_maps_by_present_in_list(merged, &set_order, merge_key)?
        };
        let orig_slice = original_list.as_deref().unwrap_or_default();
        let kind = slice_element_type(&[orig_slice, patch_list.as_deref().unwrap_or_default()])?;
        let both = normalize_element_order(
            patch_items,
            server_only,
            &set_order,
            server_order.as_deref().unwrap_or(orig_slice),
            merge_key,
            kind,
        )?;
        original.insert(original_key.clone(), Value::Array(both));
        // Already merged: keep the main loop from processing it again.
        patch.shift_remove(&original_key);
    }
    Ok(())
}

/// Checks that the patch list's items appear in the `$setElementOrder` list
/// in the same relative order (deletions ignored).
fn validate_patch_with_set_order_list(
    patch_list: &[Value],
    set_order: &[Value],
    merge_key: &str,
) -> Result<(), String> {
    if set_order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<Value> = if merge_key.is_empty() {
        patch_list.to_vec()
    } else {
        extract_to_delete_items(patch_list.to_vec())?.0
    };
    let (mut pi, mut si) = (0, 0);
    while pi < non_delete.len() && si < set_order.len() {
        if contains_directive_marker(&non_delete[pi]) {
            pi += 1;
            continue;
        }
        if merge_key_value_equal(&non_delete[pi], &set_order[si], merge_key)? {
            pi += 1;
        }
        si += 1;
    }
    if pi < non_delete.len() && si >= set_order.len() {
        return Err(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER_PREFIX} list:\n{}\n",
            go_fmt(&Value::Array(patch_list.to_vec())),
            go_fmt(&Value::Array(set_order.to_vec()))
        ));
    }
    Ok(())
}

fn contains_directive_marker(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.contains_key(DIRECTIVE_MARKER))
}

fn merge_key_value_equal(left: &Value, right: &Value, merge_key: &str) -> Result<bool, String> {
    if merge_key.is_empty() {
        return Ok(left == right);
    }
    let l = left
        .as_object()
        .ok_or_else(|| err_bad_arg_type(GO_MAP_TYPE, left))?;
    let r = right
        .as_object()
        .ok_or_else(|| err_bad_arg_type(GO_MAP_TYPE, right))?;
    let lv = l
        .get(merge_key)
        .ok_or_else(|| err_no_merge_key(l, merge_key))?;
    let rv = r
        .get(merge_key)
        .ok_or_else(|| err_no_merge_key(r, merge_key))?;
    Ok(lv == rv)
}

// ---------------------------------------------------------------------------
// List merging.

fn merge_slice_handler(
    original: Vec<Value>,
    patch: Vec<Value>,
    schema: Schema,
    strategy: &str,
    merge_key: &str,
    is_delete_list: bool,
) -> Result<Vec<Value>, String> {
    // Deletion lists are handled the same way whatever the field's strategy.
    if strategy == MERGE_DIRECTIVE || is_delete_list {
        Ok(merge_slice(original, patch, schema, merge_key, is_delete_list)?.0)
    } else {
        Ok(patch.into_iter().map(clean).collect())
    }
}

/// Merges two lists. Besides the result, for lists of maps it returns what
/// upstream's caller afterwards sees through its own slice header of the
/// original list: Go deletes entries by shifting the backing array in place
/// and appends new entries into the freed slots, and `$setElementOrder`
/// processing then uses that mutated array as the "live" order.
fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    schema: Schema,
    merge_key: &str,
    is_delete_list: bool,
) -> Result<(Vec<Value>, Option<Vec<Value>>), String> {
    if original.is_empty() && patch.is_empty() {
        return Ok((original, None));
    }
    let kind = slice_element_type(&[&original, &patch])?;

    if kind != Kind::Map {
        if is_delete_list {
            return Ok((delete_from_slice(original, &patch), None));
        }
        let mut both = original.clone();
        both.extend(patch.iter().cloned());
        let merged = deduplicate_scalars(both);
        let (patch_items, server_only) = if merge_key.is_empty() {
            partition_primitives_by_present_in_list(merged, &patch)
        } else {
            partition_maps_by_present_in_list(merged, &patch, merge_key)?
        };
        let result =
            normalize_element_order(patch_items, server_only, &patch, &original, merge_key, kind)?;
        return Ok((result, None));
    }

    if merge_key.is_empty() {
        return Err(format!(
            "cannot merge lists without merge key for {}",
            schema.name()
        ));
    }
    let special = merge_slice_with_special_elements(original, patch, merge_key)?;
    let (original, patch) = if special.replaced {
        (special.patch, Vec::new())
    } else {
        (special.original, special.patch)
    };
    let (merged, appended) =
        merge_slice_without_special_elements(original.clone(), &patch, merge_key, schema)?;

    let mut view = special.backing;
    if !special.replaced {
        let free = &mut view[special.len..];
        for (slot, item) in free.iter_mut().zip(appended) {
            *slot = item;
        }
    }

    let (patch_items, server_only) = partition_maps_by_present_in_list(merged, &patch, merge_key)?;
    let mut result =
        normalize_element_order(patch_items, server_only, &patch, &original, merge_key, kind)?;

    // Elements that came verbatim from the patch (appended, or the whole list
    // on `$patch: replace`) get the cleanup a typed decode would do.
    for item in result.iter_mut() {
        let is_new = special.replaced
            || item
                .as_object()
                .and_then(|m| m.get(merge_key))
                .is_none_or(|mv| index_of(&original, Some(mv), merge_key).is_none());
        if is_new {
            *item = clean(std::mem::take(item));
        }
    }
    Ok((result, Some(view)))
}

/// Outcome of applying list-element directives.
struct SpecialElements {
    /// The original list after `$patch: delete` elements were applied.
    original: Vec<Value>,
    /// The patch list without directive elements.
    patch: Vec<Value>,
    /// `$patch: replace` was seen: `patch` replaces the list.
    replaced: bool,
    /// The original's backing array after Go's in-place deletions (same
    /// length as the original list) and the logical length within it.
    backing: Vec<Value>,
    len: usize,
}

/// Applies list-element directives (upstream `mergeSliceWithSpecialElements`).
fn merge_slice_with_special_elements(
    original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: &str,
) -> Result<SpecialElements, String> {
    let mut backing = original;
    let mut len = backing.len();
    let mut without = Vec::with_capacity(patch.len());
    let mut replaced = false;
    for v in patch {
        let Some(m) = v.as_object() else {
            return Err(err_bad_arg_type(GO_MAP_TYPE, &v));
        };
        match m.get(DIRECTIVE_MARKER) {
            None => without.push(v),
            Some(pt) => match pt.as_str() {
                Some(DELETE_DIRECTIVE) => match m.get(merge_key) {
                    Some(mv) => delete_matching_entries(&mut backing, &mut len, merge_key, mv)?,
                    None => return Err(err_no_merge_key(m, merge_key)),
                },
                // Keep scanning to prune the remaining directive elements.
                Some(REPLACE_DIRECTIVE) => replaced = true,
                Some(MERGE_DIRECTIVE) => {
                    return Err("merging lists cannot yet be specified in the patch".to_string());
                }
                _ => return Err(err_bad_patch_type(pt, m)),
            },
        }
    }
    Ok(SpecialElements {
        original: backing[..len].to_vec(),
        patch: without,
        replaced,
        backing,
        len,
    })
}

/// Deletes all maps whose `merge_key` equals `merge_value` from
/// `backing[..len]`, shifting in place like Go's `append(s[:i], s[i+1:]...)`.
fn delete_matching_entries(
    backing: &mut [Value],
    len: &mut usize,
    merge_key: &str,
    merge_value: &Value,
) -> Result<(), String> {
    while let Some(i) = find_map_in_slice(&backing[..*len], merge_key, merge_value)? {
        let last = *len - 1;
        if i < last {
            backing[i..=last].rotate_left(1);
            // The slot past the new end keeps a copy of the old last element.
            backing[last] = backing[last - 1].clone();
        }
        *len -= 1;
    }
    Ok(())
}

/// Merges patch elements into matching original elements, appending the
/// rest. Also returns the appended elements.
fn merge_slice_without_special_elements(
    mut original: Vec<Value>,
    patch: &[Value],
    merge_key: &str,
    schema: Schema,
) -> Result<(Vec<Value>, Vec<Value>), String> {
    let mut appended = Vec::new();
    for v in patch {
        let Some(pm) = v.as_object() else {
            return Err(err_bad_arg_type(GO_MAP_TYPE, v));
        };
        let Some(mv) = pm.get(merge_key) else {
            return Err(err_no_merge_key(pm, merge_key));
        };
        match find_map_in_slice(&original, merge_key, mv)? {
            Some(i) => {
                let om = match std::mem::take(&mut original[i]) {
                    Value::Object(m) => m,
                    _ => JMap::new(),
                };
                original[i] = Value::Object(merge_map(om, pm.clone(), schema)?);
            }
            None => {
                original.push(v.clone());
                appended.push(v.clone());
            }
        }
    }
    Ok((original, appended))
}

/// Index of the first map in `list` whose `key` equals `value`.
fn find_map_in_slice(list: &[Value], key: &str, value: &Value) -> Result<Option<usize>, String> {
    for (i, v) in list.iter().enumerate() {
        let Some(m) = v.as_object() else {
            return Err(format!("value for key {i} is not a map"));
        };
        if m.get(key) == Some(value) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

fn delete_from_slice(current: Vec<Value>, to_delete: &[Value]) -> Vec<Value> {
    current
        .into_iter()
        .filter(|v| !to_delete.contains(v))
        .collect()
}

/// Upstream's in-place deduplication (swaps the last element into the hole).
fn deduplicate_scalars(mut s: Vec<Value>) -> Vec<Value> {
    if s.is_empty() {
        return s;
    }
    let mut length = s.len() - 1;
    let mut i = 0;
    while i < length {
        let mut j = i + 1;
        while j <= length {
            if s[i] == s[j] {
                s.swap(j, length);
                s.truncate(length);
                length -= 1;
                // Re-examine position j, which now holds the moved element.
                continue;
            }
            j += 1;
        }
        i += 1;
    }
    s
}

/// The common Go type of all elements; lists of lists and mixed types fail.
fn slice_element_type(slices: &[&[Value]]) -> Result<Kind, String> {
    let mut prev: Option<Kind> = None;
    for s in slices {
        for v in s.iter() {
            let k = kind_of(v);
            match prev {
                None => {
                    if k == Kind::Slice {
                        return Err(ERR_NO_LIST_OF_LISTS.to_string());
                    }
                    if k == Kind::Nil {
                        // Go dereferences a nil reflect.Type here and panics.
                        return Err("list element types are not identical: nil element".into());
                    }
                    prev = Some(k);
                }
                Some(p) if p != k => {
                    let all: Vec<Value> = slices.iter().map(|s| Value::Array(s.to_vec())).collect();
                    return Err(format!(
                        "list element types are not identical: {}",
                        go_fmt(&Value::Array(all))
                    ));
                }
                Some(_) => {}
            }
        }
    }
    prev.ok_or_else(|| "no elements in any of the given slices".to_string())
}

fn partition_primitives_by_present_in_list(
    original: Vec<Value>,
    partition_by: &[Value],
) -> (Vec<Value>, Vec<Value>) {
    original.into_iter().partition(|v| partition_by.contains(v))
}

fn partition_maps_by_present_in_list(
    original: Vec<Value>,
    partition_by: &[Value],
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>), String> {
    let mut patch = Vec::with_capacity(original.len());
    let mut server_only = Vec::with_capacity(original.len());
    for v in original {
        let Some(m) = v.as_object() else {
            return Err(err_bad_arg_type(GO_MAP_TYPE, &v));
        };
        let Some(mv) = m.get(merge_key) else {
            return Err(err_no_merge_key(m, merge_key));
        };
        if find_map_in_slice(partition_by, merge_key, mv)?.is_some() {
            patch.push(v);
        } else {
            server_only.push(v);
        }
    }
    Ok((patch, server_only))
}

fn extract_to_delete_items(l: Vec<Value>) -> Result<(Vec<Value>, Vec<Value>), String> {
    let mut keep = Vec::new();
    let mut delete = Vec::new();
    for v in l {
        let Some(m) = v.as_object() else {
            return Err(err_bad_arg_type(GO_MAP_TYPE, &v));
        };
        if m.get(DIRECTIVE_MARKER).and_then(Value::as_str) == Some(DELETE_DIRECTIVE) {
            delete.push(v);
        } else {
            keep.push(v);
        }
    }
    Ok((keep, delete))
}

fn validate_merge_key_in_lists(merge_key: &str, lists: &[&[Value]]) -> Result<(), String> {
    for list in lists {
        for item in list.iter() {
            let Some(m) = item.as_object() else {
                return Err(err_bad_arg_type(GO_MAP_TYPE, item));
            };
            if !m.contains_key(merge_key) {
                return Err(err_no_merge_key(m, merge_key));
            }
        }
    }
    Ok(())
}

/// The value compared by upstream's `index()`: the merge key of a map
/// element (nil if absent), or the element itself for scalars.
fn order_value<'v>(item: &'v Value, merge_key: &str, kind: Kind) -> Option<&'v Value> {
    if kind == Kind::Map {
        item.as_object()
            .and_then(|m| m.get(merge_key))
            .filter(|v| !v.is_null())
    } else {
        Some(item)
    }
}

/// Position of `needle` (an already-extracted order value) in `list`.
fn index_of(list: &[Value], needle: Option<&Value>, merge_key: &str) -> Option<usize> {
    let kind = if merge_key.is_empty() {
        Kind::Str
    } else {
        Kind::Map
    };
    list.iter()
        .position(|v| order_value(v, merge_key, kind) == needle)
}

fn index_in(order: &[Value], item: &Value, merge_key: &str, kind: Kind) -> Option<usize> {
    let needle = order_value(item, merge_key, kind);
    order
        .iter()
        .position(|v| order_value(v, merge_key, kind) == needle)
}

/// Sorts `patch` by `patch_order` and `server_only` by `server_order`, then
/// interleaves them (upstream `normalizeElementOrder`).
fn normalize_element_order(
    patch: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: &str,
    kind: Kind,
) -> Result<Vec<Value>, String> {
    let patch = normalize_slice_order(patch, patch_order, merge_key, kind)?;
    let server_only = normalize_slice_order(server_only, server_order, merge_key, kind)?;
    Ok(merge_sorted_slice(
        server_only,
        patch,
        server_order,
        merge_key,
        kind,
    ))
}

fn normalize_slice_order(
    to_sort: Vec<Value>,
    order: &[Value],
    merge_key: &str,
    kind: Kind,
) -> Result<Vec<Value>, String> {
    let (to_sort, to_delete) = if kind == Kind::Map {
        validate_merge_key_in_lists(merge_key, &[&to_sort, order])?;
        extract_to_delete_items(to_sort)?
    } else {
        (to_sort, Vec::new())
    };
    let mut keyed: Vec<(Option<usize>, Value)> = to_sort
        .into_iter()
        .map(|v| (index_in(order, &v, merge_key, kind), v))
        .collect();
    // Upstream's comparator is not a strict weak order when an element is
    // missing from `order`, so the exact algorithm of Go's sort.SliceStable
    // is reproduced to get identical results.
    go_stable_sort(&mut keyed, |a, b| match (a.0, b.0) {
        (Some(i), Some(j)) => i < j,
        _ => true,
    });
    let mut out: Vec<Value> = keyed.into_iter().map(|(_, v)| v).collect();
    out.extend(to_delete);
    Ok(out)
}

/// Inserts each server-only item (`left`) into the patch items (`right`)
/// before the first item that comes after it in the live list.
fn merge_sorted_slice(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    merge_key: &str,
    kind: Kind,
) -> Vec<Value> {
    let li: Vec<Option<usize>> = left
        .iter()
        .map(|v| index_in(server_order, v, merge_key, kind))
        .collect();
    let ri: Vec<Option<usize>> = right
        .iter()
        .map(|v| index_in(server_order, v, merge_key, kind))
        .collect();
    let size = left.len() + right.len();
    let mut left = left.into_iter().zip(li).peekable();
    let mut right = right.into_iter().zip(ri).peekable();
    let mut out = Vec::with_capacity(size);
    for _ in 0..size {
        let take_left = match (left.peek(), right.peek()) {
            (Some(_), None) => true,
            (None, _) => false,
            (Some((_, l)), Some((_, r))) => matches!((l, r), (Some(l), Some(r)) if l < r),
        };
        let next = if take_left { left.next() } else { right.next() };
        if let Some((v, _)) = next {
            out.push(v);
        }
    }
    out
}

/// Go's `sort.SliceStable` (insertion sort on blocks of 20, then SymMerge).
fn go_stable_sort<T>(data: &mut [T], less: impl Fn(&T, &T) -> bool) {
    let n = data.len();
    let mut block = 20;
    let (mut a, mut b) = (0, block);
    while b <= n {
        insertion_sort(data, a, b, &less);
        a = b;
        b += block;
    }
    insertion_sort(data, a, n, &less);
    while block < n {
        let (mut a, mut b) = (0, 2 * block);
        while b <= n {
            sym_merge(data, a, a + block, b, &less);
            a = b;
            b += 2 * block;
        }
        let m = a + block;
        if m < n {
            sym_merge(data, a, m, n, &less);
        }
        block *= 2;
    }
}

fn insertion_sort<T>(data: &mut [T], a: usize, b: usize, less: &impl Fn(&T, &T) -> bool) {
    for i in a + 1..b {
        let mut j = i;
        while j > a && less(&data[j], &data[j - 1]) {
            data.swap(j, j - 1);
            j -= 1;
        }
    }
}

fn sym_merge<T>(data: &mut [T], a: usize, m: usize, b: usize, less: &impl Fn(&T, &T) -> bool) {
    if m - a == 1 {
        let (mut i, mut j) = (m, b);
        while i < j {
            let h = (i + j) / 2;
            if less(&data[h], &data[a]) {
                i = h + 1;
            } else {
                j = h;
            }
        }
        for k in a..i.saturating_sub(1) {
            data.swap(k, k + 1);
        }
        return;
    }
    if b - m == 1 {
        let (mut i, mut j) = (a, m);
        while i < j {
            let h = (i + j) / 2;
            if !less(&data[m], &data[h]) {
                i = h + 1;
            } else {
                j = h;
            }
        }
        let mut k = m;
        while k > i {
            data.swap(k, k - 1);
            k -= 1;
        }
        return;
    }
    let mid = (a + b) / 2;
    let n = mid + m;
    let (mut start, mut r) = if m > mid { (n - b, mid) } else { (a, m) };
    let p = n - 1;
    while start < r {
        let c = (start + r) / 2;
        if !less(&data[p - c], &data[c]) {
            start = c + 1;
        } else {
            r = c;
        }
    }
    let end = n - start;
    if start < m && m < end {
        rotate(data, start, m, end);
    }
    if a < start && start < mid {
        sym_merge(data, a, start, mid, less);
    }
    if mid < end && end < b {
        sym_merge(data, mid, end, b, less);
    }
}

fn rotate<T>(data: &mut [T], a: usize, m: usize, b: usize) {
    let mut i = m - a;
    let mut j = b - m;
    while i != j {
        if i > j {
            swap_range(data, m - i, m, j);
            i -= j;
        } else {
            swap_range(data, m - i, m + j - i, i);
            j -= i;
        }
    }
    swap_range(data, m - i, m, i);
}

fn swap_range<T>(data: &mut [T], a: usize, b: usize, n: usize) {
    for i in 0..n {
        data.swap(a + i, b + i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The embedded v1.33 definitions the server itself uses.
    fn defs() -> &'static JMap {
        crate::api::openapi::definitions()
    }

    const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
    const POD: &str = "io.k8s.api.core.v1.Pod";

    fn smp(def: Option<&str>, original: Value, patch: Value) -> Result<Value, String> {
        apply(&original, &patch, defs(), def)
    }

    fn deployment(containers: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"}},
            "spec": {
                "replicas": 1,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {"spec": {"containers": containers}}
            }
        })
    }

    #[test]
    fn kubectl_set_image() {
        let orig = deployment(
            json!([{"name": "c1", "image": "nginx:1", "ports": [{"containerPort": 80}]}]),
        );
        let patch = json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"c1"}],"containers":[{"image":"nginx:9","name":"c1"}]}}}});
        let out = smp(Some(DEPLOYMENT), orig, patch).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "c1", "image": "nginx:9", "ports": [{"containerPort": 80}]}])
        );
        assert_eq!(out["spec"]["replicas"], json!(1));
    }

    #[test]
    fn set_image_keeps_other_containers_in_order() {
        let orig =
            deployment(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]));
        let patch = json!({"spec":{"template":{"spec":{
            "$setElementOrder/containers":[{"name":"a"},{"name":"b"}],
            "containers":[{"image":"b:2","name":"b"}]}}}});
        let out = smp(Some(DEPLOYMENT), orig, patch).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}])
        );
    }

    #[test]
    fn set_element_order_reorders() {
        let orig = deployment(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
        let patch = json!({"spec":{"template":{"spec":{
            "$setElementOrder/containers":[{"name":"c"},{"name":"a"},{"name":"b"}]}}}});
        let out = smp(Some(DEPLOYMENT), orig, patch).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "c"}, {"name": "a"}, {"name": "b"}])
        );
    }

    #[test]
    fn new_containers_without_set_element_order_go_first() {
        // Upstream quirk: without `$setElementOrder`, patch items that are not
        // in the live list sort before the server-only items.
        let orig = deployment(json!([{"name": "a"}]));
        let patch =
            json!({"spec":{"template":{"spec":{"containers":[{"name":"z"},{"name":"y"}]}}}});
        let out = smp(Some(DEPLOYMENT), orig.clone(), patch).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "z"}, {"name": "y"}, {"name": "a"}])
        );
        // What kubectl sends: the full order, new items last.
        let patch = json!({"spec":{"template":{"spec":{
            "$setElementOrder/containers":[{"name":"a"},{"name":"z"}],
            "containers":[{"name":"z"}]}}}});
        let out = smp(Some(DEPLOYMENT), orig, patch).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a"}, {"name": "z"}])
        );
    }

    #[test]
    fn env_merge_by_name_and_delete() {
        let orig = json!({"spec": {"containers": [{"name": "c", "image": "i",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}]}]}});
        let patch = json!({"spec": {"containers": [{"name": "c", "env": [
            {"name": "B", "value": "20"},
            {"name": "A", "$patch": "delete"},
            {"name": "D", "value": "4"}]}]}});
        let out = smp(Some(POD), orig, patch).unwrap();
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "B", "value": "20"}, {"name": "D", "value": "4"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(out["spec"]["containers"][0]["image"], json!("i"));
    }

    #[test]
    fn env_value_null_removes_only_that_field() {
        let orig = json!({"spec": {"containers": [{"name": "c",
            "env": [{"name": "A", "value": "1"}]}]}});
        let patch = json!({"spec": {"containers": [{"name": "c",
            "env": [{"name": "A", "value": null, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}});
        let out = smp(Some(POD), orig, patch).unwrap();
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
        );
    }

    #[test]
    fn ports_null_removes_ports() {
        let orig = json!({"spec": {"containers": [{"name": "c", "image": "i",
            "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}});
        let patch = json!({"spec": {"containers": [{"name": "c", "ports": null}]}});
        let out = smp(Some(POD), orig, patch).unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "c", "image": "i"}])
        );
    }

    #[test]
    fn port_delete_directive_by_container_port() {
        let orig = json!({"spec": {"containers": [{"name": "c",
            "ports": [{"containerPort": 80}, {"containerPort": 443}]}]}});
        let patch = json!({"spec": {"containers": [{"name": "c",
            "ports": [{"containerPort": 80, "$patch": "delete"}]}]}});
        let out = smp(Some(POD), orig, patch).unwrap();
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 443}])
        );
    }

    #[test]
    fn finalizers_union_and_delete_from_primitive_list() {
        let orig = json!({"metadata": {"name": "p", "finalizers": ["a", "b"]}});
        let out = smp(
            Some(POD),
            orig.clone(),
            json!({"metadata": {"finalizers": ["c", "a"]}}),
        )
        .unwrap();
        // Patch items keep patch order; server-only items are interleaved by live order.
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));

        let out = smp(
            Some(POD),
            orig,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn finalizers_set_element_order() {
        let orig = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
        let patch = json!({"metadata": {
            "$setElementOrder/finalizers": ["c", "b"],
            "$deleteFromPrimitiveList/finalizers": ["a"]}});
        let out = smp(Some(POD), orig, patch).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "b"]));
    }

    #[test]
    fn strategy_retain_keys_rolling_update_to_recreate() {
        let orig = deployment(json!([{"name": "c"}]));
        let patch = json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"}}});
        let out = smp(Some(DEPLOYMENT), orig, patch).unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn retain_keys_rejects_unlisted_patch_field() {
        let orig = deployment(json!([{"name": "c"}]));
        let patch = json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"RollingUpdate","rollingUpdate":{"maxSurge":2}}}});
        assert_eq!(
            smp(Some(DEPLOYMENT), orig, patch).unwrap_err(),
            "invalid patch format of retainKeys"
        );
    }

    #[test]
    fn directives_in_new_subtrees_are_stripped() {
        let orig = json!({"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}});
        let patch = json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"}}});
        let out = smp(Some(DEPLOYMENT), orig, patch).unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn patch_replace_on_map() {
        let orig = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"nodeSelector": {"x": "1", "y": "2"}}});
        let patch = json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}});
        let out = smp(Some(POD), orig, patch).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"c": "3"}));
        assert_eq!(out["spec"]["nodeSelector"], json!({"x": "1", "y": "2"}));
    }

    #[test]
    fn patch_delete_on_map() {
        let orig = json!({"spec": {"nodeSelector": {"x": "1"}, "restartPolicy": "Always"}});
        let patch = json!({"spec": {"nodeSelector": {"$patch": "delete"}}});
        let out = smp(Some(POD), orig, patch).unwrap();
        assert_eq!(
            out["spec"],
            json!({"nodeSelector": {}, "restartPolicy": "Always"})
        );
    }

    #[test]
    fn patch_merge_on_map_is_rejected_like_upstream() {
        let orig = json!({"metadata": {"labels": {"a": "1"}}});
        let patch = json!({"metadata": {"labels": {"$patch": "merge", "b": "2"}}});
        assert_eq!(
            smp(Some(POD), orig, patch).unwrap_err(),
            "unknown patch type: merge in map: map[$patch:merge b:2]"
        );
    }

    #[test]
    fn labels_null_deletes() {
        let orig = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3", "zz": null}}});
        let out = smp(Some(POD), orig, patch).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
    }

    #[test]
    fn list_replace_directive() {
        let orig = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let patch =
            json!({"spec": {"containers": [{"name": "x", "image": "i"}, {"$patch": "replace"}]}});
        let out = smp(Some(POD), orig, patch).unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "x", "image": "i"}])
        );
    }

    #[test]
    fn volumes_merge_retain_keys() {
        let orig = json!({"spec": {"volumes": [
            {"name": "v1", "configMap": {"name": "cm"}},
            {"name": "v2", "emptyDir": {}}]}});
        let patch = json!({"spec": {"volumes": [
            {"name": "v1", "$retainKeys": ["name", "secret"], "secret": {"secretName": "s"}}]}});
        let out = smp(Some(POD), orig, patch).unwrap();
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "v1", "secret": {"secretName": "s"}}, {"name": "v2", "emptyDir": {}}])
        );
    }

    #[test]
    fn list_without_strategy_is_replaced() {
        let orig = json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}],
            "containers": [{"name": "c", "args": ["x", "y"]}]}});
        let patch = json!({"spec": {"tolerations": [{"key": "c", "value": null}],
            "containers": [{"name": "c", "args": ["z"]}]}});
        let out = smp(Some(POD), orig, patch).unwrap();
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "c"}]));
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["z"]));
    }

    #[test]
    fn unknown_definition_is_plain_merge() {
        let orig = json!({"spec": {"containers": [{"name": "a"}], "m": {"x": 1, "y": 2}}});
        let patch = json!({"spec": {"containers": [{"name": "b"}], "m": {"x": null, "z": 3}}});
        let want = json!({"spec": {"containers": [{"name": "b"}], "m": {"y": 2, "z": 3}}});
        assert_eq!(smp(None, orig.clone(), patch.clone()).unwrap(), want);
        assert_eq!(smp(Some("no.such.Def"), orig, patch).unwrap(), want);
    }

    #[test]
    fn missing_merge_key_is_an_error() {
        let orig = json!({"spec": {"containers": [{"name": "a"}]}});
        let patch = json!({"spec": {"containers": [{"image": "x"}]}});
        assert_eq!(
            smp(Some(POD), orig, patch).unwrap_err(),
            "map: map[image:x] does not contain declared merge key: name"
        );
    }

    #[test]
    fn malformed_directives_are_errors() {
        let orig =
            json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "a"}]}});
        let cases = [
            (
                json!({"spec": {"containers": [{"name": "a", "$patch": "merge"}]}}),
                "merging lists cannot yet be specified in the patch",
            ),
            (
                json!({"spec": {"containers": [{"name": "a", "$patch": "bogus"}]}}),
                "unknown patch type: bogus in map: map[$patch:bogus name:a]",
            ),
            (
                json!({"metadata": {"$deleteFromPrimitiveListfinalizers": ["a"]}}),
                "invalid patch format of primitive list",
            ),
            (
                json!({"spec": {"$setElementOrder": []}}),
                "invalid patch format of setElementOrder list",
            ),
            (
                json!({"spec": {"containers": [[1]]}}),
                "list element types are not identical: [[map[name:a]] [[1]]]",
            ),
            (
                json!({"metadata": {"finalizers": [["a"]]}, "spec": {"containers": [{"name": "a"}]}}),
                "list element types are not identical: [[a] [[a]]]",
            ),
            (
                json!({"spec": {"$setElementOrder/containers": [{"name": "b"}],
                    "containers": [{"name": "a"}]}}),
                "The order in patch list:\n[map[name:a]]\n doesn't match $setElementOrder list:\n[map[name:b]]\n",
            ),
        ];
        for (patch, want) in cases {
            assert_eq!(
                smp(Some(POD), orig.clone(), patch.clone()).unwrap_err(),
                want,
                "patch {patch}"
            );
        }
    }

    #[test]
    fn non_object_patch_is_rejected() {
        let err = smp(Some(POD), json!({}), json!([1])).unwrap_err();
        assert_eq!(
            err,
            "json: cannot unmarshal array into Go value of type map[string]interface {}"
        );
        assert_eq!(
            smp(Some(POD), json!({"a": 1}), Value::Null).unwrap(),
            json!({"a": 1})
        );
    }

    #[test]
    fn root_replace_and_delete() {
        let orig = json!({"kind": "Pod", "spec": {"nodeName": "n"}});
        let out = smp(
            Some(POD),
            orig.clone(),
            json!({"$patch": "replace", "kind": "Pod"}),
        )
        .unwrap();
        assert_eq!(out, json!({"kind": "Pod"}));
        assert_eq!(
            smp(Some(POD), orig, json!({"$patch": "delete"})).unwrap(),
            json!({})
        );
    }

    #[test]
    fn map_of_structs_via_additional_properties() {
        // ConfigMap data is a plain map; merging still works per key.
        let orig = json!({"data": {"a": "1", "b": "2"}});
        let patch = json!({"data": {"a": null, "c": "3"}});
        let out = smp(Some("io.k8s.api.core.v1.ConfigMap"), orig, patch).unwrap();
        assert_eq!(out["data"], json!({"b": "2", "c": "3"}));
    }

    #[test]
    fn go_formatting() {
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(100000.0), "100000");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(123456789.0), "1.23456789e+08");
        assert_eq!(
            go_fmt(&json!({"b": 1.5, "a": ["x", 2, null, true], "c": {"z": "q"}})),
            "map[a:[x 2 <nil> true] b:1.5 c:map[z:q]]"
        );
        assert_eq!(go_fmt_s(&json!(5)), "%!s(int64=5)");
        assert_eq!(
            go_fmt_s(&json!({"a": [1.5, null, "x"], "b": true})),
            "map[a:[%!s(float64=1.5) <nil> x] b:%!s(bool=true)]"
        );
    }

    #[test]
    fn go_stable_sort_matches_std_for_consistent_order() {
        let mut seed = 7u64;
        for len in 0..90 {
            let mut v: Vec<(u64, usize)> = (0..len)
                .map(|i| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 33) % 7, i)
                })
                .collect();
            let mut want = v.clone();
            want.sort_by_key(|x| x.0);
            go_stable_sort(&mut v, |a, b| a.0 < b.0);
            assert_eq!(v, want, "len {len}");
        }
    }
}
