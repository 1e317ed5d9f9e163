//! A request refused by a domain rule (unknown id, a state that forbids the change, ...),
//! as the store and the use cases report it. HTTP is not known here: the one error type
//! of the service (`error::ApiError`) maps each kind to a status.

/// Which kind of rule refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Malformed or invalid input.
    Invalid,
    /// No such thing (also for things the caller may not see).
    NotFound,
    /// Conflicts with the current state.
    Conflict,
    /// Well-formed but refused by a rule.
    Unprocessable,
}

/// A refusal: its kind, a stable slug clients switch on (e.g. `invalid-state`) and a
/// sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub slug: &'static str,
    pub detail: String,
}

impl Refusal {
    pub fn not_found(what: &str, id: &str) -> Self {
        Self {
            kind: RefusalKind::NotFound,
            slug: "not-found",
            detail: format!("no {what} with id {id:?}"),
        }
    }

    pub fn conflict(slug: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind: RefusalKind::Conflict,
            slug,
            detail: detail.into(),
        }
    }

    pub fn unprocessable(slug: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind: RefusalKind::Unprocessable,
            slug,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.slug, self.detail)
    }
}
