//! Postgres integration tests: real PostgreSQL from the lab, real clients (tokio-postgres,
//! psql, pgbench), Pake in between. One binary for the area; tests run in parallel, each
//! with its own servers.

mod harness;

mod auth;
mod auth_query;
mod bad_input;
mod basic;
mod clients;
mod console;
mod differential;
mod faults;
mod forward;
mod huge_statements;
mod inject;
mod isolation;
mod lifecycle;
mod limits;
mod listen;
mod matrix;
mod observe;
mod openapi;
mod otlp;
mod pooling;
mod reactors;
mod replication;
mod routing;
mod session_state;
mod settings_pipelined;
mod startup_params;
mod statement_errors;
mod tls;
