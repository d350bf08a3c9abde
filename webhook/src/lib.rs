//! `ssi-webhook`: the admission webhook (DESIGN.md 3.3).
//!
//! So far its pure core exists: [`mutate::mutate`], one pod-template mutation for Pods and every
//! workload kind (secrets-store volumes made read-only and required to name an SSI, the import
//! shorthand, the subPath policy), and [`review::review`], AdmissionReview in and out with the
//! patch computed by diffing, and [`router::router`], the `POST /mutate` route with the SSI
//! existence warnings, [`tls::CertStore`], the serving certificate reloaded on kubelet's symlink
//! swap, and [`server::serve_https`], rustls + HTTP/1.1 and HTTP/2 with graceful draining. The
//! reload poller, the admin port, the binary and env injection come with the rest of the webhook
//! issue; until then the crate ships no binary, so nothing can be deployed that pretends to work.
//!
//! Design choice: objects stay JSON from request to patch. A typed round trip through
//! k8s-openapi would drop fields this build does not know, and the diff would then delete them
//! from the user's object.

pub mod mutate;
pub mod review;
pub mod router;
pub mod server;
pub mod tls;
