//! The steady load of a chaos scenario: a few paced clients (one task each) writing rows or
//! keys with unique ids, or reading, through Pake, each op bounded by a timeout and written
//! to the [`Ledger`]. Paced rather than flat out, so the ops attempted, and with them the
//! error counts, depend on time and not on how fast this shared machine is today.

use super::ledger::{Ledger, Op};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Worker `w` writes ids `w * ID_STRIDE + 1, + 2, …`: unique across workers and runs.
pub const ID_STRIDE: u64 = 1_000_000_000;

/// A client of the system under test.
pub trait Worker: Send + 'static {
    /// Do `op` (connecting first when there is no connection); `Err` with the error text.
    fn run(&mut self, op: Op) -> impl Future<Output = Result<(), String>> + Send;
    /// The op timed out: the connection is in an unknown state; drop it.
    fn abandon(&mut self);
}

/// What a worker does in a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Writer,
    Reader,
}

/// How fast and how patient the clients are.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Ops per second per client.
    pub rate: f64,
    /// An op without an answer after this long fails (and its connection is dropped).
    pub op_timeout: Duration,
    /// A successful op slower than this counts as a stall.
    pub stall: Duration,
}

/// A running load; [`Load::stop`] ends it.
pub struct Load {
    pub ledger: Ledger,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Start one task per worker, their ticks spread evenly over one period.
    pub fn start<W: Worker>(workers: Vec<(Role, W)>, pace: Pace) -> Load {
        let ledger = Ledger::new(workers.len(), pace.stall);
        let stop = Arc::new(AtomicBool::new(false));
        let period = Duration::from_secs_f64(1.0 / pace.rate.max(0.1));
        let n = workers.len().max(1) as u32;
        let tasks = workers
            .into_iter()
            .enumerate()
            .map(|(i, (role, worker))| {
                let client = Client {
                    index: i,
                    role,
                    ledger: ledger.clone(),
                    stop: stop.clone(),
                    period,
                    op_timeout: pace.op_timeout,
                };
                let offset = period * i as u32 / n;
                tokio::spawn(client.drive(worker, offset))
            })
            .collect();
        Load {
            ledger,
            stop,
            tasks,
        }
    }

    /// Stop every client after its current op; the ledger is complete afterwards.
    pub async fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.ledger
    }
}

struct Client {
    index: usize,
    role: Role,
    ledger: Ledger,
    stop: Arc<AtomicBool>,
    period: Duration,
    op_timeout: Duration,
}

impl Client {
    async fn drive<W: Worker>(self, mut worker: W, offset: Duration) {
        tokio::time::sleep(offset).await;
        let mut tick = tokio::time::interval(self.period);
        // after an outage, carry on at the pace instead of bursting to catch up
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seq = 0;
        loop {
            tick.tick().await;
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let op = match self.role {
                Role::Writer => {
                    seq += 1;
                    Op::Write(self.index as u64 * ID_STRIDE + seq)
                }
                Role::Reader => Op::Read,
            };
            let start = self.ledger.start(self.index);
            let result = match tokio::time::timeout(self.op_timeout, worker.run(op)).await {
                Ok(r) => r,
                Err(_) => {
                    worker.abandon();
                    Err(format!("no answer within {:?}", self.op_timeout))
                }
            };
            self.ledger.done(self.index, op, start, result);
        }
    }
}
