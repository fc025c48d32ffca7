use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workflow_executions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub workflow_id: Uuid,
    pub status: String,
    pub inputs: Json,
    pub outputs: Option<Json>,
    pub error: Option<String>,
    pub cost_nano_usd: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub snapshot_seq: i32,
    pub trace_id: Option<String>,
    pub started_at: Option<DateTimeUtc>,
    pub completed_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub engine: String,
    pub lease_holder: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub lease_fence: i64,
    pub workflow_name: String,
    pub budget_nano_usd: Option<i64>,
    pub correlation_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
