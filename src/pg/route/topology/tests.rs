use super::*;

#[test]
fn lag_time_from_primary_history() {
    let mut side = Side::default();
    side.record_primary(100);
    std::thread::sleep(Duration::from_millis(30));
    side.record_primary(200);
    side.record_primary(200);
    assert_eq!(
        side.history.len(),
        2,
        "unchanged positions are not repeated"
    );
    assert_eq!(lag_time(&side.history, 200), Duration::ZERO, "caught up");
    assert!(
        lag_time(&side.history, 150) < Duration::from_millis(30),
        "behind since the second sample"
    );
    assert!(
        lag_time(&side.history, 50) >= Duration::from_millis(30),
        "behind since the first"
    );
}

#[test]
fn lsn_parsing() {
    assert_eq!(parse_lsn("0/0"), Some(0));
    assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
    assert_eq!(parse_lsn("x"), None);
}

fn topo(balance: Balance, n: usize) -> Arc<Topology> {
    let replicas: Vec<Replica> = (0..n)
        .map(|i| Replica {
            host: format!("r{i}"),
            port: 5432,
            weight: if i == 0 { 1 } else { 99 },
            zone: Some(if i == 0 { "a".into() } else { "b".into() }),
        })
        .collect();
    let settings = Routing {
        load_balancing: balance,
        ..Routing::default()
    };
    let t = Topology::new("db", &replicas, settings, Arc::new(Metrics::new()));
    for r in &t.replicas {
        r.healthy.store(true, Ordering::Relaxed);
    }
    t
}

#[test]
fn read_your_writes_needs_a_sample_sent_after_the_commit() {
    let t = topo(Balance::RoundRobin, 1);
    let in_flight = t.begin_primary_sample(); // sent before the commit
    let committed_at = t.primary_seq();
    t.end_primary_sample(in_flight, 100); // completes after it: may predate the write
    assert_eq!(t.primary_lsn_after(committed_at), None);
    let next = t.begin_primary_sample();
    t.end_primary_sample(next, 200);
    assert_eq!(t.primary_lsn_after(committed_at), Some(200));
}

#[test]
fn a_promoted_replica_takes_writes_and_no_reads() {
    let t = topo(Balance::RoundRobin, 2);
    assert!(t.promoted().is_none());
    t.promote(1, 2, "test");
    assert_eq!(t.promoted().map(|r| r.index), Some(1));
    // promoting the same node again changes nothing (one failover counted)
    t.promote(1, 2, "test");
    let failovers = t
        .metrics
        .primary_failovers
        .with_label_values(&["db", &t.replicas[1].name])
        .get();
    assert_eq!(failovers, 1);
    for _ in 0..10 {
        t.replicas[1].healthy.store(true, Ordering::Relaxed);
        assert_eq!(
            t.choose(None).map(|r| r.index),
            Some(0),
            "reads skip the writer"
        );
    }
}

#[test]
fn choose_skips_unhealthy_banned_and_behind() {
    let t = topo(Balance::RoundRobin, 3);
    t.replicas[0].healthy.store(false, Ordering::Relaxed);
    t.ban(&t.replicas[1], "test");
    assert_eq!(t.choose(None).map(|r| r.index), Some(2));
    t.replicas[2].replay_lsn.store(10, Ordering::Relaxed);
    assert!(t.choose(Some(11)).is_none(), "not replayed far enough");
    assert_eq!(t.choose(Some(10)).map(|r| r.index), Some(2));
}

#[test]
fn least_outstanding_and_weights_and_zone() {
    let t = topo(Balance::LeastOutstanding, 2);
    t.replicas[0].outstanding.store(5, Ordering::Relaxed);
    for _ in 0..10 {
        assert_eq!(t.choose(None).map(|r| r.index), Some(1));
    }
    let t = topo(Balance::Weighted, 2);
    let ones = (0..1000)
        .filter(|_| t.choose(None).map(|r| r.index) == Some(1))
        .count();
    assert!(ones > 900, "weight 99 vs 1: {ones}");
    let mut t = topo(Balance::RoundRobin, 2);
    Arc::get_mut(&mut t).unwrap().settings.zone = Some("a".into());
    for _ in 0..10 {
        assert_eq!(
            t.choose(None).map(|r| r.index),
            Some(0),
            "same zone preferred"
        );
    }
}

#[test]
fn functions_need_the_catalog() {
    let t = topo(Balance::RoundRobin, 1);
    let f = |names: &[&str]| -> Vec<Box<str>> { names.iter().map(|n| (*n).into()).collect() };
    assert!(t.functions_safe(&[]));
    assert!(t.functions_safe(&f(&["random"])));
    assert!(!t.functions_safe(&f(&["lower"])), "catalog not loaded yet");
    t.catalog.store(Arc::new(Catalog {
        volatile: [("lower".into(), false), ("my_writer".into(), true)]
            .into_iter()
            .collect(),
        loaded: true,
    }));
    assert!(t.functions_safe(&f(&["lower"])));
    assert!(!t.functions_safe(&f(&["my_writer"])));
    assert!(!t.functions_safe(&f(&["not_in_catalog"])));
}
