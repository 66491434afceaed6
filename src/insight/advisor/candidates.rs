//! Candidate indexes for one statement on one table, from how the statement uses the
//! table's columns: equality (and join-key, `IN`) columns lead, then one range column or the
//! `ORDER BY` columns (with their direction, so `WHERE a = ? ORDER BY c DESC LIMIT ?` gets
//! `(a, c DESC)`), single and multi-column; and a covering variant (`INCLUDE` the other
//! columns the statement reads from the table) where an index-only scan could follow.
//! Where the statement has a constant predicate (see [`super::partial`]), each key list also
//! comes as a partial index carrying it, without the predicate's column in its keys.
//! Candidates an existing btree index already serves (its leading columns) are left out.
//! A key may be an expression (`(lower(email))`, see [`super::columns::expression_key`]);
//! it is never carried in `INCLUDE`, which takes columns only.

use super::catalog::Table;
use super::columns::{is_expression, ColumnUse, How};
use super::partial::ConstantPredicate;
use super::quote_ident;

/// Most key columns in a candidate.
const MAX_KEYS: usize = 3;
/// Most columns a covering candidate carries in `INCLUDE`.
const MAX_INCLUDE: usize = 3;

/// What the advice says of an index on a partitioned table, after its reason.
const PARTITIONED: &str = "partitioned: PostgreSQL builds this on every partition and \
    refuses CONCURRENTLY, so writes wait while it builds; to avoid that, create it ON ONLY the \
    parent, then CONCURRENTLY on each partition, and ALTER INDEX … ATTACH PARTITION each";

/// An index advice's `reason` for `table`, with what building it there costs beyond the
/// usual when the table is partitioned.
pub fn reason_on(table: &Table, reason: String) -> String {
    match table.partitioned {
        true => format!("{reason}; {PARTITIONED}"),
        false => reason,
    }
}

/// A hypothetical index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// Index into the run's table list.
    pub table: usize,
    /// Key columns and whether each is descending.
    pub keys: Vec<(String, bool)>,
    pub include: Vec<String>,
    /// A partial index's `WHERE` clause.
    pub predicate: Option<String>,
    /// Other candidates (numbers in the run's list) tried and chosen with this one: the
    /// other arms of an `OR` (see [`arms`]).
    pub with: Vec<usize>,
}

impl Candidate {
    pub fn key_names(&self) -> Vec<String> {
        self.keys.iter().map(|(c, _)| c.clone()).collect()
    }

    /// Key columns as written in the index definition (`col DESC` where descending; an
    /// expression key is already SQL, in its parentheses).
    pub fn key_labels(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|(c, d)| {
                let c = if is_expression(c) {
                    c.clone()
                } else {
                    quote_ident(c)
                };
                if *d {
                    format!("{c} DESC")
                } else {
                    c
                }
            })
            .collect()
    }

    /// `ON table (keys) [INCLUDE (…)]`.
    pub fn definition(&self, table: &Table) -> String {
        let mut s = format!("ON {} ({})", table.qualified, self.key_labels().join(", "));
        if !self.include.is_empty() {
            let inc: Vec<String> = self.include.iter().map(|c| quote_ident(c)).collect();
            s.push_str(&format!(" INCLUDE ({})", inc.join(", ")));
        }
        if let Some(p) = &self.predicate {
            s.push_str(&format!(" WHERE {p}"));
        }
        s
    }

    /// The statement that builds it: `CREATE INDEX CONCURRENTLY …`, but on a partitioned
    /// table, where PostgreSQL refuses CONCURRENTLY, a plain `CREATE INDEX` (see
    /// [`reason_on`]).
    pub fn create_sql(&self, table: &Table) -> String {
        let how = if table.partitioned {
            ""
        } else {
            " CONCURRENTLY"
        };
        format!("CREATE INDEX{how} {};", self.definition(table))
    }

    /// Is this candidate's key a leading part of `other`'s (same table)?
    pub fn is_prefix_of(&self, other: &Candidate) -> bool {
        self.table == other.table
            && (self.predicate == other.predicate || other.predicate.is_none())
            && self.keys.len() <= other.keys.len()
            && self
                .keys
                .iter()
                .zip(&other.keys)
                .all(|((a, _), (b, _))| a == b)
            && self
                .include
                .iter()
                .all(|c| other.include.contains(c) || other.keys.iter().any(|(k, _)| k == c))
    }
}

/// Candidates for the statement whose column uses are `uses` and constant predicates
/// `constants`, on table number `t` (written `written` in the statement).
pub fn for_table(
    uses: &[ColumnUse],
    constants: &[ConstantPredicate],
    written: &str,
    t: usize,
    table: &Table,
) -> Vec<Candidate> {
    let mine = |how: &[How]| -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = Vec::new();
        for u in uses {
            let key = u.key();
            // a column named like an expression key would be rendered as one
            let named = u.func.is_some() || !is_expression(&u.column);
            if how.contains(&u.how)
                && named
                && u.tables.iter().any(|x| x == written)
                && table.columns.contains(&u.column)
                && !v.iter().any(|(c, _)| c == &key)
            {
                v.push((key, u.desc));
            }
        }
        v
    };
    let mut eq = mine(&[How::Eq, How::Join]);
    let range = mine(&[How::Range]);
    let order = mine(&[How::Order]);
    // `deleted_at IS NULL` beside other filters is the predicate of partial variants, not
    // a key: as one (equality columns go by name) it took a place of the first three, and
    // on a stranger's logistics workload `tenant_id = ? AND status = ? AND deleted_at IS
    // NULL ORDER BY created_at` never got `(tenant_id, status, created_at)`. Alone it
    // stays a key (a queue's `processed_at IS NULL`).
    let null_only: Vec<&str> = (constants.iter())
        .filter(|p| p.tables.iter().any(|x| x == written))
        .filter_map(|p| p.sql.strip_suffix(" IS NULL").map(|_| p.column.as_str()))
        .collect();
    if eq.len() + range.len() + order.len() > null_only.len() {
        eq.retain(|(c, _)| !null_only.contains(&c.as_str()));
    }
    let read = mine(&[How::Eq, How::Join, How::Range, How::Order, How::Output]);
    let keys = key_lists(&eq, &range, &order);
    let mut out: Vec<Candidate> = Vec::new();
    for k in keys {
        if k.is_empty() || k.len() > MAX_KEYS {
            continue;
        }
        let plain = Candidate {
            table: t,
            keys: k,
            include: Vec::new(),
            predicate: None,
            with: Vec::new(),
        };
        out.extend(partials(&plain, constants, written, table));
        let include: Vec<String> = read
            .iter()
            .map(|(c, _)| c.clone())
            .filter(|c| !is_expression(c) && !plain.keys.iter().any(|(k, _)| k == c))
            .collect();
        if !include.is_empty() && include.len() <= MAX_INCLUDE {
            out.push(Candidate {
                include,
                ..plain.clone()
            });
        }
        out.push(plain);
    }
    let mut seen = Vec::new();
    out.retain(|c| {
        let fresh = !seen.contains(c);
        seen.push(c.clone());
        fresh && !table.covers(&c.key_names(), &c.include)
    });
    out
}

/// The key columns of each `OR` in `uses` whose arms all filter table `written` (as
/// `t.a = ? OR t.b > ?`), two or three of them and none served by an existing index: a
/// BitmapOr needs an index on each, and one alone serves none of the OR's rows, so the
/// greedy choice, adding one index at a time, saw no gain in any (on a stranger's helpdesk,
/// `tenant_id = ? AND (requester_id = ? OR assignee_id = ?)` got a tenant index, 40 ms
/// against 0.2 ms with the two arms indexed).
pub fn arms(uses: &[ColumnUse], written: &str, table: &Table) -> Vec<Vec<String>> {
    let mut ors: Vec<usize> = uses.iter().filter_map(|u| u.arm).collect();
    ors.sort_unstable();
    ors.dedup();
    let mut out = Vec::new();
    for or in ors {
        let under: Vec<&ColumnUse> = uses.iter().filter(|u| u.arm == Some(or)).collect();
        let one_table = under.iter().all(|u| {
            matches!(u.how, How::Eq | How::Range)
                && u.tables.len() == 1
                && u.tables[0] == written
                && table.columns.contains(&u.column)
        });
        let mut keys: Vec<String> = under.iter().map(|u| u.key()).collect();
        keys.sort();
        keys.dedup();
        // an arm an existing index serves needs nothing: the others are ordinary candidates
        keys.retain(|k| !table.serves(std::slice::from_ref(k)));
        if one_table && (2..=MAX_KEYS).contains(&keys.len()) {
            out.push(keys);
        }
    }
    out
}

/// Add to `cands` one candidate per column of `keys` (on table `t`), if not there, and one
/// standing for them all together: the first, `with` the others. Its number.
pub fn with_arms(cands: &mut Vec<Candidate>, t: usize, keys: &[String]) -> usize {
    let mut at = |c: Candidate| match cands.iter().position(|o| *o == c) {
        Some(i) => i,
        None => {
            cands.push(c);
            cands.len() - 1
        }
    };
    let one = |k: &String| Candidate {
        table: t,
        keys: vec![(k.clone(), false)],
        include: Vec::new(),
        predicate: None,
        with: Vec::new(),
    };
    let members: Vec<usize> = keys.iter().map(|k| at(one(k))).collect();
    at(Candidate {
        with: members[1..].to_vec(),
        ..one(&keys[0])
    })
}

/// `plain` as a partial index for each constant predicate on its table: the predicate's
/// column leaves the keys (every row in the index has the same value there).
fn partials(
    plain: &Candidate,
    constants: &[ConstantPredicate],
    written: &str,
    table: &Table,
) -> Vec<Candidate> {
    constants
        .iter()
        .filter(|p| p.tables.iter().any(|x| x == written) && table.columns.contains(&p.column))
        .filter_map(|p| {
            let keys: Vec<Col> = plain
                .keys
                .iter()
                .filter(|(c, _)| c != &p.column)
                .cloned()
                .collect();
            (!keys.is_empty()).then(|| Candidate {
                keys,
                predicate: Some(p.sql.clone()),
                ..plain.clone()
            })
        })
        .collect()
}

/// Key column lists: each equality or range column alone, equality pairs (both orders) and
/// the first three, equality columns followed by a range column or by the ORDER BY columns,
/// and the ORDER BY columns alone. Two equality columns lead a longer key in either order:
/// the statement is served alike, but which comes first decides which other statements the
/// index serves (`(tenant_id, status, created_at)` serves `tenant_id = ?` alone, `(status,
/// tenant_id, created_at)` does not), which the workload-wide trials judge. Only the name
/// order was tried: on a stranger's helpdesk, `tenant_id = ? AND status = ? ORDER BY
/// created_at DESC LIMIT 50 OFFSET ?` got `(tenant_id, status)` (20x slower there), its one
/// candidate with the sort column being `(status, tenant_id, created_at DESC)`, which served
/// none of the other statements filtering on `tenant_id`.
type Col = (String, bool);

fn key_lists(eq: &[Col], range: &[Col], order: &[Col]) -> Vec<Vec<Col>> {
    let mut keys: Vec<Vec<(String, bool)>> = Vec::new();
    for c in eq.iter().chain(range) {
        keys.push(vec![c.clone()]);
    }
    let lead: Vec<(String, bool)> = eq.iter().take(MAX_KEYS - 1).cloned().collect();
    for i in 0..eq.len() {
        for j in 0..eq.len() {
            if i != j {
                keys.push(vec![eq[i].clone(), eq[j].clone()]);
            }
        }
    }
    if eq.len() >= 3 {
        keys.push(eq.iter().take(MAX_KEYS).cloned().collect());
    }
    if !lead.is_empty() {
        for r in range {
            keys.push(lead.iter().chain(std::iter::once(r)).cloned().collect());
        }
        for one in eq {
            for r in range {
                keys.push(vec![one.clone(), r.clone()]);
            }
            if !order.is_empty() {
                keys.push(
                    std::iter::once(one.clone())
                        .chain(order.iter().cloned())
                        .take(MAX_KEYS)
                        .collect(),
                );
            }
        }
        if !order.is_empty() {
            keys.push(
                lead.iter()
                    .chain(order.iter())
                    .take(MAX_KEYS)
                    .cloned()
                    .collect(),
            );
        }
    }
    // the other orders of two equality columns before a range or the ORDER BY columns
    for other in other_leads(eq) {
        for r in range {
            keys.push(other.iter().chain(std::iter::once(r)).cloned().collect());
        }
        if !order.is_empty() {
            keys.push(other.iter().chain(order).take(MAX_KEYS).cloned().collect());
        }
    }
    if !order.is_empty() {
        keys.push(order.iter().take(MAX_KEYS).cloned().collect());
    }
    keys
}

/// Ordered pairs of the first three equality columns, but the name-ordered first two (the
/// lead [`key_lists`] tries first).
fn other_leads(eq: &[Col]) -> Vec<[Col; 2]> {
    let first = &eq[..eq.len().min(MAX_KEYS)];
    let mut out = Vec::new();
    for (i, a) in first.iter().enumerate() {
        for (j, b) in first.iter().enumerate() {
            if i != j && (i, j) != (0, 1) {
                out.push([a.clone(), b.clone()]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::catalog::Existing;
    use super::super::columns::column_uses;
    use super::*;
    use crate::insight::fingerprint::parse;

    fn table(indexes: Vec<Existing>) -> Table {
        Table {
            qualified: "public.orders".into(),
            name: "orders".into(),
            rows: 1e6,
            columns: ["id", "customer_id", "status", "created"]
                .map(String::from)
                .to_vec(),
            indexes,
            partitioned: false,
        }
    }

    fn keys(c: &[Candidate]) -> Vec<String> {
        c.iter()
            .map(|c| {
                let mut s = c.key_labels().join(",");
                if !c.include.is_empty() {
                    s.push_str(&format!("+{}", c.include.join(",")));
                }
                if let Some(p) = &c.predicate {
                    s.push_str(&format!(" WHERE {p}"));
                }
                s
            })
            .collect()
    }

    /// A full btree index `name` on `keys` of `orders`.
    fn btree(name: &str, keys: &[&str]) -> Existing {
        Existing {
            name: name.into(),
            keys: keys.iter().map(|k| Some(k.to_string())).collect(),
            include: vec![],
            btree: true,
            partial: false,
        }
    }

    /// The candidates' keys for `sql` on `orders` (no index, no constant predicate).
    fn plain_keys(sql: &str) -> Vec<String> {
        let st = parse(sql).unwrap_or_default();
        keys(&for_table(
            &column_uses(&st),
            &[],
            "orders",
            0,
            &table(vec![]),
        ))
    }

    #[test]
    fn equality_leads_then_range_or_order_with_direction() {
        let c = plain_keys("select id from orders where customer_id = $1 and status = $2 order by created desc limit 10");
        for want in [
            "customer_id",
            "customer_id,status",
            "customer_id,created DESC",
            "customer_id,status,created DESC",
            "created DESC",
            "customer_id+status,created,id",
        ] {
            assert!(c.contains(&want.to_string()), "{want} not in {c:?}");
        }
        let c = plain_keys("select * from orders where customer_id = $1 and created > $2");
        assert!(c.contains(&"customer_id,created".to_string()), "{c:?}");
    }

    #[test]
    fn two_equality_columns_lead_a_sorted_key_in_either_order() {
        // found on a stranger's helpdesk: only `(status, tenant_id, created DESC)` was tried
        let c = plain_keys("select id from orders where status = $1 and customer_id = $2 order by created desc limit 50");
        for want in [
            "customer_id,status,created DESC",
            "status,customer_id,created DESC",
        ] {
            assert!(c.contains(&want.to_string()), "{want} not in {c:?}");
        }
        let st =
            parse("select id from orders where status = $1 and customer_id = $2 and created > $3")
                .unwrap_or_default();
        let c = keys(&for_table(
            &column_uses(&st),
            &[],
            "orders",
            0,
            &table(vec![]),
        ));
        for want in ["customer_id,status,created", "status,customer_id,created"] {
            assert!(c.contains(&want.to_string()), "{want} not in {c:?}");
        }
    }

    #[test]
    fn the_arms_of_an_or_on_one_table_are_candidates_together() {
        let st = parse(
            "select id from orders o where o.created > $1 and (o.customer_id = $2 or o.status = $3)",
        )
        .unwrap_or_default();
        let uses = column_uses(&st);
        assert_eq!(
            arms(&uses, "orders", &table(vec![])),
            [vec!["customer_id".to_string(), "status".into()]]
        );
        let mut cands = for_table(&uses, &[], "orders", 0, &table(vec![]));
        let pair = with_arms(&mut cands, 0, &["customer_id".into(), "status".into()]);
        let of = |i: usize| keys(&cands[i..=i]).remove(0);
        assert_eq!(of(pair), "customer_id");
        assert_eq!(
            cands[pair].with.iter().map(|&j| of(j)).collect::<Vec<_>>(),
            ["status"]
        );
        // the same arms again: nothing new
        let n = cands.len();
        assert_eq!(
            with_arms(&mut cands, 0, &["customer_id".into(), "status".into()]),
            pair
        );
        assert_eq!(cands.len(), n);
        // an arm an index serves already, or arms on two tables: no pair
        let idx = btree("o_s", &["status"]);
        assert!(arms(&uses, "orders", &table(vec![idx])).is_empty());
        let st = parse("select o.id from orders o join lines l on l.order_id = o.id where o.status = $1 or l.sku = $2")
            .unwrap_or_default();
        assert!(arms(&column_uses(&st), "orders", &table(vec![])).is_empty());
        // AND alone makes no arms
        let st = parse("select id from orders where customer_id = $1 and status = $2")
            .unwrap_or_default();
        assert!(arms(&column_uses(&st), "orders", &table(vec![])).is_empty());
    }

    #[test]
    fn leading_columns_of_an_existing_index_are_not_candidates() {
        let st = parse("select * from orders where customer_id = $1 and status = $2")
            .unwrap_or_default();
        let idx = btree("o_c_s", &["customer_id", "status"]);
        let c = keys(&for_table(
            &column_uses(&st),
            &[],
            "orders",
            0,
            &table(vec![idx]),
        ));
        assert!(!c.contains(&"customer_id".to_string()), "{c:?}");
        assert!(!c.contains(&"customer_id,status".to_string()), "{c:?}");
        assert!(c.contains(&"status".to_string()), "{c:?}");
        // the covering form of an existing index is still a candidate, unless it exists
        let st = parse("select created from orders where customer_id = $1").unwrap_or_default();
        let uses = column_uses(&st);
        let plain = btree("o_c", &["customer_id"]);
        let c = keys(&for_table(
            &uses,
            &[],
            "orders",
            0,
            &table(vec![plain.clone()]),
        ));
        assert_eq!(c, ["customer_id+created"]);
        let covering = Existing {
            include: vec!["created".into()],
            ..plain
        };
        let c = keys(&for_table(&uses, &[], "orders", 0, &table(vec![covering])));
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn a_filter_on_lower_of_a_column_gets_an_expression_index() {
        // found on a stranger's shop workload: a login by `lower(email)` got no candidate
        let st = parse("select id, status from orders where lower(status) = lower($1)")
            .unwrap_or_default();
        let all = for_table(&column_uses(&st), &[], "orders", 0, &table(vec![]));
        let c = keys(&all);
        assert!(c.contains(&"(lower(status))".to_string()), "{c:?}");
        // the column alone serves no such filter; INCLUDE carries columns, not expressions
        assert!(!c.contains(&"status".to_string()), "{c:?}");
        assert!(
            c.contains(&"(lower(status))+id,status".to_string()),
            "{c:?}"
        );
        let plain = all.iter().find(|c| c.include.is_empty());
        assert_eq!(
            plain.map(|c| c.create_sql(&table(vec![]))).as_deref(),
            Some("CREATE INDEX CONCURRENTLY ON public.orders ((lower(status)));")
        );
        // an existing index on the column does not serve the expression
        let idx = btree("o_s", &["status"]);
        let st = parse("select id from orders o where upper(o.status) = 'X' and customer_id = $1")
            .unwrap_or_default();
        let c = keys(&for_table(
            &column_uses(&st),
            &[],
            "orders",
            0,
            &table(vec![idx]),
        ));
        assert!(
            c.contains(&"customer_id,(upper(status))".to_string()),
            "{c:?}"
        );
    }

    #[test]
    fn is_null_beside_other_filters_is_a_predicate_not_a_key() {
        let mut t = table(vec![]);
        t.columns.push("deleted_at".into());
        let cands = |sql: &str| {
            let st = parse(sql).unwrap_or_default();
            let constants = super::super::partial::constant_predicates(&st, true);
            keys(&for_table(&column_uses(&st), &constants, "orders", 0, &t))
        };
        let c = cands(
            "select id from orders where customer_id = $1 and status = $2 \
             and deleted_at is null order by created desc limit 50",
        );
        for want in [
            "customer_id,status,created DESC",
            "customer_id,status,created DESC WHERE deleted_at IS NULL",
        ] {
            assert!(c.contains(&want.to_string()), "{want} not in {c:?}");
        }
        let key = |k: &String| k.split(['+', ' ']).next().unwrap_or_default().to_string();
        assert!(!c.iter().any(|k| key(k).contains("deleted_at")), "{c:?}");
        // alone, it is the key (a queue of rows not yet processed)
        let c = cands("select id from orders where deleted_at is null");
        assert_eq!(c, ["deleted_at+id", "deleted_at"]);
    }

    #[test]
    fn a_constant_predicate_makes_partial_variants_without_its_column() {
        let st = parse(
            "select id from orders where status = 'open' and customer_id = $1 order by created desc limit 5",
        )
        .unwrap_or_default();
        let constants = super::super::partial::constant_predicates(&st, true);
        let all = for_table(&column_uses(&st), &constants, "orders", 0, &table(vec![]));
        let c = keys(&all);
        for want in [
            "customer_id WHERE status = 'open'",
            "customer_id,created DESC WHERE status = 'open'",
            "created DESC WHERE status = 'open'",
            "customer_id,status",
        ] {
            assert!(c.contains(&want.to_string()), "{want} not in {c:?}");
        }
        // no partial index keyed on its own predicate's column alone
        assert!(!c.iter().any(|k| k.starts_with("status WHERE")), "{c:?}");
        let partial = all
            .iter()
            .find(|c| c.predicate.is_some() && c.keys.len() == 1 && c.keys[0].0 == "customer_id");
        assert_eq!(
            partial.map(|c| c.definition(&table(vec![]))).as_deref(),
            Some("ON public.orders (customer_id) WHERE status = 'open'")
        );
    }
}
