//! Templating of step parameters: `{{ inputs.NAME }}` and `{{ steps.ID.output... }}`
//! (minijinja syntax, strict: an undefined variable is an error, never an empty string).

use serde_json::{Map, Value};
use std::collections::BTreeSet;

fn env() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env
}

/// The variables a template uses, as dotted paths (`inputs.topic`, `steps.plan.output`).
pub(crate) fn variables(text: &str) -> Result<BTreeSet<String>, String> {
    if !text.contains("{{") && !text.contains("{%") {
        return Ok(BTreeSet::new());
    }
    let env = env();
    let tmpl = env.template_from_str(text).map_err(|e| e.to_string())?;
    Ok(tmpl.undeclared_variables(true).into_iter().collect())
}

/// Renders one template against `ctx`.
pub(crate) fn render(text: &str, ctx: &Value) -> Result<String, String> {
    if !text.contains("{{") && !text.contains("{%") {
        return Ok(text.to_string());
    }
    let env = env();
    env.render_str(text, ctx).map_err(|e| {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        msg
    })
}

/// Renders every string inside `params` (nested objects and arrays included).
pub(crate) fn render_params(
    params: &Map<String, Value>,
    ctx: &Value,
) -> Result<Map<String, Value>, String> {
    fn walk(v: &Value, ctx: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => Value::String(render(s, ctx)?),
            Value::Array(a) => {
                Value::Array(a.iter().map(|v| walk(v, ctx)).collect::<Result<_, _>>()?)
            }
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), walk(v, ctx)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }
    params
        .iter()
        .map(|(k, v)| Ok((k.clone(), walk(v, ctx)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_inputs_and_step_outputs() {
        let ctx = json!({"inputs": {"n": 3}, "steps": {"plan": {"output": {"code": "print(1)"}}}});
        assert_eq!(render("n={{ inputs.n }}", &ctx).unwrap(), "n=3");
        assert_eq!(
            render("{{ steps.plan.output.code }}", &ctx).unwrap(),
            "print(1)"
        );
        assert!(render("{{ steps.nope.output }}", &ctx).is_err());
        assert_eq!(render("no template", &ctx).unwrap(), "no template");
    }

    #[test]
    fn lists_variables() {
        let v = variables("{{ inputs.a }} and {{ steps.b.output.x }}").unwrap();
        assert!(v.contains("inputs.a"), "{v:?}");
        assert!(v.iter().any(|x| x.starts_with("steps.b")), "{v:?}");
        assert!(variables("{{ broken ").is_err());
    }
}
