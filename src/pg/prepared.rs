//! Named prepared statements in transaction mode.
//!
//! A client's statement `s1` must work on whichever pooled server runs its next transaction.
//! Every distinct (query text, parameter types) gets one process-wide name, `pake_<id>`; a
//! client's names map to those ([`ClientStatements`]), and each server remembers which ones it
//! has ([`ServerStatements`], least recently used closed beyond a cap). The session rewrites
//! Parse/Bind/Describe/Close with these maps, re-Parses on servers that lack a statement and
//! answers Parse itself when the server already has it (see `session::request`).

use crate::pg::wire::{self, fe};
use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::HashMap;

/// The maps looked up on every Bind, Describe and reply: ahash, not SipHash (~100
/// instructions a lookup of a short name; several lookups per Bind). Still keyed per
/// process, so a client cannot choose colliding names.
type Map<K, V> = HashMap<K, V, ahash::RandomState>;
use std::sync::{Arc, Weak};

/// Identifier of a prepared statement in the process-wide registry.
pub type StatementId = u64;

/// One registered statement.
#[derive(Debug)]
pub struct Statement {
    pub id: StatementId,
    /// `pake_<id>`, NUL-free.
    pub name: Box<str>,
    /// The complete Parse frame that creates this statement under `name`.
    pub parse: Bytes,
    /// The query text (for statement analysis and logs).
    pub query: Arc<str>,
    /// A server has answered ParseComplete for it: a later Parse of the same text can be
    /// answered without a server.
    pub parsed_ok: std::sync::atomic::AtomicBool,
    /// Its text reads `pg_prepared_statements`: it runs parsed afresh each time
    /// ([`crate::pg::prepared_view`]).
    pub reads_view: bool,
}

impl Statement {
    /// The Parse body's tail it was interned under (`query\0 nparams types…`).
    pub fn definition(&self) -> &[u8] {
        let body = wire::body(&self.parse);
        body.get(self.name.len() + 1..).unwrap_or_default()
    }
}

/// Process-wide map from (query, parameter types) to a statement. Entries live as long as
/// some client refers to them; dead ones are pruned as the map grows.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    map: Map<Bytes, Weak<Statement>>,
    next_id: u64,
    prune_at: usize,
}

impl Registry {
    /// Find or create the statement for a Parse body's tail (`query\0 nparams types…`).
    pub fn intern(&self, key: &[u8]) -> Arc<Statement> {
        let mut inner = self.inner.lock();
        if let Some(s) = inner.map.get(key).and_then(Weak::upgrade) {
            return s;
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let name = format!("pake_{id}");
        let mut parse = BytesMut::with_capacity(key.len() + name.len() + 6);
        let at = wire::begin_frame(&mut parse, fe::PARSE);
        wire::put_cstr(&mut parse, name.as_bytes());
        parse.put_slice(key);
        wire::finish_frame(&mut parse, at);
        let query = wire::cstr(key)
            .map(|(q, _)| String::from_utf8_lossy(q).into_owned())
            .unwrap_or_default();
        let stmt = Arc::new(Statement {
            id,
            name: name.into(),
            parse: parse.freeze(),
            reads_view: crate::pg::prepared_view::reads_view(&query),
            query: query.into(),
            parsed_ok: std::sync::atomic::AtomicBool::new(false),
        });
        let key = Bytes::copy_from_slice(key);
        inner.map.insert(key, Arc::downgrade(&stmt));
        if inner.map.len() > inner.prune_at.max(1024) {
            inner.map.retain(|_, w| w.strong_count() > 0);
            inner.prune_at = inner.map.len() * 2;
        }
        stmt
    }

    /// The statement registered for a Parse body's tail, if any (none is created).
    pub fn get(&self, key: &[u8]) -> Option<Arc<Statement>> {
        self.inner.lock().map.get(key).and_then(Weak::upgrade)
    }

    /// A server said `stmt`'s cached plan must not change result type: forget it, so the
    /// next Parse of the same text (the driver's re-prepare) prepares a new statement
    /// instead of being answered from the stale one. Clients that still name the old one
    /// keep it (and get the server's 0A000, as directly); servers close it through their LRU.
    pub fn forget(&self, stmt: &Statement) {
        let mut inner = self.inner.lock();
        let same = inner
            .map
            .get(stmt.definition())
            .and_then(Weak::upgrade)
            .is_some_and(|s| s.id == stmt.id);
        if same {
            inner.map.remove(stmt.definition());
        }
    }

    /// DDL that may change what existing statements return went through: every statement
    /// is prepared afresh when next used, instead of a server answering with a plan that
    /// must not change result type (0A000) — Pake would otherwise answer a driver's re-Parse
    /// from a stale copy.
    pub fn forget_all(&self) {
        self.inner.lock().map.clear();
    }

    /// Live entries (after pruning dead ones).
    pub fn len(&self) -> usize {
        let mut inner = self.inner.lock();
        inner.map.retain(|_, w| w.strong_count() > 0);
        inner.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a Describe of a statement said: the parameter types it takes (its
/// ParameterDescription, `params` from [`params_sig`]) and what it returns, as PostgreSQL
/// compares results when it refuses a cached plan whose result changed (0A000): each
/// column's name, type and type modifier, from the RowDescription, or none at all (NoData).
/// PostgreSQL keeps a statement's parameter types when DDL re-plans it; a copy parsed afresh
/// infers them again, and a client binding the types it was told (int4's four bytes read as
/// a float4) would write wrong values. Equal descriptions give equal values.
pub fn statement_sig(params: u64, tag: u8, body: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    params.hash(&mut h);
    tag.hash(&mut h);
    if tag == wire::be::ROW_DESCRIPTION {
        let mut rest = body.get(2..).unwrap_or_default();
        body.get(..2).hash(&mut h);
        // name\0, table oid (4), column (2), type oid (4), size (2), modifier (4), format (2)
        while let Some((name, tail)) = wire::cstr(rest) {
            name.hash(&mut h);
            tail.get(6..10).hash(&mut h);
            tail.get(12..16).hash(&mut h);
            rest = tail.get(18..).unwrap_or_default();
        }
    }
    h.finish()
}

/// The parameter types of a ParameterDescription body, for [`statement_sig`].
pub fn params_sig(body: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}

/// DDL at the start of one of a text's statements, as far as prepared statements care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ddl {
    None,
    /// `CREATE`: statements prepared in its transaction may name what a rollback takes away
    /// (a type created in it, and a parameter of that type); see `Server::ddl`.
    Creates,
    /// `ALTER`, `DROP`, `CREATE OR REPLACE`: may change what existing statements return.
    ChangesResultTypes,
}

/// The strongest [`Ddl`] among a text's statements: a cheap byte-level look at each one's
/// first words, any client encoding; a `;` inside a literal may give a harmless extra yes.
pub fn ddl(query: &[u8]) -> Ddl {
    let one = |stmt: &[u8]| {
        let mut words = stmt
            .split(|b| b.is_ascii_whitespace() || *b == b'(')
            .filter(|w| !w.is_empty());
        match words.next() {
            Some(w) if w.eq_ignore_ascii_case(b"alter") || w.eq_ignore_ascii_case(b"drop") => {
                Ddl::ChangesResultTypes
            }
            Some(w) if w.eq_ignore_ascii_case(b"create") => {
                match words.next().is_some_and(|w| w.eq_ignore_ascii_case(b"or")) {
                    true => Ddl::ChangesResultTypes,
                    false => Ddl::Creates,
                }
            }
            _ => Ddl::None,
        }
    };
    query
        .split(|&b| b == b';')
        .map(one)
        .max()
        .unwrap_or(Ddl::None)
}

/// One client's statement names.
#[derive(Default, Debug)]
pub struct ClientStatements {
    map: Map<Box<[u8]>, ClientStatement>,
    /// The last prepare time handed out (µs since the epoch), kept increasing: it also names
    /// the Parse that made a statement, for the server's answer to it.
    last_micros: u64,
    /// Every Parse stamped up to this one has been answered (the server answers a client's
    /// messages in order, and a client's next server only after its last one answered).
    answered: u64,
    /// The server was asked to flush its answers to the Parses stamped up to this one, for
    /// a Parse of one of their names held until they are answered.
    flush_asked: u64,
    /// Names closed by a Close whose CloseComplete (Pake's own) may yet be skipped after an
    /// error earlier in its batch, with their stamps: then the statement stays, as directly
    /// ([`ClientStatements::not_closed`]); answered, it is gone ([`ClientStatements::closed`]).
    closing: Vec<(u64, Box<[u8]>, ClientStatement)>,
    /// The last stamp handed out when the client's last Sync was sent.
    synced: u64,
}

#[derive(Debug)]
struct ClientStatement {
    stmt: Arc<Statement>,
    /// When the client prepared it, µs since the epoch: what it sees in
    /// `pg_prepared_statements` ([`crate::pg::prepared_view`]).
    prepared_at: u64,
    /// What the client was told by its own Describe of the statement
    /// ([`statement_sig`]): what every server copy it runs on must take and return.
    told: Option<u64>,
}

impl ClientStatements {
    /// A statement Pake prepared for the client itself (its ParseComplete written already).
    pub fn insert(&mut self, name: &[u8], stmt: Arc<Statement>) {
        self.answered = self.insert_pending(name, stmt);
    }

    /// A statement whose Parse goes to a server; returns the stamp that names that Parse
    /// until the server answers it ([`ClientStatements::parsed`],
    /// [`ClientStatements::not_parsed`]).
    pub fn insert_pending(&mut self, name: &[u8], stmt: Arc<Statement>) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        // two statements prepared in one pipeline keep their order
        self.last_micros = now.max(self.last_micros + 1);
        let prepared_at = self.last_micros;
        let told = None;
        let entry = ClientStatement {
            stmt,
            prepared_at,
            told,
        };
        self.map.insert(name.into(), entry);
        prepared_at
    }

    /// The client's statement `name` exists as far as the client can know: its Parse was
    /// answered. Directly, a Parse of that name again fails with 42P05.
    pub fn exists(&self, name: &[u8]) -> bool {
        self.map
            .get(name)
            .is_some_and(|c| c.prepared_at <= self.answered)
    }

    /// A Parse of `name` went to the server and is not answered yet: `None` when not. Until
    /// it is, another Parse of the name cannot be answered as directly (42P05 if the first
    /// succeeds, run if it fails), so it waits. `Some(true)` the first time for that Parse:
    /// its answer may wait in the server's output for a Sync the client has not sent, so the
    /// server is to be asked to flush.
    pub fn awaits_answer(&mut self, name: &[u8]) -> Option<bool> {
        let at = self.map.get(name)?.prepared_at;
        if at <= self.answered {
            return None;
        }
        Some(self.ask_flush(at))
    }

    /// The client's Sync is sent: the Parses stamped so far end their batch.
    pub fn sync_sent(&mut self) {
        self.synced = self.last_micros;
    }

    /// A Parse of `name` in a batch before the client's last Sync is not answered yet:
    /// `None` when not. If it failed or was skipped the name names nothing (directly a Bind
    /// or Describe of it fails with 26000), so one in a later batch waits for the answer;
    /// `Some(true)` as for [`Self::awaits_answer`]. (In the Parse's own batch the server
    /// skips them after its error: they need not wait.)
    pub fn awaits_earlier_batch(&mut self, name: &[u8]) -> Option<bool> {
        let at = self.map.get(name)?.prepared_at;
        if at <= self.answered || at > self.synced {
            return None;
        }
        Some(self.ask_flush(at))
    }

    /// A Close of `name` Pake answers itself is not answered yet: `None` when not. Until it
    /// is, the name may yet name its statement (the Close skipped after an error), so a
    /// Parse, Bind or Describe of it waits; `Some(true)` as for [`Self::awaits_answer`].
    pub fn awaits_close(&mut self, name: &[u8]) -> Option<bool> {
        let at = self
            .closing
            .iter()
            .filter(|(_, n, _)| **n == *name)
            .map(|(at, ..)| *at)
            .max()?;
        Some(self.ask_flush(at))
    }

    fn ask_flush(&mut self, at: u64) -> bool {
        let ask = self.flush_asked < at;
        self.flush_asked = self.flush_asked.max(at);
        ask
    }

    /// The server answered the Parse stamped `stamp` (and, in order, every one before).
    pub fn parsed(&mut self, stamp: u64) {
        self.answered = self.answered.max(stamp);
    }

    /// The client closes its statement `name`, answered by Pake; returns the stamp that
    /// names that Close until its batch ends ([`ClientStatements::not_closed`]).
    pub fn close_pending(&mut self, name: &[u8]) -> u64 {
        self.last_micros += 1;
        let stamp = self.last_micros;
        if let Some(entry) = self.map.remove(name) {
            self.closing.push((stamp, name.into(), entry));
        }
        stamp
    }

    /// The Close stamped `stamp` was skipped after an error in its batch: the statement it
    /// closed is the client's again (a Parse of the name later in the batch was skipped too).
    pub fn not_closed(&mut self, stamp: u64) {
        if let Some(i) = self.closing.iter().position(|(at, ..)| *at == stamp) {
            let (_, name, entry) = self.closing.swap_remove(i);
            self.map.entry(name).or_insert(entry);
        }
    }

    /// Pake answered the Closes stamped up to `stamp` (no error before them): they happened.
    pub fn closed(&mut self, stamp: u64) {
        self.closing.retain(|(at, ..)| *at > stamp);
    }

    /// The Parses stamped `first..=last` failed or were skipped after an error: their names
    /// name nothing, as directly (a later Bind of one fails with 26000).
    pub fn not_parsed(&mut self, first: u64, last: u64) {
        self.map
            .retain(|_, c| !(first..=last).contains(&c.prepared_at));
        // nor does a Close of one of them, skipped or not, bring it back
        self.closing
            .retain(|(_, _, c)| !(first..=last).contains(&c.prepared_at));
        self.parsed(last);
    }

    /// The statement `name` stands for, and what the client was told it takes and returns
    /// if the client described it.
    pub fn told(&self, name: &[u8]) -> Option<(&Arc<Statement>, Option<u64>)> {
        let c = self.map.get(name)?;
        Some((&c.stmt, c.told))
    }

    /// The client's Describe of statement `id` answered `sig`: names of it not described
    /// before take it. A name already told keeps what it was told (the check at its next
    /// use refuses a copy that differs, as the server would refuse its own stale plan).
    pub fn tell(&mut self, id: StatementId, sig: u64) {
        for c in self.map.values_mut() {
            if c.stmt.id == id && c.told.is_none() {
                c.told = Some(sig);
            }
        }
    }

    pub fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.map.get(name).map(|c| &c.stmt)
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        self.map.remove(name).map(|c| c.stmt)
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.closing.clear();
    }

    /// Keep only the names of statements in `ids`.
    pub fn retain(&mut self, ids: &[StatementId]) {
        self.map.retain(|_, c| ids.contains(&c.stmt.id));
    }

    /// Every name with its statement and prepare time (µs since the epoch).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Arc<Statement>, u64)> {
        self.map.iter().map(|(n, c)| (&**n, &c.stmt, c.prepared_at))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The statements one server connection has, with a use counter for LRU eviction.
#[derive(Default, Debug)]
pub struct ServerStatements {
    have: Map<StatementId, ServerCopy>,
    tick: u64,
    /// Copies evicted ([`Self::evict_over`]) whose Close is not answered yet, with the batch
    /// it was sent in: an error earlier in that batch makes the server skip the Close, and
    /// the copy is still there ([`Self::close_skipped`]).
    evicting: Map<StatementId, (u64, ServerCopy)>,
}

/// One server's copy of a statement.
#[derive(Debug)]
struct ServerCopy {
    /// Last use, for LRU eviction.
    tick: u64,
    stmt: Arc<Statement>,
    /// What this copy takes and returns ([`statement_sig`]), once a Describe of it here
    /// has said.
    description: Option<u64>,
    /// Its Parse is not answered yet: the batch it was sent in
    /// ([`crate::pg::server::replies::Replies::batch`]). An error earlier in that batch
    /// makes the server skip the Parse, and the copy is not there after all.
    unanswered: Option<u64>,
}

impl ServerStatements {
    pub fn contains(&mut self, id: StatementId) -> bool {
        self.tick += 1;
        let tick = self.tick;
        match self.have.get_mut(&id) {
            Some(e) => {
                e.tick = tick;
                true
            }
            None => false,
        }
    }

    /// A Parse of `stmt` is sent in `batch` ([`crate::pg::server::replies::Replies::batch`]):
    /// the server has it unless that Parse fails or is skipped ([`Self::remove`] then).
    pub fn insert(&mut self, stmt: &Arc<Statement>, batch: u64) {
        self.tick += 1;
        let copy = ServerCopy {
            tick: self.tick,
            stmt: stmt.clone(),
            description: None,
            unanswered: Some(batch),
        };
        self.have.insert(stmt.id, copy);
    }

    /// The batch whose Parse made the copy of `id`, while that Parse is not answered.
    pub fn unanswered(&self, id: StatementId) -> Option<u64> {
        self.have.get(&id)?.unanswered
    }

    /// The batch whose Close evicted the copy of `id`, while that Close is not answered.
    pub fn evicted_in(&self, id: StatementId) -> Option<u64> {
        self.evicting.get(&id).map(|(batch, _)| *batch)
    }

    /// What the server has of `id` is sure: its Parse was answered, or no Parse or Close of
    /// it is owed any more (a Parse afresh skipped with the Close before it left the old
    /// copy; an evicting Close answered or skipped).
    pub fn settled(&mut self, id: StatementId) {
        self.evicting.remove(&id);
        if let Some(c) = self.have.get_mut(&id) {
            c.unanswered = None;
        }
    }

    /// A Close Pake sent of its copy of `id` (evicting it, or before a Parse afresh) was
    /// skipped after an error: the server keeps the copy. An evicted one is counted again
    /// (a Parse of it after the Close, skipped too, left it counted already).
    pub fn close_skipped(&mut self, id: StatementId) {
        if let Some((_, copy)) = self.evicting.remove(&id) {
            self.have.entry(id).or_insert(copy);
        }
        self.settled(id);
    }

    /// What the server answered about statements in `fx`: copies made, not made after all
    /// (their Parse failed or was skipped), closed, or kept (their Close skipped).
    pub fn answered(&mut self, fx: &mut crate::pg::server::replies::Effects) {
        if let Some(id) = fx.created.take() {
            self.mark_parsed(id);
        }
        if let Some(id) = fx.closed.take() {
            self.evicting.remove(&id);
        }
        for id in fx.not_created.drain(..) {
            self.remove(id);
        }
        for id in fx.closes_skipped.drain(..) {
            self.close_skipped(id);
        }
    }

    /// What this server's copy of `id` takes and returns, when known.
    pub fn description(&self, id: StatementId) -> Option<u64> {
        self.have.get(&id)?.description
    }

    /// A Describe of `id` on this server answered `sig`.
    pub fn described(&mut self, id: StatementId, sig: u64) {
        if let Some(c) = self.have.get_mut(&id) {
            c.description = Some(sig);
        }
    }

    pub fn remove(&mut self, id: StatementId) {
        self.have.remove(&id);
    }

    /// The statement `id` if this server has it.
    pub fn get(&self, id: StatementId) -> Option<&Arc<Statement>> {
        self.have.get(&id).map(|c| &c.stmt)
    }

    /// The server answered ParseComplete for `id`.
    pub fn mark_parsed(&mut self, id: StatementId) {
        if let Some(c) = self.have.get_mut(&id) {
            c.unanswered = None;
            c.stmt
                .parsed_ok
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn clear(&mut self) {
        self.have.clear();
        self.evicting.clear();
    }

    /// Keep only the statements in `ids` (the server dropped the others).
    pub fn retain(&mut self, ids: &[StatementId]) {
        self.have.retain(|id, _| ids.contains(id));
        self.evicting.clear();
    }

    pub fn len(&self) -> usize {
        self.have.len()
    }

    pub fn is_empty(&self) -> bool {
        self.have.is_empty()
    }

    /// Remove and return the least recently used statement when over `cap`, its Close sent
    /// in `batch` ([`crate::pg::server::replies::Replies::batch`]): until that Close is
    /// answered the copy is kept aside ([`Self::close_skipped`]).
    pub fn evict_over(&mut self, cap: usize, batch: u64) -> Option<Arc<Statement>> {
        if self.have.len() <= cap {
            return None;
        }
        let (&id, _) = self.have.iter().min_by_key(|(_, c)| c.tick)?;
        let copy = self.have.remove(&id)?;
        let stmt = copy.stmt.clone();
        self.evicting.insert(id, (batch, copy));
        Some(stmt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_statement_and_parse_frame() {
        let r = Registry::default();
        let key = b"select $1\0\0\x01\0\0\0\x17";
        let a = r.intern(key);
        let b = r.intern(key);
        assert_eq!(a.id, b.id);
        assert_eq!(&*a.query, "select $1");
        let (tag, len) = wire::frame_header(&a.parse, usize::MAX).unwrap().unwrap();
        assert_eq!((tag, len), (b'P', a.parse.len()));
        let (name, rest) = wire::cstr(wire::body(&a.parse)).unwrap();
        assert_eq!(name, a.name.as_bytes());
        assert_eq!(rest, key);
        assert_eq!(a.definition(), key);
        let c = r.intern(b"select 2\0\0\0");
        assert_ne!(a.id, c.id);
        drop((a, b, c));
        assert_eq!(r.len(), 0, "dead entries are pruned");
    }

    #[test]
    fn a_name_whose_parse_is_unanswered_waits_and_asks_for_one_flush() {
        let r = Registry::default();
        let mut c = ClientStatements::default();
        assert_eq!(c.awaits_answer(b"s1"), None, "no such name");
        let first = c.insert_pending(b"s1", r.intern(b"select 1\0\0\0"));
        assert_eq!(
            c.awaits_answer(b"s1"),
            Some(true),
            "the server is asked to flush"
        );
        assert_eq!(c.awaits_answer(b"s1"), Some(false), "once");
        c.parsed(first);
        assert_eq!(c.awaits_answer(b"s1"), None, "answered: it exists");
        assert!(c.exists(b"s1"));
        let second = c.insert_pending(b"s2", r.intern(b"selec 2\0\0\0"));
        assert_eq!(c.awaits_answer(b"s2"), Some(true));
        c.not_parsed(second, second);
        assert_eq!(c.awaits_answer(b"s2"), None, "failed: no such name");
        assert!(!c.exists(b"s2"));
    }

    #[test]
    fn forgotten_statement_is_interned_afresh() {
        let r = Registry::default();
        let key = b"select * from t\0\0\0";
        let old = r.intern(key);
        r.forget(&old);
        let new = r.intern(key);
        assert_ne!(old.id, new.id, "the stale plan is not reused");
        r.forget(&old); // forgetting the old one again leaves the new one alone
        assert_eq!(r.intern(key).id, new.id);
    }

    #[test]
    fn ddl_forgets_every_statement() {
        let r = Registry::default();
        let a = r.intern(b"select 1\0\0\0");
        r.forget_all();
        assert_ne!(r.intern(b"select 1\0\0\0").id, a.id);
        for (text, want) in [
            (&b"ALTER TABLE t ADD b int"[..], Ddl::ChangesResultTypes),
            (b"  drop table x", Ddl::ChangesResultTypes),
            (
                b"begin; alter type e add value 'x'",
                Ddl::ChangesResultTypes,
            ),
            (
                b"Create Or Replace view v as select 1",
                Ddl::ChangesResultTypes,
            ),
            (
                b"create table t (a int); drop table u",
                Ddl::ChangesResultTypes,
            ),
            (b"create table t (a int)", Ddl::Creates),
            (b"create temp table t (a int)", Ddl::Creates),
            (b"select 1; CREATE type e as enum ('x')", Ddl::Creates),
            (b"select 'alter'", Ddl::None),
            (b"insert into drop_log values (1)", Ddl::None),
            (b"", Ddl::None),
        ] {
            assert_eq!(ddl(text), want, "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn server_lru_eviction() {
        let r = Registry::default();
        let s: Vec<_> = (0..3)
            .map(|i| r.intern(format!("select {i}\0\0\0").as_bytes()))
            .collect();
        let mut srv = ServerStatements::default();
        for st in &s {
            srv.insert(st, 0);
        }
        assert!(srv.contains(s[0].id)); // touch 0: 1 is now the oldest
        let evicted = srv.evict_over(2, 1).unwrap();
        assert_eq!(evicted.id, s[1].id);
        assert!(srv.evict_over(2, 1).is_none());
        assert!(!srv.contains(s[1].id));
        assert_eq!(
            srv.evicted_in(s[1].id),
            Some(1),
            "until its Close is answered"
        );
        srv.close_skipped(s[1].id);
        assert!(srv.contains(s[1].id), "the server kept it");
        assert_eq!(srv.evicted_in(s[1].id), None);
    }
}
