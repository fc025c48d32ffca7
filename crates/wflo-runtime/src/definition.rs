//! Workflow definitions: YAML (or a Rust builder), validated before anything runs.
//!
//! ```yaml
//! name: triage
//! inputs:
//!   ticket: {description: "the ticket text"}
//! policies:
//!   budget_usd: "0.50"
//!   timeout_secs: 600
//!   approval: {timeout_secs: 3600, on_timeout: reject, auto_approve_max_risk: low}
//! steps:
//!   - id: plan
//!     kind: llm
//!     model: gpt-4o-mini
//!     prompt: "Plan a fix for: {{ inputs.ticket }}"
//!     max_tokens: 300
//!   - id: run
//!     kind: code
//!     depends_on: [plan]
//!     code: "{{ steps.plan.output.code }}"
//! ```
//!
//! Validation: unique step ids, known kinds, known dependencies, no cycle, and templates that
//! parse and refer only to declared inputs and to steps the step depends on. Errors name the
//! step and its line in the file.

use crate::template;
use crate::{Error, Result};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;
use wflo_db::{RiskLevel, TimeoutPolicy};

/// What a step does (the shared vocabulary's type).
pub use wflo_types::StepKind;

/// How a failing step is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles each time.
    #[serde(with = "millis")]
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Duration::from_millis(200),
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// One step of a definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDef {
    /// Unique id within the workflow; names the step in the database and in events.
    pub id: String,
    /// What it does.
    pub kind: StepKind,
    /// Steps that must complete first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Retries.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Time limit of one attempt.
    #[serde(default, with = "opt_secs")]
    pub timeout: Option<Duration>,
    /// Kind-specific parameters (templated strings are rendered before the step runs).
    #[serde(default)]
    pub params: Map<String, Value>,
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.map(Duration::from_secs_f64))
    }
}

/// Approval defaults of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalPolicy {
    /// How long an approval waits before its timeout policy applies.
    #[serde(with = "opt_secs")]
    pub timeout: Option<Duration>,
    /// What happens then.
    pub on_timeout: TimeoutPolicy,
    /// Who is escalated to.
    pub escalate_to: Option<String>,
    /// Approvals of this risk or lower are approved automatically (by rule, recorded).
    pub auto_approve_max_risk: Option<RiskLevel>,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        ApprovalPolicy {
            timeout: Some(Duration::from_secs(24 * 3600)),
            on_timeout: TimeoutPolicy::Reject,
            escalate_to: None,
            auto_approve_max_risk: None,
        }
    }
}

/// Workflow-wide policies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Policies {
    /// The execution's budget (USD, exact).
    pub budget_usd: Option<Decimal>,
    /// Time limit of the whole run.
    #[serde(with = "opt_secs")]
    pub timeout: Option<Duration>,
    /// Approval defaults.
    pub approval: ApprovalPolicy,
}

/// A declared input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputDef {
    /// Shown to users.
    pub description: Option<String>,
    /// Used when the run gives none.
    pub default: Option<Value>,
}

/// A validated workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDef {
    /// Name; stored versions are per name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Declared inputs.
    pub inputs: BTreeMap<String, InputDef>,
    /// Policies.
    pub policies: Policies,
    /// Steps, in the order written.
    pub steps: Vec<StepDef>,
}

impl WorkflowDef {
    /// Starts a definition in Rust.
    pub fn builder(name: impl Into<String>) -> WorkflowBuilder {
        WorkflowBuilder {
            def: WorkflowDef {
                name: name.into(),
                description: None,
                inputs: BTreeMap::new(),
                policies: Policies::default(),
                steps: Vec::new(),
            },
        }
    }

    /// Parses and validates YAML text; errors name the step and its line.
    pub fn from_yaml(text: &str) -> Result<WorkflowDef> {
        let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| Error::Definition {
            step: None,
            line: e.location().map(|l| l.line()),
            message: format!("not valid YAML: {e}"),
        })?;
        let def = parse(&doc, Some(text))?;
        def.validate_with(Some(text))?;
        Ok(def)
    }

    /// Reads and parses a YAML file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<WorkflowDef> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Definition {
            step: None,
            line: None,
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        WorkflowDef::from_yaml(&text)
    }

    /// The stored (JSON) form; [`WorkflowDef::from_json`] reads it back.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Reads the stored form and validates it.
    pub fn from_json(value: &Value) -> Result<WorkflowDef> {
        let def: WorkflowDef =
            serde_json::from_value(value.clone()).map_err(|e| Error::Definition {
                step: None,
                line: None,
                message: format!("stored definition is unreadable: {e}"),
            })?;
        def.validate()?;
        Ok(def)
    }

    /// Refuses a definition with an `llm` step when no LLM provider is configured, naming the
    /// step, so the run is refused before anything is written.
    pub fn require_llm_provider(&self, configured: bool) -> Result<()> {
        match self.steps.iter().find(|s| s.kind == StepKind::Llm) {
            Some(step) if !configured => Err(Error::NotConfigured(format!(
                "step `{}` calls an LLM but no provider is configured; set OPENAI_API_KEY or \
                 ANTHROPIC_API_KEY (with OPENAI_BASE_URL or ANTHROPIC_BASE_URL for a compatible \
                 server), or WFLO_LLM_CASSETTE for a replay cassette; nothing was started",
                step.id
            ))),
            _ => Ok(()),
        }
    }

    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Validates (see the module docs).
    pub fn validate(&self) -> Result<()> {
        self.validate_with(None)
    }

    fn validate_with(&self, text: Option<&str>) -> Result<()> {
        let err = |step: &str, message: String| Error::Definition {
            step: Some(step.to_string()),
            line: text.and_then(|t| step_line(t, step)),
            message,
        };
        if self.name.trim().is_empty() {
            return Err(Error::Definition {
                step: None,
                line: None,
                message: "the workflow needs a name".into(),
            });
        }
        if self.steps.is_empty() {
            return Err(Error::Definition {
                step: None,
                line: None,
                message: "the workflow has no steps".into(),
            });
        }
        if let Some(b) = self.policies.budget_usd
            && b <= Decimal::ZERO
        {
            return Err(Error::Definition {
                step: None,
                line: None,
                message: format!("policies.budget_usd must be greater than zero, not {b}"),
            });
        }
        let mut seen = BTreeSet::new();
        for s in &self.steps {
            if s.id.is_empty()
                || !s
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(err(
                    &s.id,
                    format!("step id `{}` must be letters, digits, `_` or `-`", s.id),
                ));
            }
            if !seen.insert(s.id.as_str()) {
                return Err(err(&s.id, format!("step id `{}` is used twice", s.id)));
            }
        }
        for s in &self.steps {
            for d in &s.depends_on {
                if !seen.contains(d.as_str()) {
                    return Err(err(&s.id, format!("depends on unknown step `{d}`")));
                }
                if d == &s.id {
                    return Err(err(
                        &s.id,
                        format!("lists itself in depends_on; remove `{d}` from its depends_on"),
                    ));
                }
            }
            if s.retry.max_attempts == 0 {
                return Err(err(&s.id, "retry.max_attempts must be at least 1".into()));
            }
            required_params(s).map_err(|m| err(&s.id, m))?;
        }
        let order = self.topological_order().map_err(|cycle| {
            err(
                &cycle[0],
                format!("dependency cycle: {}", cycle.join(" -> ")),
            )
        })?;
        // Templates may use declared inputs and the outputs of (transitive) dependencies.
        let ancestors = self.ancestors(&order);
        for s in &self.steps {
            for (field, text) in string_params(&s.params) {
                let vars = template::variables(&text)
                    .map_err(|e| err(&s.id, format!("bad template in `{field}`: {e}")))?;
                for var in vars {
                    let mut parts = var.split('.');
                    match parts.next() {
                        Some("inputs") => {
                            if let Some(name) = parts.next()
                                && !self.inputs.contains_key(name)
                            {
                                return Err(err(
                                    &s.id,
                                    undeclared_input(&field, name, &self.inputs),
                                ));
                            }
                        }
                        Some("steps") => {
                            let Some(dep) = parts.next() else {
                                return Err(err(
                                    &s.id,
                                    format!(
                                        "template in `{field}` must name a step: steps.ID.output"
                                    ),
                                ));
                            };
                            if dep == s.id {
                                return Err(err(
                                    &s.id,
                                    format!(
                                        "template in `{field}` uses the step's own output (`steps.{dep}`), which does not exist while the step runs; use an input or the output of an earlier step"
                                    ),
                                ));
                            }
                            if !ancestors[&s.id].contains(dep) {
                                return Err(err(
                                    &s.id,
                                    format!(
                                        "template in `{field}` uses step `{dep}`, which is not among its dependencies; add it to depends_on"
                                    ),
                                ));
                            }
                        }
                        Some(other) => {
                            return Err(err(
                                &s.id,
                                format!(
                                    "template in `{field}` uses unknown variable `{other}`; use inputs.NAME or steps.ID.output"
                                ),
                            ));
                        }
                        None => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// The step ids in run order; a cycle is [`Error::Definition`] naming it.
    pub fn run_order(&self) -> Result<Vec<String>> {
        self.topological_order().map_err(|cycle| Error::Definition {
            step: cycle.first().cloned(),
            line: None,
            message: format!("dependency cycle: {}", cycle.join(" -> ")),
        })
    }

    /// Step ids in an order where every step comes after its dependencies (ties keep the
    /// written order). A cycle is returned as the ids on it.
    pub fn topological_order(&self) -> std::result::Result<Vec<String>, Vec<String>> {
        let mut done: Vec<String> = Vec::new();
        let mut remaining: Vec<&StepDef> = self.steps.iter().collect();
        while !remaining.is_empty() {
            let ready = remaining
                .iter()
                .position(|s| s.depends_on.iter().all(|d| done.contains(d)));
            match ready {
                Some(i) => done.push(remaining.remove(i).id.clone()),
                None => return Err(find_cycle(&remaining)),
            }
        }
        Ok(done)
    }

    fn ancestors(&self, order: &[String]) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for id in order {
            let step = self.step(id).expect("ordered ids exist");
            let mut set = BTreeSet::new();
            for d in &step.depends_on {
                set.insert(d.clone());
                set.extend(out.get(d).cloned().unwrap_or_default());
            }
            out.insert(id.clone(), set);
        }
        out
    }
}

/// The refusal of `{{ inputs.NAME }}` when NAME is not declared, saying how to declare it.
fn undeclared_input(field: &str, name: &str, inputs: &BTreeMap<String, InputDef>) -> String {
    let declared = if inputs.is_empty() {
        "the file declares no inputs".to_string()
    } else {
        format!(
            "declared inputs: {}",
            inputs.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    format!(
        "template in `{field}` uses undeclared input `{name}` ({declared}); declare it under `inputs:` (for example `inputs: {{{name}: {{default: ...}}}}`) or fix the name"
    )
}

fn find_cycle(remaining: &[&StepDef]) -> Vec<String> {
    // Walk dependencies among the blocked steps until one repeats.
    let mut path: Vec<String> = vec![remaining[0].id.clone()];
    loop {
        let current = remaining
            .iter()
            .find(|s| s.id == *path.last().unwrap())
            .unwrap();
        let next = current
            .depends_on
            .iter()
            .find(|d| remaining.iter().any(|s| &s.id == *d))
            .expect("a blocked step waits on another blocked step")
            .clone();
        if let Some(pos) = path.iter().position(|p| *p == next) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(next);
            return cycle;
        }
        path.push(next);
    }
}

fn required_params(s: &StepDef) -> std::result::Result<(), String> {
    let need = |names: &[&str]| -> std::result::Result<(), String> {
        for n in names {
            if !s.params.contains_key(*n) {
                return Err(format!("a `{}` step needs `{n}`", s.kind.as_str()));
            }
        }
        Ok(())
    };
    match s.kind {
        StepKind::Llm => need(&["model", "prompt"]),
        StepKind::Code => need(&["code"]),
        StepKind::Approval => need(&["message"]),
        StepKind::Tool => need(&["tool"]),
        StepKind::Checkpoint => Ok(()),
        other => Err(format!(
            "this build cannot run a `{other}` step; upgrade wflo"
        )),
    }
}

/// Every string parameter, with its dotted field name (nested objects and arrays included).
pub(crate) fn string_params(params: &Map<String, Value>) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::String(s) => out.push((prefix.to_string(), s.clone())),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, v)| walk(&format!("{prefix}[{i}]"), v, out)),
            Value::Object(o) => o
                .iter()
                .for_each(|(k, v)| walk(&format!("{prefix}.{k}"), v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (k, v) in params {
        walk(k, v, &mut out);
    }
    out
}

/// The 1-based line of `id: STEP` in the YAML text.
fn step_line(text: &str, step: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ").trim();
            t.strip_prefix("id:")
                .map(|rest| rest.trim().trim_matches(['"', '\'']) == step)
                .unwrap_or(false)
        })
        .map(|i| i + 1)
}

const STEP_FIELDS: [&str; 5] = ["id", "kind", "depends_on", "retry", "timeout_secs"];

/// Builds a definition from parsed YAML, with errors naming the step and line.
fn parse(doc: &Value, text: Option<&str>) -> Result<WorkflowDef> {
    let top = |message: String| Error::Definition {
        step: None,
        line: None,
        message,
    };
    let obj = doc
        .as_object()
        .ok_or_else(|| top("the file must be a mapping with name and steps".into()))?;
    for key in obj.keys() {
        if ![
            "name",
            "description",
            "inputs",
            "policies",
            "steps",
            "version",
        ]
        .contains(&key.as_str())
        {
            return Err(top(format!("unknown top-level field `{key}`")));
        }
    }
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| top("the workflow needs `name`".into()))?
        .to_string();
    let description = obj
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut inputs = BTreeMap::new();
    match obj.get("inputs") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let def = match v {
                    Value::Null => InputDef::default(),
                    Value::Object(o) => InputDef {
                        description: o
                            .get("description")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        default: o.get("default").cloned(),
                    },
                    other => InputDef {
                        description: None,
                        default: Some(other.clone()),
                    },
                };
                inputs.insert(k.clone(), def);
            }
        }
        Some(Value::Array(a)) => {
            for v in a {
                let k = v
                    .as_str()
                    .ok_or_else(|| top("inputs must be names or a mapping".into()))?;
                inputs.insert(k.to_string(), InputDef::default());
            }
        }
        Some(_) => {
            return Err(top(
                "inputs must be a mapping of name to {description, default}".into(),
            ));
        }
    }
    let policies = parse_policies(obj.get("policies")).map_err(top)?;
    let steps_v = obj
        .get("steps")
        .and_then(Value::as_array)
        .ok_or_else(|| top("the workflow needs `steps`, a list".into()))?;
    let mut steps = Vec::new();
    for (i, sv) in steps_v.iter().enumerate() {
        let so = sv
            .as_object()
            .ok_or_else(|| top(format!("step {} must be a mapping", i + 1)))?;
        let id = so
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| top(format!("step {} has no `id`", i + 1)))?
            .to_string();
        let err = |message: String| Error::Definition {
            step: Some(id.clone()),
            line: text.and_then(|t| step_line(t, &id)),
            message,
        };
        let kind_s = so
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| err("the step has no `kind`".into()))?;
        let kind = StepKind::from_str(kind_s).map_err(|_| {
            err(format!(
                "unknown kind `{kind_s}`; use one of {}",
                StepKind::NAMES.join(", ")
            ))
        })?;
        let depends_on = match so.get("depends_on") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|d| {
                    d.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| err("depends_on must list step ids".into()))
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(err("depends_on must list step ids".into())),
        };
        let retry = match so.get("retry") {
            None | Some(Value::Null) => RetryPolicy::default(),
            Some(Value::Object(r)) => RetryPolicy {
                max_attempts: r
                    .get("max_attempts")
                    .and_then(Value::as_u64)
                    .map(|n| n as u32)
                    .unwrap_or(1),
                backoff: Duration::from_millis(
                    r.get("backoff_ms").and_then(Value::as_u64).unwrap_or(200),
                ),
            },
            Some(_) => return Err(err("retry must be {max_attempts, backoff_ms}".into())),
        };
        let timeout = match so.get("timeout_secs") {
            None | Some(Value::Null) => None,
            Some(v) => Some(Duration::from_secs_f64(
                v.as_f64()
                    .filter(|s| *s > 0.0)
                    .ok_or_else(|| err("timeout_secs must be a positive number".into()))?,
            )),
        };
        let params: Map<String, Value> = so
            .iter()
            .filter(|(k, _)| !STEP_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        steps.push(StepDef {
            id,
            kind,
            depends_on,
            retry,
            timeout,
            params,
        });
    }
    Ok(WorkflowDef {
        name,
        description,
        inputs,
        policies,
        steps,
    })
}

fn parse_policies(v: Option<&Value>) -> std::result::Result<Policies, String> {
    let mut p = Policies::default();
    let Some(Value::Object(o)) = v else {
        return match v {
            None | Some(Value::Null) => Ok(p),
            _ => Err("policies must be a mapping".into()),
        };
    };
    if let Some(b) = o.get("budget_usd") {
        let text = match b {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err("policies.budget_usd must be a number of dollars".into()),
        };
        p.budget_usd = Some(
            Decimal::from_str(&text)
                .map_err(|_| format!("policies.budget_usd `{text}` is not a number"))?,
        );
    }
    if let Some(t) = o.get("timeout_secs") {
        p.timeout = Some(Duration::from_secs_f64(
            t.as_f64()
                .filter(|s| *s > 0.0)
                .ok_or("policies.timeout_secs must be positive")?,
        ));
    }
    if let Some(Value::Object(a)) = o.get("approval") {
        if let Some(t) = a.get("timeout_secs") {
            p.approval.timeout = Some(Duration::from_secs_f64(
                t.as_f64()
                    .filter(|s| *s > 0.0)
                    .ok_or("approval.timeout_secs must be positive")?,
            ));
        }
        if let Some(Value::String(s)) = a.get("on_timeout") {
            p.approval.on_timeout = s.parse().map_err(|e: wflo_types::Error| e.to_string())?;
        }
        if let Some(Value::String(s)) = a.get("escalate_to") {
            p.approval.escalate_to = Some(s.clone());
        }
        if let Some(Value::String(s)) = a.get("auto_approve_max_risk") {
            p.approval.auto_approve_max_risk =
                Some(s.parse().map_err(|e: wflo_types::Error| e.to_string())?);
        }
    }
    Ok(p)
}

/// Builds a [`WorkflowDef`] in Rust.
#[derive(Debug, Clone)]
pub struct WorkflowBuilder {
    def: WorkflowDef,
}

impl WorkflowBuilder {
    /// Declares an input.
    pub fn input(mut self, name: impl Into<String>, default: Option<Value>) -> Self {
        self.def.inputs.insert(
            name.into(),
            InputDef {
                description: None,
                default,
            },
        );
        self
    }

    /// The execution's budget.
    pub fn budget_usd(mut self, usd: Decimal) -> Self {
        self.def.policies.budget_usd = Some(usd);
        self
    }

    /// Approval defaults.
    pub fn approval_policy(mut self, policy: ApprovalPolicy) -> Self {
        self.def.policies.approval = policy;
        self
    }

    /// Adds a step; `params` is a JSON object of the kind's parameters.
    pub fn step(
        mut self,
        id: impl Into<String>,
        kind: StepKind,
        depends_on: &[&str],
        params: Value,
    ) -> Self {
        self.def.steps.push(StepDef {
            id: id.into(),
            kind,
            depends_on: depends_on.iter().map(|s| s.to_string()).collect(),
            retry: RetryPolicy::default(),
            timeout: None,
            params: params.as_object().cloned().unwrap_or_default(),
        });
        self
    }

    /// Sets the retry policy of the last step added.
    pub fn retry(mut self, max_attempts: u32, backoff: Duration) -> Self {
        if let Some(s) = self.def.steps.last_mut() {
            s.retry = RetryPolicy {
                max_attempts,
                backoff,
            };
        }
        self
    }

    /// Sets the timeout of the last step added.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        if let Some(s) = self.def.steps.last_mut() {
            s.timeout = Some(timeout);
        }
        self
    }

    /// Validates and returns the definition.
    pub fn build(self) -> Result<WorkflowDef> {
        self.def.validate()?;
        Ok(self.def)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name: demo
inputs:
  topic: {default: "rust"}
steps:
  - id: plan
    kind: llm
    model: gpt-4o-mini
    prompt: "Write about {{ inputs.topic }}"
  - id: run
    kind: code
    depends_on: [plan]
    code: "{{ steps.plan.output.code }}"
  - id: save
    kind: checkpoint
    depends_on: [run]
"#;

    fn err_of(yaml: &str) -> (Option<String>, Option<usize>, String) {
        match WorkflowDef::from_yaml(yaml).unwrap_err() {
            Error::Definition {
                step,
                line,
                message,
            } => (step, line, message),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_a_valid_definition() {
        let d = WorkflowDef::from_yaml(OK).unwrap();
        assert_eq!(d.steps.len(), 3);
        assert_eq!(d.steps[1].depends_on, vec!["plan"]);
        assert_eq!(d.topological_order().unwrap(), vec!["plan", "run", "save"]);
        let back = WorkflowDef::from_json(&d.to_json()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn a_cycle_names_the_steps_and_line() {
        let (step, line, msg) = err_of(
            "name: c\nsteps:\n  - id: a\n    kind: checkpoint\n    depends_on: [b]\n  - id: b\n    kind: checkpoint\n    depends_on: [a]\n",
        );
        assert!(msg.contains("cycle"), "{msg}");
        assert!(
            msg.contains("a -> b -> a") || msg.contains("b -> a -> b"),
            "{msg}"
        );
        assert!(matches!(step.as_deref(), Some("a") | Some("b")));
        assert!(line == Some(3) || line == Some(6), "{line:?}");
    }

    #[test]
    fn an_unknown_dependency_names_the_step() {
        let (step, line, msg) =
            err_of("name: c\nsteps:\n  - id: a\n    kind: checkpoint\n    depends_on: [ghost]\n");
        assert_eq!(step.as_deref(), Some("a"));
        assert_eq!(line, Some(3));
        assert!(msg.contains("unknown step `ghost`"), "{msg}");
    }

    #[test]
    fn an_unknown_kind_names_the_step() {
        let (step, line, msg) = err_of("name: c\nsteps:\n  - id: a\n    kind: teleport\n");
        assert_eq!(step.as_deref(), Some("a"));
        assert_eq!(line, Some(3));
        assert!(msg.contains("unknown kind `teleport`"), "{msg}");
    }

    #[test]
    fn bad_templates_name_the_step() {
        let (step, _, msg) = err_of(
            "name: c\nsteps:\n  - id: a\n    kind: code\n    code: \"{{ steps.b.output \"\n  - id: b\n    kind: checkpoint\n",
        );
        assert_eq!(step.as_deref(), Some("a"));
        assert!(msg.contains("bad template"), "{msg}");
        // A step that is not a dependency.
        let (step, _, msg) = err_of(
            "name: c\nsteps:\n  - id: a\n    kind: code\n    code: \"{{ steps.b.output }}\"\n  - id: b\n    kind: checkpoint\n",
        );
        assert_eq!(step.as_deref(), Some("a"));
        assert!(msg.contains("not among its dependencies"), "{msg}");
        // An undeclared input.
        let (step, _, msg) = err_of(
            "name: c\ninputs: {x: null}\nsteps:\n  - id: a\n    kind: code\n    code: \"{{ inputs.y }}\"\n",
        );
        assert_eq!(step.as_deref(), Some("a"));
        assert!(msg.contains("undeclared input `y`"), "{msg}");
    }

    #[test]
    fn an_undeclared_input_is_refused_with_or_without_an_inputs_block() {
        for (inputs, declared) in [
            ("", "declares no inputs"),
            (
                "inputs: {topic: {default: rust}}\n",
                "declared inputs: topic",
            ),
        ] {
            let (step, line, msg) = err_of(&format!(
                "name: c\n{inputs}steps:\n  - id: first\n    kind: checkpoint\n  - id: ask\n    kind: llm\n    model: gpt-4o-mini\n    prompt: \"About {{{{ inputs.nope }}}}\"\n"
            ));
            assert_eq!(step.as_deref(), Some("ask"), "{msg}");
            assert_eq!(line, Some(if inputs.is_empty() { 5 } else { 6 }), "{msg}");
            assert!(msg.contains("undeclared input `nope`"), "{msg}");
            assert!(msg.contains("`prompt`"), "{msg}");
            assert!(msg.contains(declared), "{msg}");
            assert!(msg.contains("inputs:"), "says where to declare it: {msg}");
        }
        // A declared input without a default is fine.
        WorkflowDef::from_yaml(
            "name: c\ninputs: [topic]\nsteps:\n  - id: a\n    kind: code\n    code: \"print('{{ inputs.topic }}')\"\n",
        )
        .unwrap();
    }

    #[test]
    fn a_step_reading_its_own_output_is_not_called_a_cycle() {
        let (step, _, msg) = err_of(
            "name: c\nsteps:\n  - id: a\n    kind: code\n    code: \"{{ steps.a.output.stdout }}\"\n",
        );
        assert_eq!(step.as_deref(), Some("a"));
        assert!(msg.contains("own output"), "{msg}");
        assert!(!msg.contains("cycle"), "{msg}");
        assert!(!msg.contains("add it to depends_on"), "{msg}");
        // Also when it lists itself as a dependency.
        let (step, _, msg) = err_of(
            "name: c\nsteps:\n  - id: a\n    kind: code\n    depends_on: [a]\n    code: \"{{ steps.a.output.stdout }}\"\n",
        );
        assert_eq!(step.as_deref(), Some("a"));
        assert!(msg.contains("lists itself in depends_on"), "{msg}");
        assert!(!msg.contains("cycle"), "{msg}");
    }

    #[test]
    fn an_llm_step_without_a_provider_is_refused_naming_it() {
        let d = WorkflowDef::from_yaml(OK).unwrap();
        d.require_llm_provider(true).unwrap();
        let e = d.require_llm_provider(false).unwrap_err();
        assert!(matches!(e, Error::NotConfigured(_)), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("step `plan`"), "{msg}");
        assert!(msg.contains("OPENAI_API_KEY"), "{msg}");
        // Without llm steps no provider is needed.
        let d =
            WorkflowDef::from_yaml("name: c\nsteps:\n  - id: a\n    kind: checkpoint\n").unwrap();
        d.require_llm_provider(false).unwrap();
    }

    #[test]
    fn duplicate_ids_and_missing_params_are_refused() {
        let (_, _, msg) = err_of(
            "name: c\nsteps:\n  - id: a\n    kind: checkpoint\n  - id: a\n    kind: checkpoint\n",
        );
        assert!(msg.contains("used twice"), "{msg}");
        let (step, _, msg) =
            err_of("name: c\nsteps:\n  - id: a\n    kind: llm\n    model: gpt-4o\n");
        assert_eq!(step.as_deref(), Some("a"));
        assert!(msg.contains("needs `prompt`"), "{msg}");
        let (_, _, msg) =
            err_of("name: c\npolicies: {budget_usd: 0}\nsteps:\n  - id: a\n    kind: checkpoint\n");
        assert!(msg.contains("greater than zero"), "{msg}");
    }

    #[test]
    fn the_builder_validates() {
        let d = WorkflowDef::builder("b")
            .step(
                "a",
                StepKind::Tool,
                &[],
                serde_json::json!({"tool": "echo"}),
            )
            .step("b", StepKind::Checkpoint, &["a"], serde_json::json!({}))
            .build()
            .unwrap();
        assert_eq!(d.steps.len(), 2);
        assert!(
            WorkflowDef::builder("b")
                .step(
                    "a",
                    StepKind::Tool,
                    &["zzz"],
                    serde_json::json!({"tool": "echo"})
                )
                .build()
                .is_err()
        );
    }
}
