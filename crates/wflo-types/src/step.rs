//! Step kinds and the typed outputs each kind stores.
//!
//! Each output's JSON is the shape the runtime has stored in `step_executions.outputs` since
//! the first release, so rows written before these types read back (see the tests); fields
//! added later are optional.

use crate::TokenUsage;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepKind {
    /// A call to a language model, held to the budget.
    Llm,
    /// Code run in the sandbox.
    Code,
    /// A human decision.
    Approval,
    /// A snapshot of the execution's state.
    Checkpoint,
    /// A Rust function the embedding program registered.
    Tool,
}

impl StepKind {
    /// The kinds, as written in YAML and stored.
    pub const NAMES: [&'static str; 5] = ["llm", "code", "approval", "checkpoint", "tool"];

    /// As written in YAML and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Llm => "llm",
            StepKind::Code => "code",
            StepKind::Approval => "approval",
            StepKind::Checkpoint => "checkpoint",
            StepKind::Tool => "tool",
        }
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StepKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Ok(match s {
            "llm" => StepKind::Llm,
            "code" => StepKind::Code,
            "approval" => StepKind::Approval,
            "checkpoint" => StepKind::Checkpoint,
            "tool" => StepKind::Tool,
            _ => {
                return Err(crate::Error::UnknownValue {
                    what: "step kind",
                    value: s.to_string(),
                    expected: StepKind::NAMES.join(", "),
                });
            }
        })
    }
}

/// What an LLM step stored: the answer, what it used and cost, or that the response cache
/// answered (`cached`, with what the original call cost as `saved_usd`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LlmOutput {
    /// The answer's text.
    pub text: String,
    /// The first fenced code block of the answer, if any.
    pub code: Option<String>,
    /// The model that answered.
    pub model: String,
    /// Why the model stopped (`stop`, `length`, ...), as the provider said it.
    pub finish_reason: Value,
    /// Tokens used (none when the cache answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    /// What this call cost (zero when the cache answered).
    pub cost_usd: Decimal,
    /// Whether the response cache answered.
    pub cached: bool,
    /// What the cached answer cost when it was paid for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_usd: Option<Decimal>,
}

/// What a code step stored: the sandbox's result, stdout and stderr apart.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CodeOutput {
    /// Standard output (capped).
    pub stdout: String,
    /// Standard error (capped).
    pub stderr: String,
    /// The process's exit code.
    pub exit_code: i64,
    /// `success`, `error`, `timeout` or `oom`.
    pub status: String,
    /// Killed by the wall-clock limit.
    pub timed_out: bool,
    /// Killed by the memory limit.
    pub oom_killed: bool,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: u64,
    /// Whether stdout was cut at the output limit.
    pub stdout_truncated: bool,
}

impl CodeOutput {
    /// Whether the code ran to a zero exit.
    pub fn success(&self) -> bool {
        self.exit_code == 0 && !self.timed_out && !self.oom_killed
    }
}

/// What an approval step stored: the decision it ran on.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ApprovalOutput {
    /// The approval request.
    pub approval_id: Option<crate::ApprovalId>,
    /// `APPROVED` (a rejected step fails instead of storing an output).
    pub decision: String,
    /// Who decided.
    pub approved_by: Option<String>,
    /// Why.
    pub reason: Option<String>,
}

/// What a checkpoint step stored: the snapshot it took.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckpointOutput {
    /// The snapshot's version within the execution.
    pub snapshot_version: i32,
    /// The snapshot's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<crate::SnapshotId>,
}

/// What a tool step stored: the tool's own JSON answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ToolOutput(pub Value);

/// A step's output, typed by its kind.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StepOutput {
    /// An LLM step's.
    Llm(LlmOutput),
    /// A code step's.
    Code(CodeOutput),
    /// An approval step's.
    Approval(ApprovalOutput),
    /// A checkpoint step's.
    Checkpoint(CheckpointOutput),
    /// A tool step's.
    Tool(ToolOutput),
}

impl StepOutput {
    /// Reads a stored output of a step of `kind`; an output that does not match its kind's
    /// schema is [`crate::Error::Malformed`].
    pub fn read(kind: StepKind, stored: &Value) -> crate::Result<StepOutput> {
        fn de<T: serde::de::DeserializeOwned>(kind: StepKind, v: &Value) -> crate::Result<T> {
            serde_json::from_value(v.clone())
                .map_err(|e| crate::Error::Malformed(format!("output of a {kind} step: {e}")))
        }
        Ok(match kind {
            StepKind::Llm => StepOutput::Llm(de(kind, stored)?),
            StepKind::Code => StepOutput::Code(de(kind, stored)?),
            StepKind::Approval => StepOutput::Approval(de(kind, stored)?),
            StepKind::Checkpoint => StepOutput::Checkpoint(de(kind, stored)?),
            StepKind::Tool => StepOutput::Tool(ToolOutput(stored.clone())),
        })
    }

    /// The JSON stored for it.
    pub fn to_value(&self) -> Value {
        fn v<T: Serialize>(t: &T) -> Value {
            // Plain structs of strings, numbers and JSON values: serializing cannot fail.
            serde_json::to_value(t).unwrap_or(Value::Null)
        }
        match self {
            StepOutput::Llm(o) => v(o),
            StepOutput::Code(o) => v(o),
            StepOutput::Approval(o) => v(o),
            StepOutput::Checkpoint(o) => v(o),
            StepOutput::Tool(o) => o.0.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;
    use serde_json::json;

    /// Outputs exactly as the runtime stored them before the typed outputs existed.
    #[test]
    fn rows_stored_in_the_previous_format_read_back() {
        let llm = json!({
            "text": "```python\nprint(1)\n```", "code": "print(1)\n",
            "model": "gpt-4o-mini-2024-07-18", "finish_reason": "stop",
            "usage": {"prompt_tokens": 21, "completion_tokens": 9, "cached_prompt_tokens": 0,
                      "cache_write_tokens": 0, "reasoning_tokens": 0},
            "cost_usd": "0.00000855", "cached": false
        });
        let StepOutput::Llm(o) = StepOutput::read(StepKind::Llm, &llm).unwrap() else {
            panic!("an llm output")
        };
        assert_eq!(o.code.as_deref(), Some("print(1)\n"));
        assert_eq!(o.cost_usd, dec!(0.00000855));
        assert_eq!(o.usage.as_ref().unwrap().prompt, 21);
        assert_eq!(StepOutput::Llm(o).to_value(), llm);

        let cached = json!({"text": "hi", "code": null, "model": "m", "cached": true,
                            "cost_usd": "0", "saved_usd": "0.0001"});
        let StepOutput::Llm(o) = StepOutput::read(StepKind::Llm, &cached).unwrap() else {
            panic!("an llm output")
        };
        assert!(o.cached && o.usage.is_none());
        assert_eq!(o.saved_usd, Some(dec!(0.0001)));

        let code = json!({"stdout": "1\n", "stderr": "", "exit_code": 0, "status": "success",
                          "timed_out": false, "oom_killed": false, "duration_ms": 212,
                          "stdout_truncated": false});
        let out = StepOutput::read(StepKind::Code, &code).unwrap();
        assert!(matches!(&out, StepOutput::Code(c) if c.success() && c.stdout == "1\n"));
        assert_eq!(out.to_value(), code);

        let approval = json!({"approval_id": "01a231e0-2cbc-713e-8abe-0c0b695c0109",
                              "decision": "APPROVED", "approved_by": "alice", "reason": null});
        let out = StepOutput::read(StepKind::Approval, &approval).unwrap();
        assert!(
            matches!(&out, StepOutput::Approval(a) if a.approved_by.as_deref() == Some("alice"))
        );
        assert_eq!(out.to_value(), approval);

        let checkpoint = json!({"snapshot_version": 3});
        assert_eq!(
            StepOutput::read(StepKind::Checkpoint, &checkpoint).unwrap(),
            StepOutput::Checkpoint(CheckpointOutput {
                snapshot_version: 3,
                snapshot_id: None,
            })
        );
        // As the runtime stored it: with the snapshot's id.
        let checkpoint = json!({"snapshot_version": 4,
                                "snapshot_id": "0193a0c4-5c1e-7b2a-9d4e-1f2a3b4c5d6e"});
        let out = StepOutput::read(StepKind::Checkpoint, &checkpoint).unwrap();
        assert_eq!(out.to_value(), checkpoint);
        let tool = json!({"anything": [1, 2]});
        assert_eq!(
            StepOutput::read(StepKind::Tool, &tool).unwrap().to_value(),
            tool
        );
    }

    #[test]
    fn an_output_of_the_wrong_shape_is_malformed() {
        let e = StepOutput::read(StepKind::Checkpoint, &json!({"snapshot_version": "three"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("output of a checkpoint step"), "{e}");
        assert_eq!(
            "quantum".parse::<StepKind>().unwrap_err().to_string(),
            "`quantum` is not a valid step kind; expected one of llm, code, approval, checkpoint, tool"
        );
    }
}
