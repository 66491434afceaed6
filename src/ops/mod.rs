//! Operations: what orchestrators and SREs run next to the proxy. Today that is the health
//! check behind `pake orchestration --health-check` ([`health`], with one wire-level probe
//! per protocol in [`probe`]). The monitoring stack (Prometheus rules, Grafana dashboard)
//! and the deployment files (Dockerfile, compose, Kubernetes) that call it live in `docker/`.

pub mod health;
pub mod probe;
pub mod trim;
