//! Canonical JSON: one text for one value, whatever the order its objects were built in.

use serde_json::Value;

/// `value` as compact JSON with the keys of every object sorted (by their UTF-8 bytes), at every
/// level. Hashes of it are stable across runs, machines and field order: LLM cache keys and
/// replay cassette hashes are computed from it, so its output must never change.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

fn write(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(x, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[{"y":1,"x":2}],"c":"é\""}}"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"é\"","d":[{"x":2,"y":1}]},"b":1}"#
        );
    }

    #[test]
    fn scalars_and_empties_are_written_as_serde_json_writes_them() {
        let v = json!({
            "f": 0.0, "g": 1.5, "n": -7, "big": u64::MAX, "t": true, "z": null,
            "s": "tab\tnl\n\u{1}", "e": {}, "l": [], "B": 1, "é": 2
        });
        assert_eq!(
            canonical_json(&v),
            r#"{"B":1,"big":18446744073709551615,"e":{},"f":0.0,"g":1.5,"l":[],"n":-7,"s":"tab\tnl\n\u0001","t":true,"z":null,"é":2}"#
        );
        assert_eq!(canonical_json(&json!("x")), r#""x""#);
        assert_eq!(canonical_json(&json!([2, 1])), "[2,1]");
    }

    #[test]
    fn field_order_does_not_matter() {
        let a: Value =
            serde_json::from_str(r#"{"x":{"b":[1,{"d":1,"c":2}],"a":0},"w":1}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"w":1,"x":{"a":0,"b":[1,{"c":2,"d":1}]}}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
    }
}
