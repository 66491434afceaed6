//! Query-insight integration tests: statements really executed on a lab PostgreSQL (timed
//! here with tokio-postgres, as the proxy will time them), fed to `Insight::record`, and the
//! engine's answers checked against what was sent. One binary; each test owns its servers.

mod harness;

mod advisor;
mod api;
mod dexter;
mod explain_safety;
mod helpdesk;
mod latency;
mod load;
mod prepared;
mod recover;
mod shapes;
mod statements;
