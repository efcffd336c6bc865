//! Reading the YAML file and `${VAR}` interpolation: a variable that is
//! not set is recorded as unresolved (only the commands that use its field
//! stop), and `WARDEN_*` variables override fields.

use super::*;

/// Parses the YAML file and expands `${NAME}` in its strings; a field whose
/// variable is not set becomes empty and is listed in `unresolved`. Map
/// keys become strings (provisioning ids are written as integers).
pub(super) fn read_yaml(
    path: &Path,
    unresolved: &mut Vec<UnresolvedVariable>,
) -> Result<serde_yaml::Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|source| ConfigError::Yaml {
        path: path.display().to_string(),
        source,
    })?;
    let value = if value.is_null() {
        serde_yaml::Value::Mapping(Default::default())
    } else {
        value
    };
    interpolate(value, &mut Vec::new(), unresolved)
}

fn interpolate(
    value: serde_yaml::Value,
    field: &mut Vec<String>,
    unresolved: &mut Vec<UnresolvedVariable>,
) -> Result<serde_yaml::Value, ConfigError> {
    use serde_yaml::Value;
    Ok(match value {
        Value::String(text) => Value::String(expand_env(&text).unwrap_or_else(|variable| {
            unresolved.push(UnresolvedVariable {
                field: field.join("."),
                variable,
            });
            String::new()
        })),
        Value::Sequence(items) => Value::Sequence(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    field.push(i.to_string());
                    let item = interpolate(item, field, unresolved);
                    field.pop();
                    item
                })
                .collect::<Result<_, _>>()?,
        ),
        Value::Mapping(map) => {
            let mut out = serde_yaml::Mapping::new();
            for (key, item) in map {
                let key = match key {
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(field_error(field.join("."), format!("unsupported key {other:?}")));
                    }
                };
                field.push(key.clone());
                let item = interpolate(item, field, unresolved)?;
                field.pop();
                out.insert(Value::String(key), item);
            }
            Value::Mapping(out)
        }
        Value::Tagged(tagged) => interpolate(tagged.value, field, unresolved)?,
        other => other,
    })
}

/// Replaces `${NAME}` with the variable's value; `$${` stays literal `${`.
pub(super) fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(body) = after.strip_prefix("${") {
            let Some(end) = body.find('}') else {
                out.push_str(after);
                rest = "";
                break;
            };
            let name = &body[..end];
            out.push_str(&std::env::var(name).map_err(|_| name.to_owned())?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}
