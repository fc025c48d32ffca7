//! The statuses of executions, steps, approvals and rollbacks, with the transitions each
//! allows. Stored and published as upper-case text (`WAITING_APPROVAL`); parsed in any case.

crate::vocab_enum!(
    /// Where an execution is in its life.
    ExecutionStatus {
        /// Created, not started.
        Pending = "PENDING",
        /// Running steps.
        Running = "RUNNING",
        /// Blocked on a human decision.
        WaitingApproval = "WAITING_APPROVAL",
        /// Finished successfully (final).
        Completed = "COMPLETED",
        /// Stopped by an error; may be resumed.
        Failed = "FAILED",
        /// Cancelled (final).
        Cancelled = "CANCELLED",
    }
);

impl ExecutionStatus {
    /// The statuses from which `self` may be entered.
    pub fn allowed_from(self) -> &'static [ExecutionStatus] {
        use ExecutionStatus::*;
        match self {
            Pending => &[],
            // Resuming after a crash re-enters RUNNING; a failed run may be resumed.
            Running => &[Pending, Running, WaitingApproval, Failed],
            WaitingApproval => &[Running],
            Completed => &[Running],
            Failed => &[Pending, Running, WaitingApproval],
            Cancelled => &[Pending, Running, WaitingApproval, Failed],
        }
    }

    /// Whether no further transition is possible.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ExecutionStatus::Completed | ExecutionStatus::Cancelled
        )
    }

    /// Whether the execution has stopped (final, or failed).
    pub fn is_terminal(self) -> bool {
        self.is_final() || self == ExecutionStatus::Failed
    }
}

crate::vocab_enum!(
    /// Where a step is.
    StepStatus {
        /// Recorded, not started.
        Pending = "PENDING",
        /// Running (an attempt is in progress).
        Running = "RUNNING",
        /// Done; its output is stored (final).
        Completed = "COMPLETED",
        /// The last attempt failed; may be retried.
        Failed = "FAILED",
        /// Not run (final).
        Skipped = "SKIPPED",
        /// Cancelled (final).
        Cancelled = "CANCELLED",
        /// Completed, then undone by a rollback; runs again when the execution continues.
        RolledBack = "ROLLED_BACK",
    }
);

impl StepStatus {
    /// The statuses from which `self` may be entered.
    pub fn allowed_from(self) -> &'static [StepStatus] {
        use StepStatus::*;
        match self {
            Pending => &[],
            Running => &[Pending, Running, Failed, RolledBack],
            Completed => &[Running],
            Failed => &[Pending, Running],
            Skipped => &[Pending],
            Cancelled => &[Pending, Running, Failed],
            RolledBack => &[Completed],
        }
    }
}

crate::vocab_enum!(
    /// The state of an approval request.
    ApprovalStatus {
        /// Waiting for a decision.
        Pending = "PENDING",
        /// Approved.
        Approved = "APPROVED",
        /// Rejected.
        Rejected = "REJECTED",
        /// Timed out with the reject policy... or any expiry.
        Expired = "EXPIRED",
        /// Timed out and handed to another approver group.
        Escalated = "ESCALATED",
    }
);

impl ApprovalStatus {
    /// The statuses from which `self` may be entered: a request is decided once, from
    /// PENDING.
    pub fn allowed_from(self) -> &'static [ApprovalStatus] {
        use ApprovalStatus::*;
        match self {
            Pending => &[],
            Approved | Rejected | Expired | Escalated => &[Pending],
        }
    }
}

crate::vocab_enum!(
    /// The state of a rollback.
    RollbackStatus {
        /// Recorded, not started.
        Pending = "PENDING",
        /// Restoring state and running compensations.
        Running = "RUNNING",
        /// Done.
        Completed = "COMPLETED",
        /// A compensation or the restore failed.
        Failed = "FAILED",
    }
);

impl RollbackStatus {
    /// The statuses from which `self` may be entered.
    pub fn allowed_from(self) -> &'static [RollbackStatus] {
        use RollbackStatus::*;
        match self {
            Pending => &[],
            Running => &[Pending],
            Completed | Failed => &[Pending, Running],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_their_stored_text_in_any_case_and_name_bad_values() {
        for s in ExecutionStatus::ALL {
            assert_eq!(s.as_str().parse::<ExecutionStatus>().unwrap(), *s);
            assert_eq!(
                s.as_str()
                    .to_lowercase()
                    .parse::<ExecutionStatus>()
                    .unwrap(),
                *s
            );
        }
        let e = "DONE".parse::<StepStatus>().unwrap_err().to_string();
        assert!(e.contains("`DONE` is not a valid StepStatus"), "{e}");
        assert!(e.contains("ROLLED_BACK"), "{e}");
        assert_eq!(
            serde_json::to_value(ExecutionStatus::WaitingApproval).unwrap(),
            "WAITING_APPROVAL"
        );
    }

    #[test]
    fn terminal_states_stay_terminal() {
        for s in ExecutionStatus::ALL {
            if s.is_final() {
                assert!(
                    ExecutionStatus::ALL
                        .iter()
                        .all(|to| !to.allowed_from().contains(s)),
                    "{s} is final but can be left"
                );
            }
        }
        assert!(
            StepStatus::Completed
                .allowed_from()
                .contains(&StepStatus::Running)
        );
        assert!(
            !ApprovalStatus::Approved
                .allowed_from()
                .contains(&ApprovalStatus::Rejected)
        );
    }
}
