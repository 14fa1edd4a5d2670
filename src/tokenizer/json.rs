//! Reading tokenizer.json values: typed field access whose errors name the field and where it
//! sits in the file. Every part of the Hugging Face tokenizer (models, normalizers,
//! pre-tokenizers, decoders) reads through these.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::{Error, Result};

/// The field `name` of `v`, or a Format error naming it.
pub(crate) fn field<'a>(v: &'a Value, name: &str, ctx: &str) -> Result<&'a Value> {
    v.get(name).ok_or_else(|| Error::format(format!("{ctx}: missing field `{name}`")))
}

/// A string field.
pub(crate) fn str_field<'a>(v: &'a Value, name: &str, ctx: &str) -> Result<&'a str> {
    field(v, name, ctx)?.as_str().ok_or_else(|| Error::format(format!("{ctx}: field `{name}` is not a string")))
}

/// An optional string field (absent or null gives `None`).
pub(crate) fn opt_str<'a>(v: &'a Value, name: &str, ctx: &str) -> Result<Option<&'a str>> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::format(format!("{ctx}: field `{name}` is not a string"))),
    }
}

/// An optional boolean field.
pub(crate) fn opt_bool(v: &Value, name: &str, ctx: &str) -> Result<Option<bool>> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Error::format(format!("{ctx}: field `{name}` is not a boolean"))),
    }
}

/// A boolean field with a default.
pub(crate) fn bool_or(v: &Value, name: &str, default: bool, ctx: &str) -> Result<bool> {
    Ok(opt_bool(v, name, ctx)?.unwrap_or(default))
}

/// The `type` of a component object.
pub(crate) fn type_of<'a>(v: &'a Value, ctx: &str) -> Result<&'a str> {
    if !v.is_object() {
        return Err(Error::format(format!("{ctx} is not an object")));
    }
    str_field(v, "type", ctx)
}

/// A `{"String": ..}` pattern; `{"Regex": ..}` patterns are unsupported.
pub(crate) fn string_pattern(v: &Value, ctx: &str) -> Result<String> {
    if let Some(s) = v.get("String").and_then(Value::as_str) {
        return Ok(s.to_string());
    }
    if let Some(r) = v.get("Regex").and_then(Value::as_str) {
        return Err(Error::unsupported(format!("{ctx}: regex pattern `{r}`")));
    }
    Err(Error::format(format!("{ctx}: `pattern` is neither {{\"String\"}} nor {{\"Regex\"}}")))
}

/// A `{token: id}` vocabulary object.
pub(crate) fn vocab_map(v: &Value, ctx: &str) -> Result<HashMap<String, u32>> {
    let obj = v.as_object().ok_or_else(|| Error::format(format!("{ctx} is not an object")))?;
    let mut map = HashMap::with_capacity(obj.len());
    for (k, id) in obj {
        let id = id
            .as_u64()
            .filter(|&i| i <= u32::MAX as u64)
            .ok_or_else(|| Error::format(format!("{ctx}: id of `{k}` is not a u32")))?;
        map.insert(k.clone(), id as u32);
    }
    Ok(map)
}
