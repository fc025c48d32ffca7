//! A typed client of the API, for programs (and the `wflo` command line) that reach Wflo
//! through a server instead of its database: the same request and view types the server uses.

use crate::api::{
    ApprovalView, CostReport, DecisionRequest, ExecutionDetail, ExecutionPage, GroupBy,
    ReasonRequest, StartRequest, StartResponse, Verdict,
};
use crate::error::ErrorBody;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use wflo_core::types::{ApprovalId, ExecutionId, ExecutionStatus};

/// A client of one server, authenticated by an API token.
#[derive(Clone)]
pub struct Client {
    base: url::Url,
    token: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// Which executions [`Client::executions`] lists.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListExecutions {
    /// Only this status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ExecutionStatus>,
    /// Only runs of this workflow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Created at or after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// The previous page's `next_cursor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Page size (1 to 200).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

impl Client {
    /// A client of the server at `base` (`http://host:port`), sending `token`.
    pub fn new(base: &str, token: &str) -> Result<Client> {
        let base = url::Url::parse(base.trim_end_matches('/')).map_err(|e| {
            Error::Config(format!(
                "`{base}` is not a server URL ({e}); write it as http://host:port"
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "`{base}` is not an http(s) URL; write it as http://host:port"
            )));
        }
        if token.trim().is_empty() {
            return Err(Error::Config(
                "the API token is empty; set WFLO_TOKEN to a token from `wflo tokens create`"
                    .into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            base,
            token: token.trim().to_string(),
            http,
        })
    }

    /// The server's address.
    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.as_str().trim_end_matches('/'))
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Error::Unreachable {
                url: self.base.to_string(),
                reason: e.to_string(),
            })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| Error::Unreachable {
            url: self.base.to_string(),
            reason: e.to_string(),
        })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| Error::Api {
                status: status.as_u16(),
                kind: "internal".into(),
                message: format!("the server's answer is not what this client expects ({e}); is it the same wflo version?"),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => Err(Error::Api {
                status: status.as_u16(),
                kind: b.error.kind,
                message: b.error.message,
            }),
            Err(_) => Err(Error::Api {
                status: status.as_u16(),
                kind: "internal".into(),
                message: format!(
                    "the server answered http {status} without an error body; is {} a wflo server?",
                    self.base
                ),
            }),
        }
    }

    /// A page of executions, newest first.
    pub async fn executions(&self, q: &ListExecutions) -> Result<ExecutionPage> {
        self.send(self.http.get(self.url("/api/v1/executions")).query(q))
            .await
    }

    /// One execution with everything recorded about it.
    pub async fn execution(&self, id: ExecutionId) -> Result<ExecutionDetail> {
        self.send(self.http.get(self.url(&format!("/api/v1/executions/{id}"))))
            .await
    }

    /// Starts a run.
    pub async fn start(&self, req: &StartRequest) -> Result<StartResponse> {
        self.send(self.http.post(self.url("/api/v1/executions")).json(req))
            .await
    }

    /// Cancels an execution.
    pub async fn cancel(
        &self,
        id: ExecutionId,
        reason: Option<String>,
    ) -> Result<crate::api::ExecutionView> {
        self.send(
            self.http
                .post(self.url(&format!("/api/v1/executions/{id}/cancel")))
                .json(&ReasonRequest { reason }),
        )
        .await
    }

    /// The approval requests waiting for a decision.
    pub async fn approvals(&self) -> Result<Vec<ApprovalView>> {
        self.send(self.http.get(self.url("/api/v1/approvals")))
            .await
    }

    /// Decides an approval request (the token's name is the actor).
    pub async fn decide(
        &self,
        id: ApprovalId,
        approve: bool,
        reason: Option<String>,
    ) -> Result<ApprovalView> {
        let body = DecisionRequest {
            decision: if approve {
                Verdict::Approve
            } else {
                Verdict::Reject
            },
            reason,
        };
        self.send(
            self.http
                .post(self.url(&format!("/api/v1/approvals/{id}/decision")))
                .json(&body),
        )
        .await
    }

    /// A cost report.
    pub async fn costs(&self, by: GroupBy, since: Option<DateTime<Utc>>) -> Result<CostReport> {
        #[derive(Serialize)]
        struct Q {
            by: GroupBy,
            #[serde(skip_serializing_if = "Option::is_none")]
            since: Option<DateTime<Utc>>,
        }
        self.send(
            self.http
                .get(self.url("/api/v1/costs"))
                .query(&Q { by, since }),
        )
        .await
    }
}
