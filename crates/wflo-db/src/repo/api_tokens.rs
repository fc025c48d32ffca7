use super::{db_err, parse_stored, repository};
use crate::entity::api_token as at;
use crate::{Error, Result};
use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, Set,
};
use uuid::Uuid;
use wflo_types::Role;

/// An API token of the HTTP server, as stored: its secret is known only by its SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    /// Row id.
    pub id: Uuid,
    /// Who or what holds it; the actor recorded for what it does.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last accepted (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revoked (no longer accepted) since.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<at::Model> for ApiToken {
    type Error = Error;
    fn try_from(m: at::Model) -> Result<Self> {
        Ok(ApiToken {
            id: m.id,
            name: m.name,
            role: parse_stored(&m.role)?,
            created_at: m.created_at,
            last_used_at: m.last_used_at,
            revoked_at: m.revoked_at,
        })
    }
}

repository!(
    /// API tokens: created with their hash, looked up by hash, revoked by name.
    ApiTokens
);

const ENTITY: &str = "api token";

impl<E: crate::Executor> ApiTokens<'_, E> {
    /// Stores a token by the hex SHA-256 of its secret. A name held by an unrevoked token is
    /// [`Error::AlreadyExists`].
    pub async fn create(&self, name: &str, role: Role, token_hash: &str) -> Result<ApiToken> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(Error::Invalid {
                entity: ENTITY,
                detail: "a token's name must be 1 to 100 characters".into(),
            });
        }
        if token_hash.len() != 64 || !token_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid {
                entity: ENTITY,
                detail: "the token hash must be 64 hex digits (a sha-256)".into(),
            });
        }
        at::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(name.to_string()),
            role: Set(role.as_str().into()),
            token_hash: Set(token_hash.to_ascii_lowercase()),
            created_at: Set(Utc::now()),
            last_used_at: Set(None),
            revoked_at: Set(None),
        }
        .insert(self.conn())
        .await
        .map_err(|e| match db_err(ENTITY, "creating an api token")(e) {
            Error::AlreadyExists { entity, .. } => Error::AlreadyExists {
                entity,
                detail: format!(
                    "an active token is named `{name}`; revoke it first or choose another name"
                ),
            },
            other => other,
        })?
        .try_into()
    }

    /// The unrevoked token whose secret hashes to `token_hash`, marking it used (at most one
    /// write a minute per token).
    pub async fn authenticate(&self, token_hash: &str) -> Result<Option<ApiToken>> {
        let Some(m) = at::Entity::find()
            .filter(at::Column::TokenHash.eq(token_hash.to_ascii_lowercase()))
            .filter(at::Column::RevokedAt.is_null())
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "looking up an api token"))?
        else {
            return Ok(None);
        };
        let now = Utc::now();
        if m.last_used_at
            .is_none_or(|t| now - t > Duration::minutes(1))
        {
            at::Entity::update_many()
                .col_expr(at::Column::LastUsedAt, Expr::value(now))
                .filter(at::Column::Id.eq(m.id))
                .exec(self.conn())
                .await
                .map_err(db_err(ENTITY, "marking an api token used"))?;
        }
        Ok(Some(m.try_into()?))
    }

    /// Every token, revoked ones included, oldest first.
    pub async fn list(&self) -> Result<Vec<ApiToken>> {
        at::Entity::find()
            .order_by_asc(at::Column::CreatedAt)
            .order_by_asc(at::Column::Id)
            .all(self.conn())
            .await
            .map_err(db_err(ENTITY, "listing api tokens"))?
            .into_iter()
            .map(ApiToken::try_from)
            .collect()
    }

    /// Revokes the unrevoked token named `name`: refused from now on. An unknown name is
    /// [`Error::NotFound`].
    pub async fn revoke(&self, name: &str) -> Result<ApiToken> {
        let now = Utc::now();
        let res = at::Entity::update_many()
            .col_expr(at::Column::RevokedAt, Expr::value(now))
            .filter(at::Column::Name.eq(name.trim()))
            .filter(at::Column::RevokedAt.is_null())
            .exec_with_returning(self.conn())
            .await
            .map_err(db_err(ENTITY, "revoking an api token"))?;
        match res.into_iter().next() {
            Some(m) => m.try_into(),
            None => Err(Error::NotFound {
                entity: ENTITY,
                id: format!("`{name}` (no unrevoked token has this name)"),
            }),
        }
    }

    /// Whether any unrevoked admin token exists.
    pub async fn any_admin(&self) -> Result<bool> {
        Ok(at::Entity::find()
            .filter(
                Condition::all()
                    .add(at::Column::Role.eq(Role::Admin.as_str()))
                    .add(at::Column::RevokedAt.is_null()),
            )
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "looking up admin tokens"))?
            .is_some())
    }
}
