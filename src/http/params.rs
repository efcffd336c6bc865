//! Query and body values whose rules the OpenAPI description declares
//! exactly as the server checks them (schemathesis holds the two to each
//! other): durations, page sizes, integers sent as JSON numbers.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::error::ApiError;
use crate::api::ErrorCode;

/// A duration in a query: a whole number and one unit (`s`, `m`, `h`,
/// `d`), e.g. `90s`, `10m`, `1h`, `7d`.
pub const DURATION_PATTERN: &str = "^[0-9]{1,6}(s|m|h|d)$";

/// Parses a [`DURATION_PATTERN`] value; `code` says which field was wrong.
pub fn duration(field: &str, text: &str, code: ErrorCode) -> Result<Duration, ApiError> {
    let invalid = || ApiError::new(code, format!("{field} is a number and a unit (s, m, h, d), e.g. 10m"));
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
    let (digits, unit) = text.split_at(unit_at);
    if digits.is_empty() || digits.len() > 6 {
        return Err(invalid());
    }
    let number: u64 = digits.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    Ok(Duration::from_secs(number * seconds))
}

/// A JSON integer, also when written as a number with a zero fraction
/// (`5.0`): JSON Schema counts that as an integer, so clients may send it.
pub fn integer<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = number
        .as_i64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        })
        .ok_or_else(|| serde::de::Error::custom(format!("expected an integer, found {number}")))?;
    T::try_from(whole).map_err(|_| serde::de::Error::custom(format!("{whole} is out of range")))
}

/// [`integer`] for optional fields.
pub fn optional_integer<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    #[derive(Deserialize)]
    struct Wrapped<T: TryFrom<i64>>(#[serde(deserialize_with = "integer")] T);
    Ok(Option::<Wrapped<T>>::deserialize(deserializer)?.map(|Wrapped(value)| value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_the_declared_pattern() {
        let ok = |text| duration("d", text, ErrorCode::InvalidQuery).unwrap();
        assert_eq!(ok("90s"), Duration::from_secs(90));
        assert_eq!(ok("10m"), Duration::from_secs(600));
        assert_eq!(ok("999999d"), Duration::from_secs(999_999 * 86_400));
        for bad in ["", "10", "m", "1h30m", "1000000s", "-1s", "1 s", "1y", "1000000years"] {
            assert!(duration("d", bad, ErrorCode::InvalidQuery).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn integers_may_have_a_zero_fraction() {
        #[derive(Deserialize)]
        struct Body {
            #[serde(deserialize_with = "integer")]
            n: i32,
            #[serde(default, deserialize_with = "optional_integer")]
            m: Option<i32>,
        }
        let body: Body = serde_json::from_str(r#"{"n": 337.0, "m": 2}"#).unwrap();
        assert_eq!((body.n, body.m), (337, Some(2)));
        assert!(serde_json::from_str::<Body>(r#"{"n": 1.5}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"n": 1e12}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"n": 1, "m": null}"#)
            .unwrap()
            .m
            .is_none());
    }
}

#[cfg(test)]
mod spec_tests {
    use utoipa::OpenApi;

    /// The duration parameters declare the pattern `duration` checks
    /// (attributes need a literal, so the spec is checked against it).
    #[test]
    fn duration_parameters_declare_the_checked_pattern() {
        let spec = serde_json::to_value(crate::http::routes::ApiDoc::openapi()).unwrap();
        let mut seen = 0;
        for item in spec["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    let name = parameter["name"].as_str().unwrap();
                    if ["active_within", "grace_period"].contains(&name) {
                        assert_eq!(parameter["schema"]["pattern"], super::DURATION_PATTERN, "{parameter}");
                        seen += 1;
                    }
                    if name == "cursor" && parameter["schema"]["type"] != "integer" {
                        let pattern = crate::queries::PageCursor::CURSOR_PATTERN;
                        assert_eq!(parameter["schema"]["pattern"], pattern, "{parameter}");
                    }
                }
            }
        }
        assert_eq!(seen, 2);
    }

    /// Every `system_id` a request body takes has the domain's pattern.
    #[test]
    fn system_ids_declare_the_checked_pattern() {
        let spec = serde_json::to_value(crate::http::routes::ApiDoc::openapi()).unwrap();
        let mut seen = 0;
        for (name, schema) in spec["components"]["schemas"].as_object().unwrap() {
            if let Some(system_id) = schema["properties"].get("system_id").filter(|_| name.ends_with("Body")) {
                assert_eq!(
                    system_id["pattern"],
                    crate::domain::machine::SYSTEM_ID_PATTERN,
                    "{name}"
                );
                seen += 1;
            }
        }
        assert!(seen >= 4, "{seen}");
    }
}

/// The tags of a runner or job as the spec declares them: at most 50, each
/// 1 to 64 of A-Z a-z 0-9 - _ . : / (compared lower-cased). The domain
/// (`normalise_tags`) checks the same rules.
pub struct TagList;

impl utoipa::PartialSchema for TagList {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
        ArrayBuilder::new()
            .items(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(crate::domain::runner::TAG_PATTERN)),
            )
            .max_items(Some(crate::domain::runner::MAX_TAGS))
            .into()
    }
}

impl utoipa::ToSchema for TagList {}

/// A JSON object only: serde would also read a struct from an array.
pub fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    if !value.is_object() {
        return Err(serde::de::Error::custom(format!("expected an object, found {value}")));
    }
    serde_json::from_value(value).map_err(serde::de::Error::custom)
}

/// [`object`] for optional fields (`null` is none).
pub fn optional_object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(value) if value.is_object() => serde_json::from_value(value)
            .map(Some)
            .map_err(serde::de::Error::custom),
        Some(value) => Err(serde::de::Error::custom(format!("expected an object, found {value}"))),
    }
}
