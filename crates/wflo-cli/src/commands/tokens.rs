//! `wflo tokens create|list|revoke`: the API tokens of `wflo serve`. A token's secret is shown
//! once, when it is created; only its hash is stored.

use crate::format::Table;
use wflo_core::db::Executor as _;
use wflo_core::types::Role;

pub(crate) async fn create(name: String, role: Role) -> anyhow::Result<u8> {
    let wflo = super::connect(super::config()?).await?;
    let secret = wflo_server::new_token();
    let t = wflo
        .db()
        .api_tokens()
        .create(&name, role, &wflo_server::hash_token(&secret))
        .await?;
    eprintln!(
        "created token `{}` with the {} role; it is shown this once, store it now:",
        t.name,
        t.role.label()
    );
    println!("{secret}");
    Ok(0)
}

pub(crate) async fn list() -> anyhow::Result<u8> {
    let wflo = super::connect(super::config()?).await?;
    let tokens = wflo.db().api_tokens().list().await?;
    if tokens.is_empty() {
        println!("no API tokens; create one with `wflo tokens create --name NAME --role ROLE`");
        return Ok(0);
    }
    let mut t = Table::new(&["name", "role", "created", "last used", "state"]);
    let when = |d: Option<chrono::DateTime<chrono::Utc>>| {
        d.map(|d| d.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "never".into())
    };
    for tok in &tokens {
        t.row(vec![
            tok.name.clone(),
            tok.role.label().to_string(),
            when(Some(tok.created_at)),
            when(tok.last_used_at),
            match tok.revoked_at {
                Some(r) => format!("revoked {}", r.format("%Y-%m-%d %H:%M")),
                None => "active".into(),
            },
        ]);
    }
    print!("{}", t.render());
    Ok(0)
}

pub(crate) async fn revoke(name: String) -> anyhow::Result<u8> {
    let wflo = super::connect(super::config()?).await?;
    let t = wflo.db().api_tokens().revoke(&name).await?;
    println!(
        "revoked token `{}` ({}); it is refused from now on",
        t.name,
        t.role.label()
    );
    Ok(0)
}

/// Parses a role name (viewer, approver, operator, admin).
pub(crate) fn parse_role(s: &str) -> Result<Role, String> {
    s.parse::<Role>()
        .map_err(|_| format!("`{s}` is not a role; use viewer, approver, operator or admin"))
}
