//! The API's errors, with Toxiproxy's messages and status codes (its
//! api.go), written as `{"error": MESSAGE, "status": CODE}`.

use serde_json::json;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub message: String,
    pub status: u16,
}

impl ApiError {
    pub fn new(message: &str, status: u16) -> ApiError {
        ApiError {
            message: message.into(),
            status,
        }
    }

    pub fn bad_body(detail: &str) -> ApiError {
        ApiError::new(&format!("bad request body: {detail}"), 400)
    }

    pub fn missing(field: &str) -> ApiError {
        ApiError::new(&format!("missing required field: {field}"), 400)
    }

    pub fn invalid_stream() -> ApiError {
        ApiError::new(
            "stream was invalid, can be either upstream or downstream",
            400,
        )
    }

    pub fn invalid_type() -> ApiError {
        ApiError::new("invalid toxic type", 400)
    }

    pub fn proxy_not_found() -> ApiError {
        ApiError::new("proxy not found", 404)
    }

    pub fn proxy_exists() -> ApiError {
        ApiError::new("proxy already exists", 409)
    }

    pub fn toxic_not_found() -> ApiError {
        ApiError::new("toxic not found", 404)
    }

    pub fn toxic_exists() -> ApiError {
        ApiError::new("toxic already exists", 409)
    }

    pub fn internal(message: &str) -> ApiError {
        ApiError::new(message, 500)
    }

    pub fn body(&self) -> String {
        json!({"error": self.message, "status": self.status}).to_string()
    }
}
