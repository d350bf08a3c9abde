//! `ssi-csi`: the CSI node driver `secrets-store.csi.deckhouse.io` (DESIGN.md 3.2).
//!
//! Not built yet: this crate only fixes its place in the workspace (core + vault + kube). It ships
//! no binary until the CSI node driver issue gives it one.
