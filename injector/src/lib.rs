//! `ssi-injector`: resolves `secrets-store:<path>#<key>` environment values and execs the app
//! (DESIGN.md 3.4).
//!
//! Not built yet: this crate only fixes its place in the workspace (core + vault, never kube). It
//! ships no binary until the env injection issue gives it one.
