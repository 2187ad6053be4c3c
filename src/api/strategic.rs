// TEMPORARY STUB (being replaced by the real module)
use serde_json::{Map, Value};
pub fn apply(original: &Value, patch: &Value, _defs: &Map<String, Value>, _def_name: Option<&str>) -> Result<Value, String> {
    let mut d = original.clone();
    json_patch::merge(&mut d, patch);
    Ok(d)
}
