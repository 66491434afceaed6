//! The Pake configs shipped in `docker/` load and validate with Pake's own config code, the
//! way the containers use them (file, plus the variables and flags they are given).

use pake::config::{Config, QuickStart};
use std::path::Path;

#[test]
fn compose_config_is_valid_and_names_the_compose_backends() {
    let config = Config::load(Path::new("docker/pake.compose.toml")).expect("valid config");
    let db = config.database("app").expect("database app");
    assert_eq!(db.host, "pg-primary");
    assert_eq!(db.replicas[0].host, "pg-replica");
    assert_eq!(config.general.pg_listen.port(), 6432);
    assert_eq!(config.general.admin_listen.map(|a| a.port()), Some(9930));
    assert!(
        config.general.pg_listen.ip().is_unspecified(),
        "reachable from outside the container"
    );
}

/// The indented block after `key: |` in a YAML file.
fn block_scalar(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let head = lines.next().expect("the key");
    let indent = head.len() - head.trim_start().len();
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .map(|l| l.get(indent + 2..).unwrap_or("").to_string() + "\n")
        .collect()
}

/// The value of `key: value` (first occurrence).
fn scalar(yaml: &str, key: &str) -> String {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .expect("the key")
        .trim()
        .to_string()
}

#[test]
fn kubernetes_configmap_with_the_deployment_env_and_args_is_valid() {
    let cm = std::fs::read_to_string("docker/kubernetes/configmap.yaml").expect("configmap");
    let base = Config::parse(&block_scalar(&cm, "pake.toml")).expect("pake.toml parses");
    let secret = std::fs::read_to_string("docker/kubernetes/secret.example.yaml").expect("secret");
    let deployment =
        std::fs::read_to_string("docker/kubernetes/deployment.yaml").expect("deployment");
    let args: Vec<&str> = deployment
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "args:")
        .skip(1)
        .map_while(|l| l.strip_prefix("- "))
        .collect();
    assert_eq!(args[0], "serve", "{args:?}");
    let replicas = args
        .windows(2)
        .filter(|w| w[0] == "--pg-replica")
        .map(|w| w[1].to_string())
        .collect();
    let config = QuickStart {
        pg_primary: Some(scalar(&secret, "pg-primary-url")),
        pg_replicas: replicas,
        ..QuickStart::default()
    }
    .apply(base)
    .expect("quick start on top of the ConfigMap");
    config.validate().expect("valid");
    assert_eq!(config.databases[0].replicas.len(), 1);
    assert_eq!(config.general.shutdown_timeout.0.as_secs(), 30);
}
