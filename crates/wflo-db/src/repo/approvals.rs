use super::{db_err, parse_stored, repository, text_enum};
use crate::entity::approval as ap;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde_json::Value;
use uuid::Uuid;
use wflo_types::{ApprovalId, ExecutionId};

/// The state of an approval request (the shared vocabulary's type).
pub use wflo_types::ApprovalStatus;

text_enum!(
    /// How risky the action awaiting approval is.
    RiskLevel {
        /// Low.
        Low = "LOW",
        /// Medium.
        Medium = "MEDIUM",
        /// High.
        High = "HIGH",
        /// Critical.
        Critical = "CRITICAL",
    }
);

text_enum!(
    /// What happens when nobody decides in time.
    TimeoutPolicy {
        /// Treat as rejected.
        Reject = "REJECT",
        /// Treat as approved.
        Approve = "APPROVE",
        /// Hand to another approver group.
        Escalate = "ESCALATE",
    }
);

/// A request for a human decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    /// Row id.
    pub id: ApprovalId,
    /// The execution waiting on it.
    pub execution_id: ExecutionId,
    /// The step waiting on it.
    pub step_key: Option<String>,
    /// Current state.
    pub status: ApprovalStatus,
    /// What the approver is asked.
    pub message: String,
    /// Context shown to the approver.
    pub context: Value,
    /// Risk.
    pub risk_level: RiskLevel,
    /// Fingerprint of the exact action; a changed action does not match.
    pub action_fingerprint: String,
    /// Who may decide.
    pub approver_group: Option<String>,
    /// When the timeout policy applies.
    pub timeout_at: Option<DateTime<Utc>>,
    /// What happens at the timeout.
    pub timeout_policy: TimeoutPolicy,
    /// Group to escalate to.
    pub escalate_to: Option<String>,
    /// Who decided.
    pub decided_by: Option<String>,
    /// Why.
    pub decision_reason: Option<String>,
    /// When.
    pub decided_at: Option<DateTime<Utc>>,
    /// Requested.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<ap::Model> for Approval {
    type Error = Error;
    fn try_from(m: ap::Model) -> Result<Self> {
        Ok(Approval {
            id: m.id.into(),
            execution_id: m.execution_id.into(),
            step_key: m.step_key,
            status: parse_stored(&m.status)?,
            message: m.message,
            context: m.context,
            risk_level: parse_stored(&m.risk_level)?,
            action_fingerprint: m.action_fingerprint,
            approver_group: m.approver_group,
            timeout_at: m.timeout_at,
            timeout_policy: parse_stored(&m.timeout_policy)?,
            escalate_to: m.escalate_to,
            decided_by: m.decided_by,
            decision_reason: m.decision_reason,
            decided_at: m.decided_at,
            created_at: m.created_at,
            updated_at: m.updated_at,
        })
    }
}

/// An approval to request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApproval {
    /// The execution waiting on it.
    pub execution_id: ExecutionId,
    /// The step waiting on it.
    pub step_key: Option<String>,
    /// What the approver is asked.
    pub message: String,
    /// Context shown to the approver.
    pub context: Value,
    /// Risk.
    pub risk_level: RiskLevel,
    /// Fingerprint of the exact action.
    pub action_fingerprint: String,
    /// Who may decide.
    pub approver_group: Option<String>,
    /// When the timeout policy applies.
    pub timeout_at: Option<DateTime<Utc>>,
    /// What happens at the timeout.
    pub timeout_policy: TimeoutPolicy,
    /// Group to escalate to.
    pub escalate_to: Option<String>,
}

/// A decision on a pending approval.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalDecision {
    /// APPROVED, REJECTED, EXPIRED or ESCALATED.
    pub status: ApprovalStatus,
    /// Who decided (a person, or `system:timeout`).
    pub decided_by: String,
    /// Why.
    pub reason: Option<String>,
}

repository!(
    /// Approval requests; a decision is taken exactly once.
    Approvals
);

const ENTITY: &str = "approval request";

impl<E: crate::Executor> Approvals<'_, E> {
    /// Records a pending request.
    pub async fn create(&self, new: NewApproval) -> Result<Approval> {
        if new.action_fingerprint.is_empty() {
            return Err(Error::Invalid {
                entity: ENTITY,
                detail: "the action fingerprint must not be empty".into(),
            });
        }
        let now = Utc::now();
        ap::ActiveModel {
            id: Set(Uuid::now_v7()),
            execution_id: Set(new.execution_id.into()),
            step_key: Set(new.step_key),
            status: Set(ApprovalStatus::Pending.as_str().into()),
            message: Set(new.message),
            context: Set(new.context),
            risk_level: Set(new.risk_level.as_str().into()),
            action_fingerprint: Set(new.action_fingerprint),
            approver_group: Set(new.approver_group),
            timeout_at: Set(new.timeout_at),
            timeout_policy: Set(new.timeout_policy.as_str().into()),
            escalate_to: Set(new.escalate_to),
            decided_by: Set(None),
            decision_reason: Set(None),
            decided_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(self.conn())
        .await
        .map_err(db_err(ENTITY, "requesting an approval"))?
        .try_into()
    }

    /// By id.
    pub async fn get(&self, id: impl Into<ApprovalId>) -> Result<Approval> {
        let id = super::raw::<ApprovalId>(id);
        ap::Entity::find_by_id(id)
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "reading an approval"))?
            .ok_or_else(|| Error::NotFound {
                entity: ENTITY,
                id: id.to_string(),
            })?
            .try_into()
    }

    /// Pending requests, oldest first.
    pub async fn pending(&self) -> Result<Vec<Approval>> {
        ap::Entity::find()
            .filter(ap::Column::Status.eq(ApprovalStatus::Pending.as_str()))
            .order_by_asc(ap::Column::CreatedAt)
            .order_by_asc(ap::Column::Id)
            .all(self.conn())
            .await
            .map_err(db_err(ENTITY, "listing approvals"))?
            .into_iter()
            .map(Approval::try_from)
            .collect()
    }

    /// The requests of an execution, oldest first.
    pub async fn list(&self, execution_id: impl Into<ExecutionId>) -> Result<Vec<Approval>> {
        let execution_id = super::raw::<ExecutionId>(execution_id);
        ap::Entity::find()
            .filter(ap::Column::ExecutionId.eq(execution_id))
            .order_by_asc(ap::Column::CreatedAt)
            .order_by_asc(ap::Column::Id)
            .all(self.conn())
            .await
            .map_err(db_err(ENTITY, "listing approvals"))?
            .into_iter()
            .map(Approval::try_from)
            .collect()
    }

    /// Takes the decision, once: a conditional UPDATE that succeeds only while the request is
    /// PENDING. A second decision is [`Error::InvalidTransition`] naming the first.
    pub async fn decide(
        &self,
        id: impl Into<ApprovalId>,
        decision: ApprovalDecision,
    ) -> Result<Approval> {
        let id = super::raw::<ApprovalId>(id);
        if decision.status == ApprovalStatus::Pending {
            return Err(Error::Invalid {
                entity: ENTITY,
                detail: "a decision cannot be PENDING".into(),
            });
        }
        let now = Utc::now();
        let res = ap::Entity::update_many()
            .col_expr(ap::Column::Status, Expr::value(decision.status.as_str()))
            .col_expr(ap::Column::DecidedBy, Expr::value(decision.decided_by))
            .col_expr(ap::Column::DecisionReason, Expr::value(decision.reason))
            .col_expr(ap::Column::DecidedAt, Expr::value(now))
            .col_expr(ap::Column::UpdatedAt, Expr::value(now))
            .filter(ap::Column::Id.eq(id))
            .filter(ap::Column::Status.eq(ApprovalStatus::Pending.as_str()))
            .exec(self.conn())
            .await
            .map_err(db_err(ENTITY, "deciding an approval"))?;
        let current = self.get(id).await?;
        if res.rows_affected == 0 {
            return Err(Error::InvalidTransition {
                entity: ENTITY,
                id: id.to_string(),
                from: current.status.to_string(),
                to: decision.status.to_string(),
            });
        }
        Ok(current)
    }
}
