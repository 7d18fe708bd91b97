//! Small pools of I/O workers shared by all queues of one backend kind (blkback's,
//! netback's), so that I/O threads do not grow with devices.
//!
//! ```text
//!  frontend's notification ──▶ kick(queue): pending = true; Idle → Queued, pushed on
//!                                the kind's run queue (at most once)
//!  worker (at most `size`):   pops a queue (Running), serves it turn by turn
//!     ├─ a turn did work: again, until `budget` items in this run, then back of
//!     │                    the run queue (Queued) so the other queues get theirs
//!     ├─ no work, nobody waits in the run queue: keep polling (pause, then yield)
//!     │                    for `spin` without re-arming, as a dedicated thread did
//!     └─ no work after that (or others wait): re-arm and look once more
//!                          (`Served::rearm`), then Idle; a kick that came during
//!                          the run (`pending`) queues it again
//! ```
//!
//! A queue is served by at most one worker at a time (the Idle/Queued/Running
//! state), and a worker serves one queue for at most `budget` items before it
//! goes to the back of the run queue: a frontend that floods its ring gets its
//! turn like the others, and one that stalls (answers nothing, posts nothing) is
//! not served until it notifies again. A turn itself must not block on the
//! frontend; what it may wait on is the host (a disk read), which is why the
//! pool has more than one worker even on one core.
//!
//! Workers start on demand (up to `size`, from the number of cores) and end when
//! the kind has no queue left; a waiting worker sleeps with no timeout.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What one turn of a queue did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Served this many items (0: nothing to do).
    Did(usize),
    /// The queue is not to be served now (frozen on purpose, failed, or gone).
    Off,
    /// The queue waits for something else to drain first (backpressure): the
    /// worker serves the other waiting queues, or turns again after a short
    /// pause if none wait.
    Held,
}

/// A queue served by a [`Pool`].
pub(crate) trait Served: Send + Sync {
    /// Serves at most `budget` items. Never blocks on the frontend.
    fn turn(&self, budget: usize) -> Turn;
    /// Asks the frontend for notifications and looks once more: `true` if work
    /// came meanwhile (then the worker serves on).
    fn rearm(&self) -> bool;
    /// The queue's scheduling state.
    fn sched(&self) -> &Sched;
}

/// How long a worker pauses before turning a held queue again ([`Turn::Held`])
/// when no other queue waits.
const HELD_PAUSE: Duration = Duration::from_micros(50);

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;

/// A queue's scheduling state in its pool.
#[derive(Debug, Default)]
pub(crate) struct Sched {
    state: AtomicU8,
    /// A kick came since the worker last looked.
    pending: AtomicBool,
}

/// One kind's pool.
pub(crate) struct Pool {
    name: &'static str,
    /// Items a queue is served in one run before the others get their turn.
    budget: usize,
    /// How long a worker keeps polling an idle queue (nobody else waiting).
    spin: Duration,
    /// The first part of `spin`, polled with CPU pauses only.
    pause: Duration,
    inner: Mutex<Inner>,
    cv: Condvar,
    /// Queues waiting in the run queue (read without the lock by spinning
    /// workers).
    waiting: AtomicUsize,
}

#[derive(Default)]
struct Inner {
    ready: VecDeque<Arc<dyn Served>>,
    workers: usize,
    idle: usize,
    /// Queues registered ([`Pool::register`]) and not yet unregistered.
    queues: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Workers of a pool: the cores, at least 2 (a turn may wait on the disk), at
/// most 8.
pub(crate) fn default_size() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

impl Pool {
    /// A pool whose workers are named `name`.
    pub(crate) const fn new(
        name: &'static str,
        budget: usize,
        spin: Duration,
        pause: Duration,
    ) -> Self {
        Pool {
            name,
            budget,
            spin,
            pause,
            inner: Mutex::new(Inner {
                ready: VecDeque::new(),
                workers: 0,
                idle: 0,
                queues: 0,
            }),
            cv: Condvar::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Counts a queue in (workers stay while any queue is registered).
    pub(crate) fn register(&self) {
        lock(&self.inner).queues += 1;
    }

    /// Counts a queue out, once it is off (its turns return [`Turn::Off`]).
    pub(crate) fn unregister(&self) {
        let mut g = lock(&self.inner);
        g.queues = g.queues.saturating_sub(1);
        if g.queues == 0 {
            drop(g);
            self.cv.notify_all();
        }
    }

    /// The frontend notified `q` (or the backend has work for it): queues it
    /// unless it is queued or being served (then the worker sees `pending`).
    /// Cheap while `q` is being served: two atomic operations.
    pub(crate) fn kick(&'static self, q: &Arc<dyn Served>) {
        let s = q.sched();
        s.pending.store(true, Ordering::SeqCst);
        if s.state
            .compare_exchange(IDLE, QUEUED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.push(q.clone());
        }
    }

    fn push(&'static self, q: Arc<dyn Served>) {
        let mut g = lock(&self.inner);
        g.ready.push_back(q);
        self.waiting.store(g.ready.len(), Ordering::SeqCst);
        if g.idle > 0 {
            drop(g);
            self.cv.notify_one();
        } else if g.workers < default_size() {
            g.workers += 1;
            let spawned = std::thread::Builder::new()
                .name(self.name.to_string())
                .spawn(move || self.worker());
            if spawned.is_err() {
                // The workers already running serve it (there is at least one
                // unless none could ever start; then the queue waits for one).
                g.workers -= 1;
            }
        }
    }

    fn worker(&'static self) {
        loop {
            let q = {
                let mut g = lock(&self.inner);
                loop {
                    if let Some(q) = g.ready.pop_front() {
                        self.waiting.store(g.ready.len(), Ordering::SeqCst);
                        break q;
                    }
                    if g.queues == 0 {
                        g.workers -= 1;
                        return;
                    }
                    g.idle += 1;
                    g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                    g.idle -= 1;
                }
            };
            let s = q.sched();
            s.state.store(RUNNING, Ordering::SeqCst);
            // A panicking turn is a bug of ours, not the guest's: the queue is
            // left off (its device fails through its own error path) and the
            // worker goes on with the others.
            let requeue = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(&*q)))
                .unwrap_or(false);
            if requeue {
                s.state.store(QUEUED, Ordering::SeqCst);
                self.push(q);
                continue;
            }
            s.state.store(IDLE, Ordering::SeqCst);
            if s.pending.load(Ordering::SeqCst)
                && s.state
                    .compare_exchange(IDLE, QUEUED, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                self.push(q);
            }
        }
    }

    /// Serves `q` until it has no work (false) or used its budget (true: back of
    /// the run queue).
    fn run(&self, q: &dyn Served) -> bool {
        let s = q.sched();
        let mut done = 0;
        let mut idle_since: Option<Instant> = None;
        loop {
            s.pending.store(false, Ordering::SeqCst);
            match q.turn(self.budget - done) {
                Turn::Off => return false,
                Turn::Did(n) if n > 0 => {
                    done += n;
                    if done >= self.budget {
                        return true;
                    }
                    idle_since = None;
                    continue;
                }
                Turn::Did(_) => {}
                Turn::Held => {
                    if self.waiting.load(Ordering::SeqCst) > 0 {
                        return true;
                    }
                    std::thread::sleep(HELD_PAUSE);
                    continue;
                }
            }
            if self.waiting.load(Ordering::SeqCst) == 0 {
                let idle = idle_since.get_or_insert_with(Instant::now).elapsed();
                if idle < self.pause {
                    // The next request of a frontend at queue depth 1 comes within
                    // a few microseconds: poll with a CPU pause, no system call.
                    std::hint::spin_loop();
                    continue;
                }
                if idle < self.spin {
                    // Poll again, but let any runnable thread (the guest we wait
                    // for) have the CPU first.
                    std::thread::yield_now();
                    continue;
                }
            }
            if q.rearm() {
                idle_since = None;
                continue;
            }
            return false;
        }
    }
}
