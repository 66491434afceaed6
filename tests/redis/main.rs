//! Redis integration tests: real Redis from the lab (standalone and a 3-primary cluster,
//! plaintext or TLS-only), real clients (redis-cli, redis-benchmark) and a hand-driven RESP
//! client, Pake in between. One binary for the area; tests run in parallel, each with its own servers.

mod harness;

mod bad_input;
mod budget;
mod client_tracking;
mod clients;
mod cluster_links;
mod coherence;
mod commands;
mod compat;
mod differential;
mod faults;
mod limits;
mod links;
mod matrix;
mod pause;
mod random_args;
mod sentinel;
mod tls;
mod write_through;
