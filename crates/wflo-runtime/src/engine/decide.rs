//! Approval decisions taken outside a run: a person's (decided once, with its audit event) and
//! the timeout policies of requests nobody decided in time.

use super::Engine;
use crate::events;
use crate::{Error, Result};
use serde_json::json;
use wflo_db::{ApprovalDecision, ApprovalStatus, Executor, RiskLevel};
use wflo_types::ApprovalId;

impl Engine {
    /// Decides a pending approval once (approve or reject), recording who and why, with the
    /// decision and an audit event in the same transaction. Works for runs in any process that
    /// shares the database.
    pub async fn decide(
        &self,
        approval: ApprovalId,
        approve: bool,
        approver: &str,
        reason: Option<String>,
    ) -> Result<wflo_db::Approval> {
        if approver.trim().is_empty() {
            return Err(Error::InvalidState("an approver must be named".into()));
        }
        let tx = self.inner.db.begin().await?;
        let decided = match tx
            .approvals()
            .decide(
                approval,
                ApprovalDecision {
                    status: if approve {
                        ApprovalStatus::Approved
                    } else {
                        ApprovalStatus::Rejected
                    },
                    decided_by: approver.to_string(),
                    reason: reason.clone(),
                },
            )
            .await
        {
            Ok(d) => d,
            Err(wflo_db::Error::InvalidTransition { .. }) => {
                drop(tx);
                let current = self.inner.db.approvals().get(approval).await?;
                return Err(Error::AlreadyDecided {
                    approval,
                    status: current.status,
                    by: current.decided_by.unwrap_or_else(|| "unknown".into()),
                    at: current.decided_at,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let labels = events::write_decided(&tx, &decided).await?;
        tx.outbox()
            .enqueue(events::outbox(
                events::audit(
                    approver,
                    if approve {
                        "approval.approve"
                    } else {
                        "approval.reject"
                    },
                    format!("approval/{approval}"),
                    json!({"reason": reason, "step": decided.step_key}),
                    true,
                ),
                decided.execution_id,
                &labels,
            ))
            .await?;
        tx.commit().await?;
        Ok(decided)
    }

    /// Applies timeout policies to pending approvals whose time has passed (for approvals whose
    /// run is not in a process to do it). Returns how many were settled.
    pub async fn expire_approvals(&self) -> Result<usize> {
        let now = chrono::Utc::now();
        let mut n = 0;
        for a in self.inner.db.approvals().pending().await? {
            if a.timeout_at.is_some_and(|t| t <= now) {
                crate::context::apply_timeout_policy(&self.inner.db, &a).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Risk at or below which the definition approves automatically.
    pub(crate) fn auto_approves(max: Option<RiskLevel>, risk: RiskLevel) -> bool {
        fn rank(r: RiskLevel) -> u8 {
            match r {
                RiskLevel::Low => 0,
                RiskLevel::Medium => 1,
                RiskLevel::High => 2,
                _ => 3,
            }
        }
        max.is_some_and(|m| rank(risk) <= rank(m))
    }
}
