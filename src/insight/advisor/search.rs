//! The workload-wide choice: every candidate is tried as a hypopg index against every
//! fingerprint it could serve (those using its leading column), with their real-valued
//! samples, and weighted by the execution time each fingerprint took; the best is kept
//! (hypothetically created, so later candidates are judged given it), and so on — a greedy
//! set, not one index per query. Then each chosen index is taken out again: one the others
//! make redundant (a leading part of another, or no longer cutting any fingerprint's cost by
//! `advisor_min_saving`) is dropped. What is left is what the report proposes.

use super::candidates::Candidate;
use super::catalog::Table;
use super::workload::{cost, Fp};
use super::{catalog_err, AdvisorError};
use crate::insight::explain;
use crate::insight::InsightConfig;
use serde_json::Value;
use tokio_postgres::Client;

/// Most indexes proposed per database and run.
const MAX_CHOSEN: usize = 16;
/// Most plans one search makes while choosing (pruning and the report add a few): bounds the
/// run time and the load on the database whatever the workload's variety.
pub const MAX_PLANS: usize = 5000;
/// Candidates whose gain is within this fraction of the best are equal: the smaller wins.
const TIE: f64 = 0.03;

/// What the planner did with one candidate for one fingerprint.
#[derive(Debug, Clone)]
pub struct Trial {
    pub fp: usize,
    pub cost: f64,
    pub used: bool,
}

#[derive(Debug, Clone)]
struct Eval {
    trials: Vec<Trial>,
    gain_ms: f64,
    /// Some fingerprint's cost falls by `advisor_min_saving` (the gain is weighed against
    /// the write upkeep only when choosing, as that upkeep falls with each index chosen).
    saves: bool,
    size: i64,
}

/// A chosen index: its candidate, hypopg oid and estimated size.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub cand: usize,
    pub oid: i64,
    pub size: i64,
}

/// The state of one search.
pub struct Search<'a> {
    pub client: &'a Client,
    pub cfg: &'a InsightConfig,
    pub fps: &'a [Fp],
    pub tables: &'a [Table],
    pub cands: Vec<Candidate>,
    /// Per candidate: the fingerprints it is tried against.
    pub affected: Vec<Vec<usize>>,
    /// Per fingerprint: plan cost today, and with the indexes chosen so far.
    pub base: Vec<f64>,
    pub current: Vec<f64>,
    /// Per table: the fingerprints writing to it (see [`Search::upkeep`]).
    pub writers: Vec<Vec<usize>>,
    pub chosen: Vec<Chosen>,
    /// Plans made so far (for the report's run statistics and [`MAX_PLANS`]).
    pub trials: usize,
    /// The choice stopped at [`MAX_PLANS`] with candidates left untried.
    pub truncated: bool,
}

/// `(oid, size)` of a new hypothetical index.
pub async fn hypo_create(
    client: &Client,
    table: &Table,
    c: &Candidate,
) -> Result<(i64, i64), AdvisorError> {
    let def = format!("CREATE INDEX {}", c.definition(table));
    let row = client
        .query_one(
            "SELECT indexrelid::int8, hypopg_relation_size(indexrelid)::int8 \
             FROM hypopg_create_index($1::text)",
            &[&def],
        )
        .await
        .map_err(catalog_err)?;
    Ok((row.get(0), row.get(1)))
}

pub async fn hypo_drop(client: &Client, oid: i64) -> Result<(), AdvisorError> {
    client
        .execute("SELECT hypopg_drop_index($1::int8::oid)", &[&oid])
        .await
        .map_err(catalog_err)?;
    Ok(())
}

/// Does `plan` use the hypothetical index `oid`?
pub fn uses_index(plan: &Value, oid: i64) -> bool {
    let tag = format!("<{oid}>");
    explain::index_names(plan).iter().any(|n| n.contains(&tag))
}

impl Search<'_> {
    /// Plan `fps` with the hypothetical index `oid` present.
    async fn trials(&mut self, fps: &[usize], oid: i64) -> Result<Vec<Trial>, AdvisorError> {
        let mut out = Vec::new();
        for &f in fps {
            let (c, plans) = cost(self.client, &self.fps[f]).await?;
            self.trials += 1;
            out.push(Trial {
                fp: f,
                cost: c,
                used: plans.iter().any(|p| uses_index(p, oid)),
            });
        }
        Ok(out)
    }

    async fn evaluate(&mut self, i: usize) -> Result<Eval, AdvisorError> {
        let c = self.cands[i].clone();
        let table = &self.tables[c.table];
        let (oid, size) = hypo_create(self.client, table, &c).await?;
        let affected = self.affected[i].clone();
        let trials = self.trials(&affected, oid).await;
        hypo_drop(self.client, oid).await?;
        let trials = trials?;
        tracing::trace!(candidate = %c.definition(table), ?trials, "advisor trial");
        let keep = 1.0 - self.cfg.advisor_min_saving;
        let mut gain_ms = 0.0;
        let mut saves = false;
        for t in trials.iter().filter(|t| t.used) {
            let (cur, base) = (self.current[t.fp], self.base[t.fp].max(f64::MIN_POSITIVE));
            gain_ms += self.fps[t.fp].total_ms * ((cur - t.cost).max(0.0) / base);
            saves |= t.cost <= cur * keep;
        }
        Ok(Eval {
            trials,
            gain_ms,
            saves,
            size,
        })
    }

    /// Does candidate `i` save enough, and more time than its upkeep?
    fn qualifies(&self, i: usize, e: &Eval) -> bool {
        e.saves && e.gain_ms > self.upkeep(i, &e.trials)
    }

    /// The write time candidate `i` would add (ms): each write to its table takes a share of
    /// its time for one index among the heap and the indexes it would then maintain. The
    /// time is the write's as it would be with the indexes chosen so far and the candidate
    /// (`trials`, its plans with it), scaled by plan cost: an UPDATE found by a sequential
    /// scan spends its time scanning, not maintaining indexes, and the index that finds its
    /// rows removes that time — charging it in full vetoed every other index on the table
    /// (found on a stranger's shop workload, where a slow `UPDATE … WHERE tracking = ?` hid
    /// the index a frequent read needed until the advice was applied and asked for again).
    /// A write that cannot be planned (an INSERT) is charged all its time.
    pub fn upkeep(&self, i: usize, trials: &[Trial]) -> f64 {
        let t = self.cands[i].table;
        let chosen = self
            .chosen
            .iter()
            .filter(|ch| self.cands[ch.cand].table == t)
            .count();
        // the heap, the existing indexes, those chosen and this one (if not among them)
        let new = usize::from(!self.chosen.iter().any(|ch| ch.cand == i));
        let structures = (self.tables[t].indexes.len() + chosen + new + 1) as f64;
        self.writers[t]
            .iter()
            .map(|&w| {
                let base = self.base[w];
                let part = if base > 0.0 {
                    let with = trials.iter().filter(|tr| tr.fp == w).map(|tr| tr.cost);
                    (with.fold(self.current[w], f64::min) / base).clamp(0.0, 1.0)
                } else {
                    1.0
                };
                self.fps[w].total_ms * part / structures
            })
            .sum()
    }

    /// Choose indexes greedily, then drop the redundant ones.
    pub async fn run(&mut self) -> Result<(), AdvisorError> {
        let mut evals: Vec<Option<Eval>> = vec![None; self.cands.len()];
        let mut out: Vec<bool> = vec![false; self.cands.len()];
        while self.chosen.len() < MAX_CHOSEN {
            for i in 0..self.cands.len() {
                if evals[i].is_none() && !out[i] && self.worth_trying(i, &evals) {
                    if self.trials >= MAX_PLANS {
                        self.truncated = true;
                        break;
                    }
                    evals[i] = Some(self.evaluate(i).await?);
                }
            }
            let ok: Vec<bool> = (evals.iter().enumerate())
                .map(|(i, e)| e.as_ref().is_some_and(|e| self.qualifies(i, e)))
                .collect();
            let Some(best) = pick(&evals, &ok, &out) else {
                break;
            };
            out[best] = true;
            let (oid, size) = hypo_create(
                self.client,
                &self.tables[self.cands[best].table],
                &self.cands[best],
            )
            .await?;
            self.chosen.push(Chosen {
                cand: best,
                oid,
                size,
            });
            let mut changed = Vec::new();
            for t in evals[best].take().map(|e| e.trials).unwrap_or_default() {
                if t.cost < self.current[t.fp] {
                    self.current[t.fp] = t.cost;
                    changed.push(t.fp);
                }
            }
            for (i, e) in evals.iter_mut().enumerate() {
                if self.affected[i].iter().any(|f| changed.contains(f)) {
                    *e = None;
                }
            }
        }
        self.prune().await
    }

    /// A covering variant is worth planning only once its plain twin qualified.
    fn worth_trying(&self, i: usize, evals: &[Option<Eval>]) -> bool {
        let c = &self.cands[i];
        c.include.is_empty()
            || self.cands.iter().zip(evals).enumerate().any(|(j, (p, e))| {
                p.include.is_empty()
                    && p.table == c.table
                    && p.keys == c.keys
                    && e.as_ref().is_some_and(|e| self.qualifies(j, e))
            })
    }

    /// Take each chosen index out (last chosen first); keep it only when some fingerprint
    /// costs at least `1 / (1 - advisor_min_saving)` times more without it.
    async fn prune(&mut self) -> Result<(), AdvisorError> {
        let keep = 1.0 - self.cfg.advisor_min_saving;
        let mut k = self.chosen.len();
        while k > 0 {
            k -= 1;
            let ch = self.chosen[k].clone();
            hypo_drop(self.client, ch.oid).await?;
            let affected = self.affected[ch.cand].clone();
            let without = self.trials(&affected, -1).await?;
            let needed = without
                .iter()
                .any(|t| self.current[t.fp] <= t.cost * keep && t.cost > 0.0);
            if needed {
                let c = &self.cands[ch.cand];
                let (oid, size) = hypo_create(self.client, &self.tables[c.table], c).await?;
                self.chosen[k] = Chosen { oid, size, ..ch };
            } else {
                self.chosen.remove(k);
                for t in without {
                    self.current[t.fp] = t.cost;
                }
            }
        }
        Ok(())
    }
}

/// The best qualifying (`ok`) candidate not yet taken; near-ties go to the smaller index.
fn pick(evals: &[Option<Eval>], ok: &[bool], out: &[bool]) -> Option<usize> {
    let live = || {
        evals
            .iter()
            .enumerate()
            .filter(|(i, _)| !out[*i] && ok[*i])
            .filter_map(|(i, e)| e.as_ref().map(|e| (i, e)))
    };
    let best = live().map(|(_, e)| e.gain_ms).fold(0.0, f64::max);
    if best <= 0.0 {
        return None;
    }
    live()
        .filter(|(_, e)| e.gain_ms >= best * (1.0 - TIE))
        .min_by_key(|(_, e)| e.size)
        .map(|(i, _)| i)
}

/// Clear every hypothetical index of this session.
pub async fn reset(client: &Client) -> Result<(), AdvisorError> {
    client
        .batch_execute("SELECT hypopg_reset()")
        .await
        .map_err(catalog_err)
}
