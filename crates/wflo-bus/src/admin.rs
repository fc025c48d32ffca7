//! The two admin requests rskafka 0.6 lacks: CreateTopics with topic configs (rskafka creates
//! topics without configs) and DescribeConfigs (to read a topic's settings back). Plain Kafka
//! wire protocol over one short-lived connection to a bootstrap server; brokers since Kafka 2.8
//! forward CreateTopics to the controller, Tansu and Redpanda accept it directly.

use crate::topics::TopicSpec;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CREATE_TOPICS: i16 = 19;
const DESCRIBE_CONFIGS: i16 = 32;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const RESOURCE_TOPIC: i8 = 2;

#[derive(Default)]
struct Buf(Vec<u8>);

impl Buf {
    fn i8(&mut self, v: i8) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i16(&mut self, v: i16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.i16(s.len() as i16);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.b.len() < n {
            return Err(Error::Broker {
                context: "reading an admin response".into(),
                reason: "response ended early".into(),
                retriable: false,
            });
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn i8(&mut self) -> Result<i8> {
        Ok(self.take(1)?[0] as i8)
    }
    fn i16(&mut self) -> Result<i16> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn nstr(&mut self) -> Result<Option<String>> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        let b = self.take(n as usize)?;
        Ok(Some(String::from_utf8_lossy(b).into_owned()))
    }
    fn str(&mut self) -> Result<String> {
        Ok(self.nstr()?.unwrap_or_default())
    }
}

/// One request/response on a fresh connection to the first bootstrap server that answers.
async fn call(
    servers: &[String],
    client_id: &str,
    timeout: Duration,
    api_key: i16,
    version: i16,
    body: &[u8],
) -> Result<Vec<u8>> {
    let mut last = String::from("no bootstrap server configured");
    for server in servers {
        let attempt = async {
            let mut s = TcpStream::connect(server.as_str()).await?;
            let mut req = Buf::default();
            req.i16(api_key).i16(version).i32(1).str(client_id);
            req.0.extend_from_slice(body);
            let mut frame = (req.0.len() as i32).to_be_bytes().to_vec();
            frame.extend_from_slice(&req.0);
            s.write_all(&frame).await?;
            let mut len = [0u8; 4];
            s.read_exact(&mut len).await?;
            let n = i32::from_be_bytes(len).max(0) as usize;
            let mut resp = vec![0u8; n];
            s.read_exact(&mut resp).await?;
            Ok::<_, std::io::Error>(resp)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(resp)) if resp.len() >= 4 => return Ok(resp[4..].to_vec()),
            Ok(Ok(_)) => last = format!("{server}: empty response"),
            Ok(Err(e)) => last = format!("{server}: {e}"),
            Err(_) => last = format!("{server}: no answer within {timeout:?}"),
        }
    }
    Err(Error::Unreachable {
        servers: servers.join(","),
        reason: last.to_lowercase(),
    })
}

/// Creates `spec` with its configs; an existing topic is fine (`Ok(false)`).
pub(crate) async fn create_topic(
    servers: &[String],
    client_id: &str,
    timeout: Duration,
    spec: &TopicSpec,
) -> Result<bool> {
    let mut b = Buf::default();
    b.i32(1)
        .str(&spec.name)
        .i32(spec.partitions)
        .i16(spec.replication_factor)
        .i32(0);
    let configs = spec.configs();
    b.i32(configs.len() as i32);
    for (k, v) in &configs {
        b.str(k).str(v);
    }
    b.i32(timeout.as_millis().min(i32::MAX as u128) as i32);
    b.i8(0); // validate_only = false
    // CreateTopics v2: the oldest version Kafka 4 still accepts and the newest without tagged fields.
    let resp = call(servers, client_id, timeout, CREATE_TOPICS, 2, &b.0).await?;
    let mut r = Reader { b: &resp };
    let _throttle = r.i32()?;
    let n = r.i32()?;
    for _ in 0..n {
        let name = r.str()?;
        let code = r.i16()?;
        let msg = r.nstr()?;
        if name != spec.name {
            continue;
        }
        return match code {
            0 => Ok(true),
            TOPIC_ALREADY_EXISTS => Ok(false),
            code => Err(Error::TopicSetup {
                topic: spec.name.clone(),
                reason: format!(
                    "the broker refused to create it (kafka error {code}{})",
                    msg.map(|m| format!(": {m}")).unwrap_or_default()
                ),
            }),
        };
    }
    Err(Error::TopicSetup {
        topic: spec.name.clone(),
        reason: "the broker's answer did not mention the topic".into(),
    })
}

/// The configs of a topic (name to value).
pub(crate) async fn describe_topic_configs(
    servers: &[String],
    client_id: &str,
    timeout: Duration,
    topic: &str,
) -> Result<BTreeMap<String, String>> {
    let mut b = Buf::default();
    b.i32(1).i8(RESOURCE_TOPIC).str(topic).i32(-1); // all config names
    b.i8(0); // include_synonyms = false
    let resp = call(servers, client_id, timeout, DESCRIBE_CONFIGS, 1, &b.0).await?;
    let mut r = Reader { b: &resp };
    let _throttle = r.i32()?;
    let n = r.i32()?;
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let code = r.i16()?;
        let msg = r.nstr()?;
        let _rtype = r.i8()?;
        let name = r.str()?;
        if code != 0 {
            return Err(Error::TopicSetup {
                topic: name,
                reason: format!(
                    "the broker refused to describe it (kafka error {code}{})",
                    msg.map(|m| format!(": {m}")).unwrap_or_default()
                ),
            });
        }
        let c = r.i32()?;
        for _ in 0..c.max(0) {
            let k = r.str()?;
            let v = r.nstr()?;
            let _read_only = r.i8()?;
            let _source = r.i8()?;
            let _sensitive = r.i8()?;
            let syn = r.i32()?;
            for _ in 0..syn.max(0) {
                r.str()?;
                r.nstr()?;
                r.i8()?;
            }
            if let Some(v) = v {
                out.insert(k, v);
            }
        }
    }
    Ok(out)
}
