//! Who may do what through the HTTP API: the roles an API token carries.

crate::vocab_enum!(
    /// An API token's role. Each role may do everything the roles before it may.
    Role {
        /// Reads executions, approvals, costs, budgets and events.
        Viewer = "VIEWER",
        /// A viewer who also decides approval requests.
        Approver = "APPROVER",
        /// An approver who also starts, cancels, resumes and rolls back executions.
        Operator = "OPERATOR",
        /// An operator who also manages API tokens.
        Admin = "ADMIN",
    }
);

impl Role {
    fn rank(self) -> u8 {
        match self {
            Role::Viewer => 0,
            Role::Approver => 1,
            Role::Operator => 2,
            Role::Admin => 3,
        }
    }

    /// Whether a token of this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self.rank() >= needed.rank()
    }

    /// The role's name in lower case, as the command line and the page write it.
    pub fn label(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_includes_the_ones_before_it() {
        for (i, a) in Role::ALL.iter().enumerate() {
            for (j, b) in Role::ALL.iter().enumerate() {
                assert_eq!(a.allows(*b), i >= j, "{a} allows {b}");
            }
        }
        assert_eq!("approver".parse::<Role>().unwrap(), Role::Approver);
        assert!("root".parse::<Role>().is_err());
    }
}
