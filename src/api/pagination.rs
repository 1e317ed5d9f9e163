//! Lists: `?limit=N` (default 50, max 500) and an opaque `?cursor=`; answers
//! `{"items": [...], "next_cursor": "..." | null}`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
// Query-string parameters, optional (utoipa would document them as path parameters).
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => Ok(n as usize),
            Some(n) => Err(ApiError::validation(format!(
                "limit must be between 1 and {MAX_LIMIT}, got {n}"
            ))),
        }
    }

    /// The key to continue after, decoded from the opaque cursor.
    pub fn after(&self) -> Result<Option<String>, ApiError> {
        match &self.cursor {
            None => Ok(None),
            Some(c) if c.is_empty() => Ok(None),
            Some(c) => B64URL
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .map(Some)
                .ok_or_else(|| ApiError::validation("cursor is not one this service issued")),
        }
    }
}

pub fn encode_cursor(key: &str) -> String {
    B64URL.encode(key.as_bytes())
}

/// One page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListPage<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> ListPage<T> {
    pub fn new(items: Vec<T>, next_key: Option<String>) -> Self {
        Self {
            items,
            next_cursor: next_key.as_deref().map(encode_cursor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_roundtrip_and_garbage_is_refused() {
        let p = PageParams {
            limit: None,
            cursor: Some(encode_cursor("node_abc")),
        };
        assert_eq!(p.after().unwrap().as_deref(), Some("node_abc"));
        let bad = PageParams {
            limit: None,
            cursor: Some("!!!".into()),
        };
        assert!(bad.after().is_err());
    }

    #[test]
    fn limits_are_bounded() {
        let p = |n| PageParams {
            limit: Some(n),
            cursor: None,
        };
        assert_eq!(PageParams::default().limit().unwrap(), 50);
        assert_eq!(p(500).limit().unwrap(), 500);
        assert!(p(0).limit().is_err());
        assert!(p(501).limit().is_err());
    }
}
