//! [`LlmCacheKey`]: the namespace and the SHA-256 of the canonical JSON of every parameter that
//! changes the answer.

use crate::config::check_name;
use crate::{Error, Result};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use wflo_types::canonical_json;

/// Version of the key derivation: bump it when the canonical form changes.
const KEY_FORMAT: u32 = 1;

/// The cache key of one LLM request: a namespace (tenant) and the SHA-256 of a canonical JSON of
/// every parameter that changes the answer. Built with [`LlmCacheKey::builder`].
#[derive(Debug, Clone, PartialEq)]
pub struct LlmCacheKey {
    namespace: String,
    digest: String,
    temperature: Option<f64>,
    canonical: String,
}

impl LlmCacheKey {
    /// Starts a key for a request to `model` in `namespace` (characters among
    /// `a-z A-Z 0-9 _ - . /`).
    pub fn builder(namespace: impl Into<String>, model: impl Into<String>) -> LlmCacheKeyBuilder {
        LlmCacheKeyBuilder {
            namespace: namespace.into(),
            model: model.into(),
            fields: BTreeMap::new(),
            temperature: None,
            bad: None,
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Hex SHA-256 of the canonical request.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The sampling temperature, when given.
    pub fn temperature(&self) -> Option<f64> {
        self.temperature
    }

    /// The canonical JSON the digest is computed from (sorted keys, no whitespace).
    pub fn canonical_json(&self) -> &str {
        &self.canonical
    }

    /// Where the entry lives: `llm:NAMESPACE:DIGEST` (below the client's key prefix in Redis).
    pub(super) fn storage_key(&self) -> String {
        format!("llm:{}:{}", self.namespace, self.digest)
    }
}

/// Builder of [`LlmCacheKey`]. Every parameter given goes into the key; parameters not given are
/// left out (so adding an unset one later does not change existing keys).
#[derive(Debug, Clone)]
pub struct LlmCacheKeyBuilder {
    namespace: String,
    model: String,
    fields: BTreeMap<String, Value>,
    temperature: Option<f64>,
    bad: Option<String>,
}

impl LlmCacheKeyBuilder {
    fn field(mut self, name: &str, value: Value) -> Self {
        self.fields.insert(name.to_string(), value);
        self
    }

    fn float(mut self, name: &str, v: f64) -> Self {
        match serde_json::Number::from_f64(v) {
            Some(n) => self.field(name, Value::Number(n)),
            None => {
                self.bad = Some(format!("{name} must be a finite number, got {v}"));
                self
            }
        }
    }

    /// The conversation (any JSON: the provider's message list).
    pub fn messages(self, messages: Value) -> Self {
        self.field("messages", messages)
    }

    /// Sampling temperature. Above 0 the cache refuses the request unless
    /// [`cache_nonzero_temperature`](super::LlmCacheConfigBuilder::cache_nonzero_temperature) is
    /// on.
    pub fn temperature(mut self, t: f64) -> Self {
        self.temperature = Some(t);
        self.float("temperature", t)
    }

    /// Maximum output tokens.
    pub fn max_tokens(self, n: u32) -> Self {
        self.field("max_tokens", Value::from(n))
    }

    /// Nucleus sampling.
    pub fn top_p(self, p: f64) -> Self {
        self.float("top_p", p)
    }

    /// Tool definitions.
    pub fn tools(self, tools: Value) -> Self {
        self.field("tools", tools)
    }

    /// Sampling seed.
    pub fn seed(self, seed: i64) -> Self {
        self.field("seed", Value::from(seed))
    }

    /// Response format (JSON schema, text, ...).
    pub fn response_format(self, format: Value) -> Self {
        self.field("response_format", format)
    }

    /// Stop sequences.
    pub fn stop(self, stop: Vec<String>) -> Self {
        self.field("stop", Value::from(stop))
    }

    /// The system prompt, when the provider takes it apart from the messages.
    pub fn system(self, system: impl Into<String>) -> Self {
        self.field("system", Value::from(system.into()))
    }

    /// Any other parameter that changes the answer (`frequency_penalty`, `tool_choice`,
    /// `reasoning_effort`, provider name, ...). Kept apart from the named ones.
    pub fn param(mut self, name: impl Into<String>, value: Value) -> Self {
        let extra = self
            .fields
            .entry("params".to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = extra {
            m.insert(name.into(), value);
        }
        self
    }

    /// Validates and hashes.
    pub fn build(self) -> Result<LlmCacheKey> {
        check_namespace(&self.namespace)?;
        if let Some(bad) = self.bad {
            return Err(Error::InvalidConfig {
                what: "cache key",
                reason: bad,
            });
        }
        if self.model.is_empty() {
            return Err(Error::InvalidConfig {
                what: "cache key",
                reason: "the model name is empty".into(),
            });
        }
        let mut root = Map::new();
        root.insert("format".into(), Value::from(KEY_FORMAT));
        root.insert("namespace".into(), Value::from(self.namespace.clone()));
        root.insert("model".into(), Value::from(self.model));
        for (k, v) in self.fields {
            root.insert(k, v);
        }
        let canonical = canonical_json(&Value::Object(root));
        let digest = hex::encode(Sha256::digest(canonical.as_bytes()));
        Ok(LlmCacheKey {
            namespace: self.namespace,
            digest,
            temperature: self.temperature,
            canonical,
        })
    }
}

/// A namespace is a name usable in Redis keys, without `:`.
pub(super) fn check_namespace(ns: &str) -> Result<()> {
    check_name("cache namespace", ns)?;
    if ns.contains(':') {
        return Err(Error::InvalidName {
            what: "cache namespace (no `:`)",
            value: ns.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(f: impl FnOnce(LlmCacheKeyBuilder) -> LlmCacheKeyBuilder) -> LlmCacheKey {
        f(
            LlmCacheKey::builder("t1", "gpt-4o")
                .messages(json!([{"role": "user", "content": "hi"}])),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn key_is_canonical_and_sensitive() {
        let a = LlmCacheKey::builder("t1", "m")
            .messages(json!([{"role": "user", "content": "hi", "name": "x"}]))
            .param("b", json!(1))
            .param("a", json!({"z": 1, "y": 2}))
            .build()
            .unwrap();
        let b = LlmCacheKey::builder("t1", "m")
            .param("a", json!({"y": 2, "z": 1}))
            .param("b", json!(1))
            .messages(json!([{"name": "x", "content": "hi", "role": "user"}]))
            .build()
            .unwrap();
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest().len(), 64);
        assert!(!a.canonical_json().contains(' '));

        let base = key(|b| b.temperature(0.0).max_tokens(100));
        let variants = [
            key(|b| b.temperature(0.5).max_tokens(100)),
            key(|b| b.temperature(0.0).max_tokens(101)),
            key(|b| b.temperature(0.0).max_tokens(100).top_p(0.9)),
            key(|b| b.temperature(0.0).max_tokens(100).seed(7)),
            key(|b| {
                b.temperature(0.0)
                    .max_tokens(100)
                    .tools(json!([{"name": "f"}]))
            }),
            key(|b| {
                b.temperature(0.0)
                    .max_tokens(100)
                    .response_format(json!({"type": "json_object"}))
            }),
            key(|b| b.temperature(0.0).max_tokens(100).stop(vec!["\n".into()])),
            key(|b| b.temperature(0.0).max_tokens(100).system("be brief")),
            LlmCacheKey::builder("t2", "gpt-4o")
                .messages(json!([{"role": "user", "content": "hi"}]))
                .temperature(0.0)
                .max_tokens(100)
                .build()
                .unwrap(),
            LlmCacheKey::builder("t1", "gpt-4o-mini")
                .messages(json!([{"role": "user", "content": "hi"}]))
                .temperature(0.0)
                .max_tokens(100)
                .build()
                .unwrap(),
        ];
        for v in &variants {
            assert_ne!(v.digest(), base.digest(), "{}", v.canonical_json());
        }
        assert_eq!(base, key(|b| b.max_tokens(100).temperature(0.0)));
    }

    #[test]
    fn key_digest_is_pinned() {
        // Entries already stored must still be found: this canonical text and digest were
        // computed independently (Python's json.dumps(sort_keys=True, separators=(',', ':'),
        // ensure_ascii=False) + sha256).
        let k = LlmCacheKey::builder("t1", "gpt-4o")
            .messages(json!([{"role": "user", "content": "héllo \"x\"\n"}]))
            .temperature(0.0)
            .max_tokens(100)
            .top_p(0.9)
            .seed(-7)
            .stop(vec!["\n".into()])
            .system("be brief")
            .tools(json!([{"name": "f", "b": null, "a": true}]))
            .response_format(json!({"type": "json_object"}))
            .param("z", json!(1.5))
            .param("a", json!([3, {"y": 2, "x": 1}]))
            .build()
            .unwrap();
        assert_eq!(
            k.canonical_json(),
            r#"{"format":1,"max_tokens":100,"messages":[{"content":"héllo \"x\"\n","role":"user"}],"model":"gpt-4o","namespace":"t1","params":{"a":[3,{"x":1,"y":2}],"z":1.5},"response_format":{"type":"json_object"},"seed":-7,"stop":["\n"],"system":"be brief","temperature":0.0,"tools":[{"a":true,"b":null,"name":"f"}],"top_p":0.9}"#
        );
        assert_eq!(
            k.digest(),
            "c123455069ee890985403963aba71679b1139eeaee66ce2cec408ca36245d257"
        );
    }

    #[test]
    fn key_refuses_bad_input() {
        assert!(LlmCacheKey::builder("a:b", "m").build().is_err());
        assert!(LlmCacheKey::builder("a*", "m").build().is_err());
        assert!(LlmCacheKey::builder("ok", "").build().is_err());
        assert!(
            LlmCacheKey::builder("ok", "m")
                .temperature(f64::NAN)
                .build()
                .is_err()
        );
    }
}
