use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "step_executions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub execution_id: Uuid,
    pub step_key: String,
    pub step_type: String,
    pub status: String,
    pub attempt: i32,
    pub inputs: Option<Json>,
    pub outputs: Option<Json>,
    pub error: Option<String>,
    pub cost_nano_usd: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub started_at: Option<DateTimeUtc>,
    pub completed_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
