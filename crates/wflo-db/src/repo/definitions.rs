use super::{db_err, repository};
use crate::entity::definition as def;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::Value;
use uuid::Uuid;

/// A stored, versioned workflow definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// Row id.
    pub id: Uuid,
    /// Workflow name; unique together with `version`.
    pub name: String,
    /// Version, from 1.
    pub version: i32,
    /// Free text.
    pub description: Option<String>,
    /// The definition document.
    pub definition: Value,
    /// When stored.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<def::Model> for Definition {
    fn from(m: def::Model) -> Self {
        Definition {
            id: m.id,
            name: m.name,
            version: m.version,
            description: m.description,
            definition: m.definition,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// A definition to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDefinition {
    /// Workflow name.
    pub name: String,
    /// An explicit version, or `None` for the next free one (assigned atomically).
    pub version: Option<i32>,
    /// Free text.
    pub description: Option<String>,
    /// The definition document.
    pub definition: Value,
}

impl NewDefinition {
    /// A definition with the next free version.
    pub fn new(name: impl Into<String>, definition: Value) -> Self {
        NewDefinition {
            name: name.into(),
            version: None,
            description: None,
            definition,
        }
    }
}

repository!(
    /// Workflow definitions: `(name, version)` is unique.
    Definitions
);

const ENTITY: &str = "workflow definition";

impl<E: crate::Executor> Definitions<'_, E> {
    /// Stores a definition. With `version: None` the next version for the name is taken; two
    /// concurrent writers of one name get distinct versions. An explicit version that exists is
    /// [`Error::AlreadyExists`].
    pub async fn create(&self, new: NewDefinition) -> Result<Definition> {
        if new.name.trim().is_empty() {
            return Err(Error::Invalid {
                entity: ENTITY,
                detail: "the name must not be empty".into(),
            });
        }
        if let Some(v) = new.version {
            return self.insert(&new, v).await;
        }
        // Take max+1; a concurrent writer that took the same version makes ours a unique
        // violation, and we try the next one.
        let mut attempts = 0;
        loop {
            let next = self.latest_version(&new.name).await?.unwrap_or(0) + 1;
            match self.insert(&new, next).await {
                Err(e) if e.is_unique_violation() && attempts < 20 => attempts += 1,
                other => return other,
            }
        }
    }

    async fn insert(&self, new: &NewDefinition, version: i32) -> Result<Definition> {
        let now = Utc::now();
        def::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(new.name.clone()),
            version: Set(version),
            description: Set(new.description.clone()),
            definition: Set(new.definition.clone()),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(self.conn())
        .await
        .map(Definition::from)
        .map_err(db_err(ENTITY, "storing a workflow definition"))
    }

    async fn latest_version(&self, name: &str) -> Result<Option<i32>> {
        def::Entity::find()
            .select_only()
            .column_as(def::Column::Version.max(), "v")
            .filter(def::Column::Name.eq(name))
            .into_tuple::<Option<i32>>()
            .one(self.conn())
            .await
            .map(Option::flatten)
            .map_err(db_err(ENTITY, "reading the latest version"))
    }

    /// By id.
    pub async fn get(&self, id: Uuid) -> Result<Definition> {
        def::Entity::find_by_id(id)
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "reading a workflow definition"))?
            .map(Definition::from)
            .ok_or_else(|| Error::NotFound {
                entity: ENTITY,
                id: id.to_string(),
            })
    }

    /// One version of a name.
    pub async fn get_version(&self, name: &str, version: i32) -> Result<Definition> {
        def::Entity::find()
            .filter(def::Column::Name.eq(name))
            .filter(def::Column::Version.eq(version))
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "reading a workflow definition"))?
            .map(Definition::from)
            .ok_or_else(|| Error::NotFound {
                entity: ENTITY,
                id: format!("{name} v{version}"),
            })
    }

    /// The highest version of a name.
    pub async fn latest(&self, name: &str) -> Result<Definition> {
        def::Entity::find()
            .filter(def::Column::Name.eq(name))
            .order_by_desc(def::Column::Version)
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "reading a workflow definition"))?
            .map(Definition::from)
            .ok_or_else(|| Error::NotFound {
                entity: ENTITY,
                id: name.to_string(),
            })
    }

    /// Every version of a name, oldest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<Definition>> {
        def::Entity::find()
            .filter(def::Column::Name.eq(name))
            .order_by_asc(def::Column::Version)
            .all(self.conn())
            .await
            .map(|v| v.into_iter().map(Definition::from).collect())
            .map_err(db_err(ENTITY, "listing workflow definitions"))
    }

    /// Every definition, by name then version.
    pub async fn list(&self) -> Result<Vec<Definition>> {
        def::Entity::find()
            .order_by_asc(def::Column::Name)
            .order_by_asc(def::Column::Version)
            .all(self.conn())
            .await
            .map(|v| v.into_iter().map(Definition::from).collect())
            .map_err(db_err(ENTITY, "listing workflow definitions"))
    }
}
