//! `wflo relay [--once]`: the outbox to Kafka.

use crate::exit::{USAGE, coded};
use wflo_core::bus::CancellationToken;

pub(crate) async fn relay(once: bool) -> anyhow::Result<u8> {
    let config = super::config()?;
    if config.kafka_bootstrap().is_none() {
        return Err(coded(
            USAGE,
            "KAFKA_BOOTSTRAP_SERVERS is not set: set it to the brokers (e.g. 127.0.0.1:9092); \
             until then events wait in the outbox",
        ));
    }
    let wflo = super::connect(config).await?;
    let relay = wflo
        .relay()
        .await
        .map_err(|e| anyhow::Error::new(e).context("cannot reach Kafka"))?
        .ok_or_else(|| coded(USAGE, "KAFKA_BOOTSTRAP_SERVERS is not set"))?;
    let waiting = relay.lag().await?;
    eprintln!("{waiting} event(s) waiting in the outbox");
    if once {
        let mut total = 0usize;
        loop {
            let n = relay.relay_once().await?;
            total += n;
            if n == 0 || relay.lag().await? == 0 {
                break;
            }
        }
        println!("published {total} event(s); {} waiting", relay.lag().await?);
        return Ok(0);
    }
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    eprintln!("relaying until interrupted (ctrl-c)");
    relay.run(stop).await?;
    let c = relay.counts();
    println!(
        "published {} event(s); {} waiting",
        c.published,
        relay.lag().await?
    );
    Ok(0)
}
