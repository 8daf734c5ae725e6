//! The one error type of the admin API, rendered in the proxy's JSON error shape:
//! `{"error": {"message", "type", "param", "code"}}`.

use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
}

impl AdminError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        AdminError {
            status,
            code,
            message: message.into(),
            param: None,
        }
    }

    /// A bad field of the request body.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        AdminError {
            param: Some(param.to_string()),
            ..AdminError::new(400, "invalid_request", message)
        }
    }

    pub fn body(&self) -> Vec<u8> {
        let kind = match self.status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        };
        json!({"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}})
            .to_string()
            .into_bytes()
    }
}
