// TEMPORARY STUB (being replaced by the real module)
use serde_json::{Map, Value};
pub struct LabelSelector;
impl LabelSelector {
    pub fn parse(_s: &str) -> Result<LabelSelector, String> { Ok(LabelSelector) }
    pub fn from_label_selector_object(_v: &Value) -> Result<LabelSelector, String> { Ok(LabelSelector) }
    pub fn matches(&self, _labels: Option<&Map<String, Value>>) -> bool { true }
    pub fn is_empty(&self) -> bool { false }
}
impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "") }
}
pub struct FieldSelector;
impl FieldSelector {
    pub fn parse(_s: &str) -> Result<FieldSelector, String> { Ok(FieldSelector) }
    pub fn matches(&self, _obj: &Value) -> bool { true }
    pub fn fields(&self) -> impl Iterator<Item = &str> { std::iter::empty() }
    pub fn supported(_kind: &str, _field: &str) -> bool { true }
}
