// TEMPORARY STUB (being replaced by the real module)
use serde_json::{Map, Value};
pub fn unknown_fields(_obj: &Value, _defs: &Map<String, Value>, _def_name: &str) -> Vec<String> { vec![] }
pub fn unknown_fields_structural(_obj: &Value, _schema: &Value) -> Vec<String> { vec![] }
