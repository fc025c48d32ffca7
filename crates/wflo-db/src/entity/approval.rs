use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "approval_requests")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub execution_id: Uuid,
    pub step_key: Option<String>,
    pub status: String,
    pub message: String,
    pub context: Json,
    pub risk_level: String,
    pub action_fingerprint: String,
    pub approver_group: Option<String>,
    pub timeout_at: Option<DateTimeUtc>,
    pub timeout_policy: String,
    pub escalate_to: Option<String>,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    pub decided_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
