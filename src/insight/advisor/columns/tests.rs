//! Unit tests of [`super`]: which columns a statement uses, and how.

use super::*;
use crate::insight::fingerprint::parse;

fn uses(sql: &str) -> Vec<(String, Vec<String>, How)> {
    column_uses(&parse(sql).unwrap_or_default())
        .into_iter()
        .map(|u| (u.column, u.tables, u.how))
        .collect()
}

fn t(s: &str) -> Vec<String> {
    vec![s.to_string()]
}

#[test]
fn where_join_and_order_columns() {
    let u = uses(
        "select o.id from orders o join Customers c on c.id = o.customer_id \
         where c.email = $1 and o.created > now() - interval '1 day' order by o.created",
    );
    assert!(
        u.contains(&("email".into(), t("customers"), How::Eq)),
        "{u:?}"
    );
    assert!(u.contains(&("customer_id".into(), t("orders"), How::Join)));
    assert!(u.contains(&("id".into(), t("customers"), How::Join)));
    assert!(u.contains(&("created".into(), t("orders"), How::Range)));
    assert!(u.contains(&("created".into(), t("orders"), How::Order)));
}

#[test]
fn unqualified_columns_may_belong_to_any_table_of_the_scope() {
    let u = uses("select * from a, s.b where x in (1, 2) and y between 1 and 2");
    assert!(u.contains(&("x".into(), vec!["a".into(), "s.b".into()], How::Eq)));
    assert!(u.contains(&("y".into(), vec!["a".into(), "s.b".into()], How::Range)));
}

#[test]
fn updates_deletes_and_subqueries() {
    assert_eq!(
        uses("update t set a = 1 where k = $1"),
        vec![("k".into(), t("t"), How::Eq)]
    );
    assert_eq!(
        uses("delete from t where k is null"),
        vec![("k".into(), t("t"), How::Eq)]
    );
    let w = |sql: &str| written_tables(&parse(sql).unwrap_or_default());
    assert_eq!(w("insert into s.t (a) values (1)"), vec!["s.t".to_string()]);
    assert_eq!(w("update t set a = 1 where k = 2"), vec!["t".to_string()]);
    assert_eq!(w("delete from t where k = 2"), vec!["t".to_string()]);
    assert!(w("select 1").is_empty());
    let u = uses("select * from t where id in (select tid from u where u.flag = true)");
    assert!(u.contains(&("flag".into(), t("u"), How::Eq)), "{u:?}");
    assert!(u.contains(&("id".into(), t("t"), How::Eq)));
}

#[test]
fn order_by_keeps_its_order_and_reads_positions_and_aliases() {
    let order = |sql: &str| -> Vec<(String, bool)> {
        column_uses(&parse(sql).unwrap_or_default())
            .into_iter()
            .filter(|u| u.how == How::Order)
            .map(|u| (u.column, u.desc))
            .collect()
    };
    let o = |cols: &[(&str, bool)]| -> Vec<(String, bool)> {
        cols.iter().map(|(c, d)| (c.to_string(), *d)).collect()
    };
    assert_eq!(
        order("select * from posts order by user_id, blog_id limit 10"),
        o(&[("user_id", false), ("blog_id", false)])
    );
    assert_eq!(
        order("select * from posts where x = 1 order by user_id desc, blog_id"),
        o(&[("user_id", true), ("blog_id", false)])
    );
    assert_eq!(
        order("select user_id from posts order by 1 desc limit 10"),
        o(&[("user_id", true)])
    );
    assert_eq!(
        order("select id, user_id as u from posts order by u desc, 1"),
        o(&[("user_id", true), ("id", false)])
    );
    // a position past `*` names a column only the catalog knows
    assert!(order("select * from posts order by 1 desc").is_empty());
    assert!(order("select id, * from posts order by 2").is_empty());
    assert_eq!(
        order("select id, * from posts order by 1"),
        o(&[("id", false)])
    );
    assert!(order("select id from posts order by 0, 2").is_empty());
}

#[test]
fn a_json_field_named_by_a_literal_is_a_use_of_the_expression() {
    // found on a stranger's logistics workload: an order-reference search
    let keys = |sql: &str| -> Vec<(String, How, Option<usize>)> {
        column_uses(&parse(sql).unwrap_or_default())
            .into_iter()
            .filter(|u| u.how != How::Output)
            .map(|u| (u.key(), u.how, u.arm))
            .collect()
    };
    let mut u = keys(
        "select id from shipments s where s.tenant_id = $1 \
         and (s.meta->>'order_ref' = $2 or s.tracking_code = $2)",
    );
    u.sort();
    let or = u[0].2;
    assert!(or.is_some(), "{u:?}");
    assert_eq!(
        u,
        vec![
            ("(meta ->> 'order_ref')".into(), How::Eq, or),
            ("tenant_id".into(), How::Eq, None),
            ("tracking_code".into(), How::Eq, or),
        ]
    );
    assert_eq!(
        keys("select 1 from t where (doc ->> 'it''s') > $1 and tags ->> 0 = 'a'"),
        vec![
            ("(tags ->> 0)".into(), How::Eq, None),
            ("(doc ->> 'it''s')".into(), How::Range, None),
        ]
    );
    // a field chosen by a parameter, or a field of a field: no expression to index
    for sql in [
        "select 1 from t where doc ->> $1 = 'x'",
        "select 1 from t where doc -> 'a' ->> 'b' = 'x'",
    ] {
        assert!(keys(sql).is_empty(), "{sql}: {:?}", keys(sql));
    }
}

#[test]
fn lower_and_upper_of_a_column_are_uses_of_the_expression() {
    let keys = |sql: &str| -> Vec<(String, Vec<String>, How)> {
        column_uses(&parse(sql).unwrap_or_default())
            .into_iter()
            .map(|u| (u.key(), u.tables, u.how))
            .collect()
    };
    assert_eq!(
        keys("select id from customers c where lower(c.email) = lower($1)"),
        vec![
            ("(lower(email))".into(), t("customers"), How::Eq),
            ("id".into(), t("customers"), How::Output)
        ]
    );
    let u = keys(
        "select 1 from a join b on upper(a.\"Code\") = b.code \
         where lower(b.name) like 'x%' and lower(a.k) in ('p', 'q')",
    );
    for want in [
        ("(upper(\"Code\"))", "a", How::Join),
        ("code", "b", How::Join),
        ("(lower(name))", "b", How::Range),
        ("(lower(k))", "a", How::Eq),
    ] {
        assert!(
            u.contains(&(want.0.into(), t(want.1), want.2)),
            "{want:?} not in {u:?}"
        );
    }
    // other calls, several arguments, a non-column argument: no use
    for sql in [
        "select 1 from t where md5(k) = $1",
        "select 1 from t where lower(k || 'x') = $1",
        "select 1 from t where \"lower\"(k) = $1",
        "select 1 from t where s.lower(k) = $1",
        "select 1 from t where coalesce(k, j) = $1",
    ] {
        assert!(keys(sql).is_empty(), "{sql}: {:?}", keys(sql));
    }
}

#[test]
fn a_filter_on_an_inlined_cte_is_a_filter_on_its_table() {
    let u = uses("with cte as (select * from posts) select * from cte where id = 1");
    assert!(u.contains(&("id".into(), t("posts"), How::Eq)), "{u:?}");
    let u = uses(
        "with c as not materialized (select id, blog_id from s.posts) \
         select * from c x where x.blog_id = 2 order by x.id",
    );
    assert!(
        u.contains(&("blog_id".into(), t("s.posts"), How::Eq)),
        "{u:?}"
    );
    assert!(
        u.contains(&("id".into(), t("s.posts"), How::Order)),
        "{u:?}"
    );
    // PostgreSQL keeps these apart from the outer filter, or their columns are not the
    // table's own
    for sql in [
        "with c as materialized (select * from posts) select * from c where id = 1",
        "with c (pid) as (select id from posts) select * from c where pid = 1",
        "with c as (select id as pid from posts) select * from c where pid = 1",
        "with c as (select p.* from posts p join blogs b on b.id = p.blog_id) \
         select * from c where id = 1",
        "with c as (select user_id, count(*) from posts group by user_id) \
         select * from c where user_id = 1",
        "with c as (select distinct user_id from posts) select * from c where user_id = 1",
    ] {
        let u = uses(sql);
        assert!(
            !u.iter()
                .any(|(_, tables, how)| tables == &t("posts") && *how == How::Eq),
            "{sql}: {u:?}"
        );
    }
}

#[test]
fn a_view_of_one_table_maps_its_columns() {
    let v = |sql: &str| view_columns(&parse(sql).unwrap_or_default());
    let renamed = v(" SELECT posts.id AS view_id,\n    posts.user_id\n   FROM posts;")
        .expect("one table, columns");
    assert_eq!(renamed.table, "posts");
    assert_eq!(renamed.base("view_id").as_deref(), Some("id"));
    assert_eq!(renamed.base("user_id").as_deref(), Some("user_id"));
    assert_eq!(renamed.base("id"), None);
    let star = v("select * from s.posts where blog_id > 3").expect("star");
    assert_eq!(
        (star.table.as_str(), star.base("id").as_deref()),
        ("s.posts", Some("id"))
    );
    for sql in [
        "select p.id from posts p join blogs b on b.id = p.blog_id",
        "select user_id, count(*) from posts group by user_id",
        "select distinct user_id from posts",
        "select id + 1 as x from posts",
        "select id from posts union select id from blogs",
    ] {
        assert_eq!(v(sql), None, "{sql}");
    }
}

#[test]
fn the_columns_an_update_sets_with_their_table() {
    let s = |sql: &str| set_columns(&parse(sql).unwrap_or_default());
    let pair = |t: &str, c: &str| (t.to_string(), c.to_string());
    assert_eq!(
        s("update shop.Orders o set status = $1, \"Total\" = total + 1 where o.id = $2"),
        [pair("shop.orders", "status"), pair("shop.orders", "Total")]
    );
    assert_eq!(
        s("update orders set (status, total) = ($1, $2) from customers c where c.id = orders.customer_id"),
        [pair("orders", "status"), pair("orders", "total")]
    );
    assert!(s("delete from orders where id = 1").is_empty());
    assert!(s("select status from orders").is_empty());
}
