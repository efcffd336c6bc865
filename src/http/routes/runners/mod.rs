//! The runner protocols' routes: `/api/runners/*`, runner tokens only.
//!
//! Two dialects over one model, each in a file of its own: warden's
//! native protocol (GitLab style, [`native`]) and Project-W's
//! ([`project_w`]). Their logic lives below HTTP, in `fleet::native` and
//! `fleet::project_w`: each handler parses its request, calls one function
//! there and maps the answer. This file holds what both parse alike: how
//! a native call names its machine, and what a machine says about itself.

pub mod native;
pub mod project_w;

use actix_web::{web, HttpRequest};
use serde::Deserialize;
use utoipa::ToSchema;
use warden_events::machine::MachineInfo;

use crate::api::ErrorCode;
use crate::http::error::ApiError;

const SYSTEM_ID_HEADER: &str = "x-runner-system-id";

/// Where a request of the native protocol names its machine: body, then
/// header, then query. System ids beginning with `pw-` name the machines
/// of Project-W sessions and are refused here: a native call must not act
/// as (or take jobs for) a Project-W machine.
pub(super) fn system_id(request: &HttpRequest, from_body: Option<String>) -> Result<Option<String>, ApiError> {
    let named = from_body
        .or_else(|| {
            request
                .headers()
                .get(SYSTEM_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .or_else(|| {
            web::Query::<SystemIdQuery>::from_query(request.query_string())
                .ok()
                .and_then(|q| q.into_inner().system_id)
        });
    if named
        .as_deref()
        .is_some_and(|id| id.starts_with(crate::fleet::sessions::SYSTEM_ID_PREFIX))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidSystemId,
            "system ids beginning with pw- belong to Project-W sessions",
        ));
    }
    Ok(named)
}

#[derive(Deserialize)]
struct SystemIdQuery {
    system_id: Option<String>,
}

pub(super) fn required_system_id(request: &HttpRequest, from_body: Option<String>) -> Result<String, ApiError> {
    system_id(request, from_body)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::MissingSystemId,
            "name the runner machine: `system_id` in the body, the X-Runner-System-Id header or the query",
        )
    })
}

/// What a machine says about itself (the native protocol's `info`).
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MachineInfoBody {
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    name: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    version: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    revision: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    platform: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    architecture: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256, pattern = "^[^\\x00]*$")]
    source_code_url: Option<String>,
    #[serde(default, deserialize_with = "crate::http::params::optional_integer")]
    priority: Option<i32>,
}

impl From<MachineInfoBody> for MachineInfo {
    fn from(body: MachineInfoBody) -> MachineInfo {
        MachineInfo {
            name: body.name,
            version: body.version,
            revision: body.revision,
            platform: body.platform,
            architecture: body.architecture,
            source_code_url: body.source_code_url,
            priority: body.priority,
        }
    }
}
