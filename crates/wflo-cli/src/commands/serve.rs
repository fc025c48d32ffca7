//! `wflo serve`: the HTTP API, live events and the web page (wflo-server), on this
//! configuration's database; runs started through it execute here (or on Temporal when
//! TEMPORAL_ADDRESS is set).

use crate::exit::{self, coded};
use std::net::SocketAddr;
use wflo_server::{Server, ServerConfig};

pub(crate) async fn serve(
    bind: SocketAddr,
    cors: Vec<String>,
    secure_cookies: bool,
    public_url: Option<String>,
) -> anyhow::Result<u8> {
    let config = super::config()?.with_driver_name(wflo_server::driver_name());
    // Runs a dead instance abandoned are looked for twice per lease: taken over soon after
    // their lease expires.
    let lease = config
        .lease_ttl()
        .unwrap_or(std::time::Duration::from_secs(30));
    let adopt_every = (lease / 2).max(std::time::Duration::from_secs(1));
    let wflo = super::connect(config).await?;
    use wflo_core::db::Executor as _;
    let tokens = wflo.db().api_tokens().list().await?;
    let mut server_config = ServerConfig::builder(bind)
        .cors_origins(cors)
        .secure_cookies(secure_cookies)
        .adopt_every(Some(adopt_every));
    if let Some(url) = public_url {
        server_config = server_config.public_url(url);
    }
    let server_config = server_config
        .build()
        .map_err(|e| coded(exit::USAGE, e.to_string()))?;
    let server = Server::new(wflo.clone(), server_config);
    eprintln!(
        "wflo serving on http://{bind} (API at /api/v1, page at /ui/runs, sending webhooks); stop with Ctrl-C or SIGTERM"
    );
    if tokens.iter().all(|t| t.revoked_at.is_some()) {
        eprintln!(
            "no API token exists yet: create one with `wflo tokens create --name NAME --role admin`"
        );
    }
    let result = server.serve(super::worker::shutdown_signal()).await;
    wflo.shutdown().await;
    match result {
        Ok(()) => Ok(0),
        Err(e @ wflo_server::Error::Listen { .. }) => Err(coded(exit::USAGE, e.to_string())),
        Err(e) => Err(e.into()),
    }
}
