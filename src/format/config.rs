//! `config.json` beside a checkpoint (Hugging Face layouts): the few hyper-parameters that
//! tensor shapes cannot tell (Mamba-2 `n_groups`, epsilons, RWKV-4 `rescale_every`).
//!
//! Parsing is tolerant of the non-standard float spellings that real configs contain:
//! transformers 4 writes a bare `Infinity` / `-Infinity` / `NaN` token (not valid JSON),
//! transformers 5 writes `{"__float__": "Infinity"}`. Both read back as the same f64.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// A parsed `config.json` and the name of the file it came from (for error messages).
#[derive(Debug, Clone)]
pub struct HfConfig {
    /// Where it was read from (a path, or a label for in-memory configs).
    pub name: String,
    /// The parsed JSON object.
    pub json: Value,
}

/// Replaces bare `Infinity`, `-Infinity` and `NaN` tokens outside strings by
/// `{"__float__": "..."}` objects, so that a strict JSON parser accepts the text.
fn quote_bare_floats(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_str = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(ch) = rest.chars().next() {
        if in_str {
            out.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_str = false;
            }
            rest = &rest[ch.len_utf8()..];
            continue;
        }
        if ch == '"' {
            in_str = true;
        }
        let mut matched = false;
        for tok in ["-Infinity", "Infinity", "NaN"] {
            if rest.starts_with(tok) {
                out.push_str(&format!("{{\"__float__\": \"{tok}\"}}"));
                rest = &rest[tok.len()..];
                matched = true;
                break;
            }
        }
        if !matched {
            out.push(ch);
            rest = &rest[ch.len_utf8()..];
        }
    }
    out
}

impl HfConfig {
    /// Parses `text` (named `name` in errors); a malformed config is a format error naming it.
    pub fn parse(text: &str, name: &str) -> Result<HfConfig> {
        let json: Value = serde_json::from_str(&quote_bare_floats(text))
            .map_err(|e| Error::format(format!("{name}: not a valid JSON config: {e}")))?;
        if !json.is_object() {
            return Err(Error::format(format!("{name}: a config must be a JSON object")));
        }
        Ok(HfConfig { name: name.to_string(), json })
    }

    /// Reads `config.json` from `dir` if it exists: `Ok(None)` when there is none.
    pub fn beside(dir: &Path) -> Result<Option<HfConfig>> {
        let path = dir.join("config.json");
        if !path.is_file() {
            return Ok(None);
        }
        let text = super::read_text(&path, "config.json", super::MAX_SIDE_FILE)?;
        Self::parse(&text, &path.display().to_string()).map(Some)
    }

    /// `key` as a float: a JSON number, a `{"__float__": "Infinity"}` object or a float
    /// spelled as a string. `Ok(None)` when absent or null; a format error when not a number.
    pub fn f64(&self, key: &str) -> Result<Option<f64>> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => value_f64(v)
                .map(Some)
                .ok_or_else(|| Error::format(format!("{}: '{key}' is {v}, a number was expected", self.name))),
        }
    }

    /// `key` as a non-negative integer; `Ok(None)` when absent, null or not an integer (e.g.
    /// `time_step_rank: "auto"`), so that only values that can be compared are compared.
    pub fn usize(&self, key: &str) -> Option<usize> {
        self.json.get(key)?.as_u64().map(|v| v as usize)
    }

    /// `key` as a boolean; `None` when absent or not a boolean.
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.json.get(key)?.as_bool()
    }

    /// `key` as a list of floats (see [`f64`](Self::f64) for the accepted spellings).
    pub fn f64_list(&self, key: &str) -> Result<Option<Vec<f64>>> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    value_f64(v)
                        .ok_or_else(|| Error::format(format!("{}: '{key}' holds {v}, numbers expected", self.name)))
                })
                .collect::<Result<Vec<f64>>>()
                .map(Some),
            Some(v) => Err(Error::format(format!("{}: '{key}' is {v}, a list was expected", self.name))),
        }
    }

    /// Checks that the config's integer `key`, when present, equals `found` (read from the
    /// tensor `tensor` of the checkpoint `file`): a format error naming both otherwise.
    pub fn expect(&self, key: &str, found: usize, file: &str, tensor: &str) -> Result<()> {
        match self.usize(key) {
            Some(v) if v != found => Err(Error::format(format!(
                "{}: '{key}' is {v}, but {file} has {found} (from tensor '{tensor}'); the config does not \
                 belong to these weights",
                self.name
            ))),
            _ => Ok(()),
        }
    }
}

fn value_f64(v: &Value) -> Option<f64> {
    let from_str = |s: &str| match s.trim() {
        "Infinity" | "inf" | "+inf" | "+Infinity" => Some(f64::INFINITY),
        "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        other => other.parse().ok(),
    };
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => from_str(s),
        Value::Object(o) => o.get("__float__")?.as_str().and_then(from_str),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_infinity_spellings_parse() {
        let a = HfConfig::parse(r#"{"time_step_limit": [0.0, {"__float__": "Infinity"}], "n": 2}"#, "a").unwrap();
        let b = HfConfig::parse("{\"time_step_limit\": [0.0, Infinity], \"s\": \"NaN Infinity\"}", "b").unwrap();
        for c in [&a, &b] {
            assert_eq!(c.f64_list("time_step_limit").unwrap(), Some(vec![0.0, f64::INFINITY]));
        }
        assert_eq!(b.json["s"], "NaN Infinity", "tokens inside strings are left alone");
        assert_eq!(a.usize("n"), Some(2));
        let neg = HfConfig::parse("{\"x\": -Infinity}", "c").unwrap();
        assert_eq!(neg.f64("x").unwrap(), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn malformed_config_names_the_file() {
        let e = HfConfig::parse("{\"a\": ", "/m/config.json").unwrap_err();
        assert!(e.to_string().contains("/m/config.json"), "{e}");
        let e = HfConfig::parse("[1, 2]", "/m/config.json").unwrap_err();
        assert!(e.to_string().contains("object"), "{e}");
    }
}
