//! JSON request bodies: an object, always. serde alone would also read a
//! struct from an array (`[]` or `[null]`), which the API does not take.

use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use crate::api::ErrorCode;

/// A JSON body that must be an object of type `T` (use in place of
/// `web::Json`; the same size limit and error answers apply).
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let value = web::Json::<Value>::from_request(request, payload);
        Box::pin(async move {
            let web::Json(value) = value.await?;
            Ok(Json(from_object(value)?))
        })
    }
}

/// `T` from a JSON value that must be an object.
pub fn from_object<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::new(ErrorCode::InvalidField, "the body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|error| ApiError::new(ErrorCode::InvalidField, error.to_string()))
}
