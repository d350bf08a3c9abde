//! Why an object is not admitted, in the two kinds the apiserver tells apart.

/// A refusal, with its reason for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The object, or one of our annotations on it, cannot be read as written (the review's
    /// status code 400): the manifest needs fixing.
    #[error("{0}")]
    Invalid(String),
    /// Readable, but against the policy (403): ask for something else, or ask the operator.
    #[error("{0}")]
    Forbidden(String),
}

impl Refusal {
    /// The reason for a person, whichever the kind.
    pub fn message(&self) -> &str {
        match self {
            Refusal::Invalid(message) | Refusal::Forbidden(message) => message,
        }
    }
}
