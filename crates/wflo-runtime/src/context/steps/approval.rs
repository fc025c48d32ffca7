//! Approval steps: a durable request decided once, tied to its action's fingerprint, with a
//! timeout policy.

use crate::context::Ctx;
use crate::definition::{RetryPolicy, StepDef, WorkflowDef};
use crate::engine::Engine;
use crate::{Error, Result, events};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;
use wflo_db::{
    Approval, ApprovalDecision, ApprovalStatus, Db, ExecutionStatus, Executor, NewApproval,
    Outcome, RiskLevel, TimeoutPolicy,
};
use wflo_types::{ApprovalOutput, StepKind, StepOutput};

/// A request for a human decision.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalCall {
    /// What the approver is asked.
    pub message: String,
    /// The exact action approved; its fingerprint ties the approval to it.
    pub action: Value,
    /// Risk.
    pub risk: RiskLevel,
    /// Time to decide.
    pub timeout: Option<Duration>,
    /// What happens at the timeout.
    pub on_timeout: TimeoutPolicy,
    /// Escalation group.
    pub escalate_to: Option<String>,
    /// Approver group.
    pub approver_group: Option<String>,
    /// Approve automatically at or below this risk (by rule, recorded as `rule:auto-approve`).
    pub auto_approve_max_risk: Option<RiskLevel>,
}

impl ApprovalCall {
    /// A request with `message` for `action`: medium risk, 24 h, rejected at the timeout.
    pub fn new(message: impl Into<String>, action: Value) -> Self {
        ApprovalCall {
            message: message.into(),
            action,
            risk: RiskLevel::Medium,
            timeout: Some(Duration::from_secs(24 * 3600)),
            on_timeout: TimeoutPolicy::Reject,
            escalate_to: None,
            approver_group: None,
            auto_approve_max_risk: None,
        }
    }
}

/// The fingerprint of an action: sha256 of the canonical JSON of the step id and the action.
pub fn action_fingerprint(step: &str, action: &Value) -> String {
    let text = wflo_types::canonical_json(&json!({"step": step, "action": action}));
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

impl Ctx {
    /// Asks for a human decision and waits for it. The request is durable (a crashed run finds
    /// it again), decided once, tied to the action's fingerprint (an approval given for another
    /// action is refused), and its timeout policy applies when nobody decides in time.
    pub async fn approval(&self, key: &str, call: ApprovalCall) -> Result<Value> {
        let this = self.clone();
        let fingerprint = action_fingerprint(key, &call.action);
        let inputs =
            json!({"message": call.message, "action": call.action, "fingerprint": fingerprint});
        self.memo(
            key,
            StepKind::Approval,
            inputs,
            RetryPolicy::default(),
            None,
            move |_| {
                let this = this.clone();
                let call = call.clone();
                let key = key.to_string();
                let fingerprint = fingerprint.clone();
                async move { this.approval_attempt(&key, &call, &fingerprint).await }
            },
        )
        .await
    }

    /// The newest approval request of step `key` (a previous attempt's), or a new one with its
    /// event; auto-approval rules apply to a pending one.
    pub(crate) async fn open_approval_row(
        &self,
        key: &str,
        call: &ApprovalCall,
        fingerprint: &str,
    ) -> Result<Approval> {
        let db = &self.engine.inner.db;
        // The newest request of this step, if a previous run made one.
        let existing = db
            .approvals()
            .list(self.execution)
            .await?
            .into_iter()
            .rfind(|a| a.step_key.as_deref() == Some(key));
        let mut approval = match existing {
            Some(a) => a,
            None => {
                let timeout_at = call.timeout.map(|t| {
                    chrono::Utc::now()
                        + chrono::Duration::from_std(t).unwrap_or(chrono::Duration::MAX)
                });
                let tx = db.begin().await?;
                let a = tx
                    .approvals()
                    .create(NewApproval {
                        execution_id: self.execution,
                        step_key: Some(key.to_string()),
                        message: call.message.clone(),
                        context: json!({"action": call.action}),
                        risk_level: call.risk,
                        action_fingerprint: fingerprint.to_string(),
                        approver_group: call.approver_group.clone(),
                        timeout_at,
                        timeout_policy: call.on_timeout,
                        escalate_to: call.escalate_to.clone(),
                    })
                    .await?;
                tx.outbox()
                    .enqueue(events::outbox(
                        events::approval(&a, false),
                        self.execution,
                        &self.labels,
                    ))
                    .await?;
                tx.commit().await?;
                a
            }
        };
        if approval.status == ApprovalStatus::Pending
            && Engine::auto_approves(call.auto_approve_max_risk, call.risk)
        {
            approval = self
                .engine
                .decide(
                    approval.id,
                    true,
                    "rule:auto-approve",
                    Some(format!("risk {} within the auto-approve rule", call.risk)),
                )
                .await?;
        }
        Ok(approval)
    }

    async fn approval_attempt(
        &self,
        key: &str,
        call: &ApprovalCall,
        fingerprint: &str,
    ) -> Result<Value> {
        let db = &self.engine.inner.db;
        let mut approval = self.open_approval_row(key, call, fingerprint).await?;
        if approval.status == ApprovalStatus::Pending {
            self.set_execution_status(ExecutionStatus::WaitingApproval, Outcome::default())
                .await?;
            if let Some(o) = &self.observer {
                o.waiting_for_approval(approval.id, &approval.message);
            }
            let poll = self.engine.inner.config.approval_poll;
            loop {
                approval = db.approvals().get(approval.id).await?;
                if approval.status != ApprovalStatus::Pending {
                    break;
                }
                if approval.timeout_at.is_some_and(|t| t <= chrono::Utc::now()) {
                    approval = apply_timeout_policy(db, &approval).await?;
                    if approval.status == ApprovalStatus::Pending {
                        // Escalated: a new request waits for the other group.
                        if let Some(o) = &self.observer {
                            o.waiting_for_approval(approval.id, &approval.message);
                        }
                        continue;
                    }
                    break;
                }
                self.check_lease()?;
                tokio::time::sleep(poll).await;
            }
            self.set_execution_status(ExecutionStatus::Running, Outcome::default())
                .await?;
        }
        if approval.action_fingerprint != fingerprint {
            return Err(Error::StaleApproval {
                step: key.to_string(),
                approval: approval.id,
                approved: approval.action_fingerprint.clone(),
                current: fingerprint.to_string(),
            });
        }
        match approval.status {
            ApprovalStatus::Approved => Ok(StepOutput::Approval(ApprovalOutput {
                approval_id: Some(approval.id),
                decision: ApprovalStatus::Approved.as_str().to_string(),
                approved_by: approval.decided_by.clone(),
                reason: approval.decision_reason.clone(),
            })
            .to_value()),
            _ => Err(Error::Rejected {
                step: key.to_string(),
                by: approval
                    .decided_by
                    .clone()
                    .unwrap_or_else(|| "unknown".into()),
                reason: approval.decision_reason.clone(),
            }),
        }
    }
}

/// The approval request of an approval step from its rendered parameters `p`.
pub(crate) fn approval_call_from(
    def: &WorkflowDef,
    step: &StepDef,
    p: &Map<String, Value>,
) -> Result<ApprovalCall> {
    let s = |name: &str| p.get(name).and_then(Value::as_str).map(str::to_string);
    let policy = &def.policies.approval;
    let parse_risk = |r: Option<String>| -> Result<RiskLevel> {
        r.map(|r| {
            r.parse().map_err(|e: wflo_types::Error| Error::Definition {
                step: Some(step.id.clone()),
                line: None,
                message: e.to_string(),
            })
        })
        .transpose()
        .map(|r| r.unwrap_or(RiskLevel::Medium))
    };
    let on_timeout = match s("on_timeout") {
        Some(t) => t
            .parse()
            .map_err(|e: wflo_types::Error| Error::Definition {
                step: Some(step.id.clone()),
                line: None,
                message: e.to_string(),
            })?,
        None => policy.on_timeout,
    };
    let call = ApprovalCall {
        message: s("message").unwrap_or_default(),
        action: p.get("action").cloned().unwrap_or(Value::Null),
        risk: parse_risk(s("risk"))?,
        timeout: step.timeout.or(policy.timeout),
        on_timeout,
        escalate_to: s("escalate_to").or_else(|| policy.escalate_to.clone()),
        approver_group: s("approver_group"),
        auto_approve_max_risk: policy.auto_approve_max_risk,
    };
    Ok(call)
}

/// Applies an expired approval's timeout policy, once (conditional update): reject → EXPIRED,
/// approve → APPROVED by `system:timeout`, escalate → ESCALATED plus a new request for the
/// escalation group (returned, PENDING) whose own timeout rejects.
pub(crate) async fn apply_timeout_policy(db: &Db, a: &Approval) -> Result<Approval> {
    let (status, reason) = match a.timeout_policy {
        TimeoutPolicy::Approve => (ApprovalStatus::Approved, "approved by the timeout policy"),
        TimeoutPolicy::Escalate => (ApprovalStatus::Escalated, "escalated by the timeout policy"),
        _ => (ApprovalStatus::Expired, "rejected by the timeout policy"),
    };
    let tx = db.begin().await?;
    let decided = match tx
        .approvals()
        .decide(
            a.id,
            ApprovalDecision {
                status,
                decided_by: "system:timeout".into(),
                reason: Some(reason.into()),
            },
        )
        .await
    {
        Ok(d) => d,
        // Someone decided first: their decision stands.
        Err(wflo_db::Error::InvalidTransition { .. }) => {
            drop(tx);
            return Ok(db.approvals().get(a.id).await?);
        }
        Err(e) => return Err(e.into()),
    };
    let labels = events::write_decided(&tx, &decided).await?;
    let result = if status == ApprovalStatus::Escalated {
        let window = a
            .timeout_at
            .map(|t| t - a.created_at)
            .unwrap_or_else(|| chrono::Duration::hours(24));
        let next = tx
            .approvals()
            .create(NewApproval {
                execution_id: a.execution_id,
                step_key: a.step_key.clone(),
                message: a.message.clone(),
                context: a.context.clone(),
                risk_level: a.risk_level,
                action_fingerprint: a.action_fingerprint.clone(),
                approver_group: a.escalate_to.clone(),
                timeout_at: Some(chrono::Utc::now() + window),
                timeout_policy: TimeoutPolicy::Reject,
                escalate_to: None,
            })
            .await?;
        tx.outbox()
            .enqueue(events::outbox(
                events::approval(&next, false),
                a.execution_id,
                &labels,
            ))
            .await?;
        next
    } else {
        decided
    };
    tx.commit().await?;
    Ok(result)
}
