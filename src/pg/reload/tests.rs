//! The reload steps without servers: the plan, and build → swap → drain under tokio's paused clock.

use super::*;

#[test]
fn reload_reports_what_needs_a_restart() {
    let old = Config::default();
    assert!(restart_only_changes(&old, &old.clone()).is_empty());
    let mut new = old.clone();
    new.general.workers = old.general.workers + 1;
    new.general.pg_threads = old.general.pg_threads + 1;
    new.general.pg_listen = "127.0.0.1:1".parse().unwrap();
    new.peering.peer_id = 3;
    let report = restart_only_changes(&old, &new);
    assert_eq!(
        report,
        [
            "general.pg_listen changed: takes effect after a restart",
            "general.workers changed: takes effect after a restart",
            "general.pg_threads changed: takes effect after a restart",
            "peering changed: takes effect after a restart",
        ]
    );
}

/// A configuration with these databases (`name` or `name:port`) and users `app` and `ops`.
fn config(dbs: &[&str], extra: &str) -> Config {
    let mut text = String::from("[general]\nadmin_users = [\"ops\"]\n");
    text.push_str(extra);
    for db in dbs {
        let (name, port) = db.split_once(':').unwrap_or((db, "5432"));
        text.push_str(&format!(
            "\n[[databases]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\n"
        ));
    }
    text.push_str("\n[[users]]\nname = \"app\"\npassword = \"a\"\n");
    text.push_str("\n[[users]]\nname = \"ops\"\npassword = \"o\"\n");
    let c = Config::parse(&text).expect("test config parses");
    c.validate().expect("test config is valid");
    c
}

fn key(database: &str, user: &str) -> PoolKey {
    PoolKey {
        database: database.into(),
        user: user.into(),
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn at_start_every_configured_pair_is_built_and_the_wildcard_is_not() {
    let c = config(&["a", "b", "*"], "");
    let p = plan::plan(&c, &c, &[], &[], &[]);
    assert_eq!(p.build_routing, names(&["a", "b"]));
    assert_eq!(
        p.build,
        [
            key("a", "app"),
            key("a", "ops"),
            key("b", "app"),
            key("b", "ops")
        ]
    );
    assert!(p.keep.is_empty() && p.drain.is_empty() && p.drop_routing.is_empty());
}

#[test]
fn reload_plan_adds_removes_replaces_and_keeps() {
    let old = config(&["a", "b", "c", "*"], "");
    let running = [
        key("a", "app"),
        key("b", "app"),
        key("c", "app"),
        key("made_later", "app"), // served through the wildcard
    ];
    let routed = names(&["a", "b", "c", "made_later"]);
    // b and the wildcard's server gone, c moved to another port, d added, a only resized
    let mut new = config(&["a", "c:6543", "d"], "");
    new.pool.pool_size = 50;
    new.users.retain(|u| u.name == "app");
    let p = plan::plan(&old, &new, &running, &[], &routed);
    assert_eq!(p.drop_routing, names(&["b", "c", "made_later"]));
    assert_eq!(p.build_routing, names(&["c", "d"]));
    assert_eq!(p.keep, [key("a", "app")]);
    assert_eq!(
        p.drain,
        [
            (key("b", "app"), plan::Drain::Removed),
            (key("c", "app"), plan::Drain::Replaced),
            (key("made_later", "app"), plan::Drain::Removed),
        ]
    );
    assert_eq!(p.build, [key("c", "app"), key("d", "app")]);
}

#[test]
fn names_served_through_a_changed_wildcard_are_rebuilt_at_their_next_login() {
    let old = config(&["a", "*"], "");
    let running = [key("a", "app"), key("a", "ops"), key("made_later", "app")];
    let routed = names(&["a", "made_later"]);
    let same = plan::plan(&old, &old, &running, &[], &routed);
    assert_eq!(same.keep, running, "nothing changed: everything kept");
    assert!(same.build.is_empty() && same.drain.is_empty());
    let new = config(&["a", "*:7000"], "");
    let p = plan::plan(&old, &new, &running, &[], &routed);
    assert_eq!(p.drop_routing, names(&["made_later"]));
    assert!(p.build_routing.is_empty());
    assert_eq!(p.drain, [(key("made_later", "app"), plan::Drain::Replaced)]);
    assert!(p.build.is_empty(), "not a configured name: built on demand");
}

#[test]
fn a_changed_password_replaces_only_that_users_pools() {
    let old = config(&["a"], "");
    let mut new = old.clone();
    new.users[1].password = Some("new".into()); // ops; app's login keeps the monitor's
    let running = [key("a", "app"), key("a", "ops")];
    let p = plan::plan(&old, &new, &running, &[], &names(&["a"]));
    assert!(p.drop_routing.is_empty() && p.build_routing.is_empty());
    assert_eq!(p.keep, [key("a", "app")]);
    assert_eq!(p.drain, [(key("a", "ops"), plan::Drain::Replaced)]);
    assert_eq!(p.build, [key("a", "ops")]);
}

fn proxy(c: Config) -> Arc<Proxy> {
    let metrics = Arc::new(crate::obs::metrics::Metrics::new());
    Proxy::new(c, metrics, Arc::default()).expect("proxy without TLS")
}

fn cluster(p: &Proxy, database: &str, user: &str) -> Option<Arc<Cluster>> {
    p.clusters.read().get(&key(database, user)).cloned()
}

#[tokio::test(start_paused = true)]
async fn start_builds_the_pools_before_any_login() {
    let p = proxy(config(&["a", "b", "*"], ""));
    assert!(p.pools().is_empty());
    p.start_pools().await;
    let mut keys: Vec<String> = p.pools().iter().map(|p| p.key.to_string()).collect();
    keys.sort();
    assert_eq!(keys, ["a/app", "a/ops", "b/app", "b/ops"]);
    assert_eq!(p.topologies().len(), 2);
    assert!(
        p.pools()
            .iter()
            .all(|p| p.counts().idle + p.counts().active == 0),
        "no server is connected to build a pool"
    );
    assert_eq!(p.generation(), 0, "nothing ran before: no session to tell");
}

#[tokio::test(start_paused = true)]
async fn apply_builds_swaps_and_drains() {
    let p = proxy(config(&["a", "b"], ""));
    p.start_pools().await;
    let a = cluster(&p, "a", "app").expect("a/app");
    let b = cluster(&p, "b", "app").expect("b/app");
    let mut new = config(&["a", "c"], "");
    new.pool.pool_size = 7;
    let report = p.apply(new);
    assert_eq!(p.generation(), 1);
    let kept = cluster(&p, "a", "app").expect("a/app kept");
    assert!(Arc::ptr_eq(&a, &kept), "an unchanged pool is kept");
    assert_eq!(kept.primary.settings().size, 7, "with the new size");
    assert!(cluster(&p, "b", "app").is_none(), "b is gone");
    let Err(closed) = b.primary.checkout().await else {
        panic!("b's pool is still open");
    };
    assert!(closed.is_closed(), "{closed}");
    assert!(
        cluster(&p, "c", "ops").is_some(),
        "c is built for every user"
    );
    assert!(
        report
            .iter()
            .any(|l| l.contains("pool b/app: database or user removed")),
        "{report:?}"
    );
    assert!(
        report.iter().any(|l| l == "pool c/app: added"),
        "{report:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_fails_validation_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("pake.toml");
    let good = config(&["a"], "");
    let p = proxy(good);
    p.start_pools().await;
    p.set_source(crate::pg::proxy::ConfigSource {
        path: Some(path.clone()),
        overrides: crate::config::QuickStart::default(),
    });
    let before = cluster(&p, "a", "app").expect("a/app");
    // pool_size 0 parses but breaks a rule: named in the error
    std::fs::write(
        &path,
        "[pool]\npool_size = 0\n\n[[databases]]\nname = \"z\"\nhost = \"h\"\n",
    )
    .expect("write");
    let e = p.reload().await.expect_err("invalid");
    assert!(e.to_string().contains("pool.pool_size"), "{e}");
    assert_eq!(p.generation(), 0);
    assert!(cluster(&p, "z", "app").is_none());
    let after = cluster(&p, "a", "app").expect("a/app still there");
    assert!(Arc::ptr_eq(&before, &after));
    assert_eq!(p.config().pool.pool_size, 20);
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_first_sample_is_bounded() {
    let c = config(&["a"], "");
    let replica = crate::config::Replica {
        host: "127.0.0.1".into(),
        port: 1,
        weight: 100,
        zone: None,
    };
    // a monitor that never samples (none is spawned for this one)
    let t = Topology::new(
        "a",
        &[replica],
        c.routing.clone(),
        Arc::new(crate::obs::metrics::Metrics::new()),
    );
    let start = tokio::time::Instant::now();
    let limit = std::time::Duration::from_secs(4);
    assert_eq!(crate::pg::build::first_samples(&[t], limit).await, 0);
    assert_eq!(start.elapsed(), limit, "gave up at the bound, not before");
    let none = Topology::new(
        "b",
        &[],
        c.routing.clone(),
        Arc::new(crate::obs::metrics::Metrics::new()),
    );
    assert_eq!(crate::pg::build::first_samples(&[none], limit).await, 1);
    assert_eq!(start.elapsed(), limit, "nothing to sample: no wait");
}

/// `auth_user` on for every database: users without a `[[users]]` entry are looked up.
const LOOKUP: &str = "auth_user = \"app\"\n";

#[test]
fn looked_up_users_pools_are_kept_while_their_database_looks_users_up() {
    let old = config(&["a", "b", "*"], LOOKUP);
    let configured = [
        key("a", "app"),
        key("a", "ops"),
        key("b", "app"),
        key("b", "ops"),
    ];
    let looked_up = [
        key("a", "alice"),
        key("b", "alice"),
        key("made_later", "alice"),
    ];
    let running: Vec<PoolKey> = configured.iter().chain(&looked_up).cloned().collect();
    let routed = names(&["a", "b", "made_later"]);
    let same = plan::plan(&old, &old, &running, &looked_up, &routed);
    assert_eq!(same.keep, running, "nothing changed: everything kept");
    assert!(same.build.is_empty() && same.drain.is_empty());
    // without the looked-up list they would be users removed from the configuration
    let blind = plan::plan(&old, &old, &running, &[], &routed);
    assert_eq!(blind.drain.len(), 3);

    // a stops looking users up, the wildcard's server moved (it serves b now)
    let mut new = config(&["a", "*:7000"], LOOKUP);
    new.databases[0].auth_user = Some(String::new());
    let p = plan::plan(&old, &new, &running, &looked_up, &routed);
    assert_eq!(
        p.drain,
        [
            (key("b", "app"), plan::Drain::Replaced),
            (key("b", "ops"), plan::Drain::Replaced),
            (key("a", "alice"), plan::Drain::Removed),
            (key("b", "alice"), plan::Drain::Replaced),
            (key("made_later", "alice"), plan::Drain::Replaced),
        ]
    );
    assert!(
        p.build.is_empty(),
        "a looked-up user's pools are built at its login"
    );
    // b and the wildcard entry gone: their looked-up users' pools go with them
    let new = config(&["a"], LOOKUP);
    let p = plan::plan(&old, &new, &running, &looked_up, &routed);
    let removed: Vec<_> = p.drain.iter().filter(|(k, _)| k.user == "alice").collect();
    assert_eq!(
        removed,
        [
            &(key("b", "alice"), plan::Drain::Removed),
            &(key("made_later", "alice"), plan::Drain::Removed),
        ]
    );
    assert!(p.keep.contains(&key("a", "alice")));
    assert!(
        p.build.is_empty(),
        "a looked-up user's pools are built at its login"
    );

    // alice gets a [[users]] entry: her configured pools replace the looked-up ones
    let mut new = old.clone();
    let mut alice = new.users[0].clone();
    alice.name = "alice".into();
    new.users.push(alice);
    let p = plan::plan(&old, &new, &running, &looked_up, &routed);
    assert!(p
        .drain
        .contains(&(key("a", "alice"), plan::Drain::Replaced)));
    assert!(p.build.contains(&key("a", "alice")) && p.build.contains(&key("b", "alice")));
}

fn looked_up_entry(name: &str) -> crate::pg::proxy::UserEntry {
    let verifier = postgres_protocol::password::scram_sha_256(b"pw");
    crate::pg::proxy::UserEntry {
        config: crate::config::User::named(name),
        secret: crate::pg::auth::Secret::from_config(name, &verifier),
        method: crate::pg::auth::Method::ScramSha256,
        looked_up: true,
        looked_up_at: Some(std::time::Instant::now()),
    }
}

#[tokio::test(start_paused = true)]
async fn a_looked_up_user_gets_pools_at_its_login_that_reload_keeps_or_drops() {
    let p = proxy(config(&["a", "b"], LOOKUP));
    p.start_pools().await;
    let alice = looked_up_entry("alice");
    assert!(cluster(&p, "a", "alice").is_none(), "not built at start");
    let built = p.cluster("a", &alice).expect("built at its first login");
    assert!(built.looked_up && built.passthrough.is_some());
    let configured = cluster(&p, "a", "app").expect("a/app");
    assert!(
        Arc::ptr_eq(&built.topology, &configured.topology),
        "the database's one replica monitor"
    );
    assert!(Arc::ptr_eq(&built, &p.cluster("a", &alice).expect("again")));
    let mut ghost = looked_up_entry("ghost");
    ghost.looked_up = false;
    assert!(
        p.cluster("a", &ghost).is_none(),
        "neither configured nor looked up"
    );
    let on_b = p.cluster("b", &alice).expect("b/alice");

    // a RELOAD that resizes keeps the pools, with the new size
    let mut resized = config(&["a", "b"], LOOKUP);
    resized.pool.pool_size = 7;
    p.apply(resized.clone());
    let kept = cluster(&p, "a", "alice").expect("kept by RELOAD");
    assert!(Arc::ptr_eq(&built, &kept));
    assert_eq!(kept.primary.settings().size, 7);

    // b removed, and a no longer looks users up: both dropped and closed
    let mut new = config(&["a"], LOOKUP);
    new.databases[0].auth_user = Some(String::new());
    let report = p.apply(new);
    assert!(cluster(&p, "a", "alice").is_none() && cluster(&p, "b", "alice").is_none());
    for gone in [&built, &on_b] {
        let Err(closed) = gone.primary.checkout().await else {
            panic!("a dropped pool is still open");
        };
        assert!(closed.is_closed(), "{closed}");
    }
    assert!(
        report
            .iter()
            .any(|l| l.contains("pool a/alice: database or user removed")),
        "{report:?}"
    );
    assert!(p.cluster("a", &alice).is_none(), "no lookup: no pools");
    assert!(cluster(&p, "a", "app").is_some());
}
