//! A Kafka Metadata (v0) request over a plain TCP socket: the readiness probe for the broker.
//!
//! xtask keeps a small dependency set, and a metadata round trip is a handful of bytes:
//! request = size, api_key 3, api_version 0, correlation id, client id, empty topic array
//! (all topics); the response starts with the same correlation id and the broker array.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const CORRELATION_ID: i32 = 0x5766_6c6f; // "Wflo"

/// Sends a Metadata request and returns a description with the broker count and version.
pub(crate) fn metadata(addr: &str) -> Result<String> {
    let sock = addr
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("resolve {addr}"))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(1))
        .with_context(|| format!("connect to the Kafka-API broker at {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;

    let client_id = b"wflo-xtask";
    let mut body = Vec::new();
    body.extend_from_slice(&3i16.to_be_bytes()); // Metadata
    body.extend_from_slice(&0i16.to_be_bytes()); // v0
    body.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    body.extend_from_slice(&0i32.to_be_bytes()); // no topics named: all topics
    let mut request = (body.len() as i32).to_be_bytes().to_vec();
    request.extend_from_slice(&body);
    stream.write_all(&request)?;

    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .context("read the metadata response size")?;
    let size = i32::from_be_bytes(size);
    if !(8..=64 * 1024 * 1024).contains(&size) {
        bail!("implausible metadata response size {size}");
    }
    let mut response = vec![0u8; size as usize];
    stream.read_exact(&mut response)?;
    let correlation = i32::from_be_bytes(response[0..4].try_into()?);
    if correlation != CORRELATION_ID {
        bail!("metadata response carries correlation id {correlation}, expected {CORRELATION_ID}");
    }
    let brokers = i32::from_be_bytes(response[4..8].try_into()?);
    if brokers < 1 {
        bail!("broker answered metadata with {brokers} brokers");
    }
    let version = crate::services::tansu_binary()
        .ok()
        .and_then(|bin| crate::util::output(bin.to_str()?, &["--version"]).ok())
        .unwrap_or_else(|| "Kafka-API broker".to_string());
    Ok(format!("{version} ({brokers} broker(s) in metadata)"))
}
