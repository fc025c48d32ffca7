//! Record and replay: a cassette of request hash -> response, for tests, demos and offline
//! reruns.
//!
//! A cassette is a JSON Lines file; each line is
//! `{"hash": "<sha256 hex>", "request": {...}, "response": {...}}`. The hash is the sha256 of
//! the request's canonical JSON (object keys sorted, no whitespace), so it is stable across
//! runs, machines and field order.

use crate::error::{Error, Result};
use crate::provider::LlmProvider;
use crate::request::ChatRequest;
use crate::response::ChatResponse;
use crate::stream::{ChatStream, StreamEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::io::AsyncWriteExt;
use wflo_types::canonical_json;

/// sha256 (hex) of the request's canonical JSON.
pub fn request_hash(req: &ChatRequest) -> String {
    let v = serde_json::to_value(req).unwrap_or(Value::Null);
    hex::encode(Sha256::digest(canonical_json(&v).as_bytes()))
}

#[derive(Serialize, Deserialize)]
struct Entry {
    hash: String,
    request: Value,
    response: ChatResponse,
}

/// Replays recorded responses, or records them from a real provider.
#[derive(Debug)]
pub struct ReplayProvider {
    path: PathBuf,
    entries: RwLock<HashMap<String, ChatResponse>>,
    recorder: Option<Recorder>,
}

#[derive(Debug)]
struct Recorder {
    inner: Arc<dyn LlmProvider>,
    file: tokio::sync::Mutex<()>,
}

fn cassette_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Cassette {
        cassette: path.display().to_string(),
        message: message.into(),
    }
}

fn load(path: &Path) -> Result<HashMap<String, ChatResponse>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        cassette_err(
            path,
            format!("cannot read it ({e}); record it first or fix the path"),
        )
    })?;
    let mut entries = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: Entry = serde_json::from_str(line).map_err(|e| {
            cassette_err(path, format!("line {} is not a cassette entry: {e}", i + 1))
        })?;
        // The first recording of a request wins, so a rerun answers as the first run did.
        entries.entry(e.hash).or_insert(e.response);
    }
    Ok(entries)
}

impl ReplayProvider {
    /// Answers only from the cassette at `path` (which must exist).
    pub fn replay(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let entries = load(&path)?;
        Ok(Self {
            path,
            entries: RwLock::new(entries),
            recorder: None,
        })
    }

    /// Answers from the cassette when it holds the request; otherwise asks `inner` and appends
    /// the answer to the cassette (created if missing).
    pub fn record(inner: Arc<dyn LlmProvider>, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let entries = if path.exists() {
            load(&path)?
        } else {
            HashMap::new()
        };
        Ok(Self {
            path,
            entries: RwLock::new(entries),
            recorder: Some(Recorder {
                inner,
                file: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The cassette file.
    pub fn cassette(&self) -> &Path {
        &self.path
    }

    /// Number of distinct requests in the cassette.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when the cassette holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, hash: &str) -> Option<ChatResponse> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .cloned()
    }

    fn miss(&self, hash: String) -> Error {
        Error::CassetteMiss {
            hash,
            cassette: self.path.display().to_string(),
        }
    }

    async fn append(
        &self,
        rec: &Recorder,
        hash: &str,
        req: &ChatRequest,
        resp: &ChatResponse,
    ) -> Result<()> {
        let entry = Entry {
            hash: hash.to_string(),
            request: serde_json::to_value(req).map_err(|e| {
                cassette_err(&self.path, format!("request does not serialize: {e}"))
            })?,
            response: resp.clone(),
        };
        let mut line = serde_json::to_string(&entry)
            .map_err(|e| cassette_err(&self.path, format!("entry does not serialize: {e}")))?;
        line.push('\n');
        let _guard = rec.file.lock().await;
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(|e| cassette_err(&self.path, format!("cannot open it for append: {e}")))?;
        f.write_all(line.as_bytes())
            .await
            .map_err(|e| cassette_err(&self.path, format!("cannot append: {e}")))?;
        f.flush()
            .await
            .map_err(|e| cassette_err(&self.path, format!("cannot flush: {e}")))?;
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(hash.to_string())
            .or_insert_with(|| resp.clone());
        Ok(())
    }
}

fn replay_stream(resp: ChatResponse) -> ChatStream {
    let mut events = Vec::new();
    if !resp.text.is_empty() {
        events.push(Ok(StreamEvent::TextDelta(resp.text.clone())));
    }
    for (index, c) in resp.tool_calls.iter().enumerate() {
        events.push(Ok(StreamEvent::ToolCallDelta {
            index,
            id: Some(c.id.clone()),
            name: Some(c.name.clone()),
            arguments: c.arguments.clone(),
        }));
    }
    events.push(Ok(StreamEvent::Done(resp)));
    ChatStream::new(futures::stream::iter(events))
}

#[async_trait::async_trait]
impl LlmProvider for ReplayProvider {
    fn name(&self) -> &str {
        "replay"
    }

    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse> {
        req.validate()?;
        let hash = request_hash(req);
        if let Some(r) = self.lookup(&hash) {
            return Ok(r);
        }
        let Some(rec) = &self.recorder else {
            return Err(self.miss(hash));
        };
        let resp = rec.inner.complete(req).await?;
        self.append(rec, &hash, req, &resp).await?;
        Ok(resp)
    }

    async fn stream(&self, req: &ChatRequest) -> Result<ChatStream> {
        req.validate()?;
        let hash = request_hash(req);
        if let Some(r) = self.lookup(&hash) {
            return Ok(replay_stream(r));
        }
        let Some(rec) = &self.recorder else {
            return Err(self.miss(hash));
        };
        // Record the assembled response once the inner stream is done.
        let resp = rec.inner.stream(req).await?.into_response().await?;
        self.append(rec, &hash, req, &resp).await?;
        Ok(replay_stream(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_depends_on_every_field_and_nothing_else() {
        let a = ChatRequest::builder("m")
            .user("hi")
            .temperature(0.5)
            .build()
            .unwrap();
        let b = ChatRequest::builder("m")
            .user("hi")
            .temperature(0.5)
            .build()
            .unwrap();
        assert_eq!(request_hash(&a), request_hash(&b));
        assert_eq!(request_hash(&a).len(), 64);
        let c = ChatRequest::builder("m")
            .user("hi")
            .temperature(0.6)
            .build()
            .unwrap();
        assert_ne!(request_hash(&a), request_hash(&c));
        let d = ChatRequest::builder("m2")
            .user("hi")
            .temperature(0.5)
            .build()
            .unwrap();
        assert_ne!(request_hash(&a), request_hash(&d));
    }
}
