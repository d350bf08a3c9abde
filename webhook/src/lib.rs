//! `ssi-webhook`: the admission webhook (DESIGN.md 3.3).
//!
//! Not built yet: this crate only fixes its place in the workspace (it depends on `ssi-core` and
//! never on `ssi-vault`). It ships no binary until the admission webhook issue gives it one, so
//! nothing can be deployed that pretends to work.
