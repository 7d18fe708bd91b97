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
//! the kind has no queue left; a waiting worker sleeps with no timeout (or until
//! the next held-back queue is due, below).
//!
//! **Spurious events back off (late EOI on the host side, docs/hostile-input.md
//! E1).** A frontend's notification reaches its queue through [`Pool::notify`]
//! (or [`Pool::kick_inline`]); work the backend itself has for a queue (frames
//! from the bridge, console input, stop) through [`Pool::kick`]. A worker's run
//! that followed a notification and found no work at all (no request, rx buffer
//! or console byte taken, no response made: every turn `Did(0)`) makes that
//! notification spurious. The first spurious event in a row costs nothing more;
//! after each further one in a row the queue is held back (`Delayed`) for 1 ms,
//! doubling up to 1 s (`hypercall::evtchn::late_eoi_delay`, the guest side's
//! rule): notifications meanwhile only mark it `pending`, and when the delay
//! ends it is served if any came (its rings looked at afresh), else left idle.
//! Any run or inline answer that did work ends the streak, and a
//! [`Pool::kick`] ends a delay at once. Only that queue waits: the workers serve
//! the others meanwhile. A storm of notifications with nothing on the rings
//! thus costs a few runs a second instead of one run per notification
//! ([`EventCounters`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
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
    /// Serves the queue's work on the kicking thread if it is one small item that
    /// needs no waiting ([`Pool::kick_inline`]), then re-arms as a worker going
    /// idle does ([`Served::rearm`], in the same visit to the queue's state):
    /// `Some(more)` if it served, `more` being what that re-arm returned (work
    /// came meanwhile: a worker's); `None` if a worker must serve (nothing was
    /// served, or what was taken is kept for the worker's next turn).
    fn turn_inline(&self) -> Option<bool> {
        None
    }
}

/// How long a worker pauses before turning a held queue again ([`Turn::Held`])
/// when no other queue waits.
const HELD_PAUSE: Duration = Duration::from_micros(50);

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;
/// Held back after spurious events in a row, in the pool's `delayed` list until
/// its delay ends.
const DELAYED: u8 = 3;

/// A device's event-service counters, shared by its queues' [`Sched`]s (so they
/// outlive a connection's queues).
#[derive(Debug, Default)]
pub(crate) struct EventCounters {
    runs: AtomicU64,
    spurious: AtomicU64,
    backoffs: AtomicU64,
}

impl EventCounters {
    /// Runs of a pool worker on the device's queues.
    pub(crate) fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Frontend notifications whose run found no work.
    pub(crate) fn spurious(&self) -> u64 {
        self.spurious.load(Ordering::Relaxed)
    }

    /// Times a queue was held back after spurious events in a row.
    pub(crate) fn backoffs(&self) -> u64 {
        self.backoffs.load(Ordering::Relaxed)
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A queue's scheduling state in its pool.
#[derive(Debug, Default)]
pub(crate) struct Sched {
    state: AtomicU8,
    /// A kick came since the worker last looked.
    pending: AtomicBool,
    /// A frontend's notification ([`Pool::notify`]) came since the worker last
    /// looked.
    event: AtomicBool,
    /// Spurious events in a row (written by the queue's worker, or by the inline
    /// path while it holds the queue).
    in_a_row: AtomicU32,
    counters: Arc<EventCounters>,
}

impl Sched {
    /// A queue's state counting into its device's `counters`.
    pub(crate) fn new(counters: Arc<EventCounters>) -> Self {
        Sched {
            counters,
            ..Sched::default()
        }
    }

    /// The device's counters.
    pub(crate) fn counters(&self) -> &EventCounters {
        &self.counters
    }

    /// Work was done (by a run, inline, or by whoever else serves the queue's
    /// rings, from any thread): the streak of spurious events ends (a load
    /// only, when there is none).
    pub(crate) fn worked(&self) {
        if self.in_a_row.load(Ordering::Relaxed) != 0 {
            self.in_a_row.store(0, Ordering::Relaxed);
        }
    }
}

/// What a worker's run of a queue found.
struct Run {
    /// Used its budget (or held with others waiting): back of the run queue.
    requeue: bool,
    /// Some turn did work (or the queue was held with work waiting).
    work: bool,
    /// A frontend's notification was seen before one of the run's looks.
    event: bool,
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
    /// Queues held back (`DELAYED`) and when their delay ends.
    delayed: Vec<(Instant, Arc<dyn Served>)>,
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
                delayed: Vec::new(),
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

    /// The backend has work for `q` (not a frontend's notification: that is
    /// [`Pool::notify`]): queues it unless it is queued or being served (then
    /// the worker sees `pending`); a queue held back after spurious events is
    /// queued at once too. Cheap while `q` is being served: two atomic
    /// operations.
    pub(crate) fn kick(&'static self, q: &Arc<dyn Served>) {
        let s = q.sched();
        s.pending.store(true, Ordering::SeqCst);
        if s.state
            .compare_exchange(IDLE, QUEUED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.push(q.clone());
        } else if s
            .state
            .compare_exchange(DELAYED, QUEUED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            let mut g = lock(&self.inner);
            g.delayed.retain(|(_, d)| !same(d, q));
            drop(g);
            self.push(q.clone());
        }
    }

    /// The frontend notified `q`: queues it unless it is queued, being served
    /// (then the worker sees `pending`) or held back after spurious events (then
    /// it is served when its delay ends). Cheap: three atomic operations.
    pub(crate) fn notify(&'static self, q: &Arc<dyn Served>) {
        let s = q.sched();
        s.event.store(true, Ordering::SeqCst);
        s.pending.store(true, Ordering::SeqCst);
        if s.state
            .compare_exchange(IDLE, QUEUED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.push(q.clone());
        }
    }

    /// [`Pool::notify`] for a frontend's notification, but an idle queue whose
    /// work is one small item that needs no waiting ([`Served::turn_inline`]) is
    /// served right here, on the notifying thread (the guest's own, which waits
    /// for exactly that answer), with no hand-off to a worker and no wake-up;
    /// that work ends a streak of spurious events. Otherwise, and while a worker
    /// serves the queue or it is held back, it is a [`Pool::notify`].
    pub(crate) fn kick_inline(&'static self, q: &Arc<dyn Served>) {
        let s = q.sched();
        // Claimed first: a queue this thread now runs needs no `pending` mark
        // (two atomic stores fewer per request at queue depth 1).
        if s.state
            .compare_exchange(IDLE, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            // Queued, being served or held back: a plain notification
            // (`pending` set before the state is looked at again, so a worker
            // that is just going idle either sees the mark or leaves the queue
            // Idle for the notification to queue).
            self.notify(q);
            return;
        }
        // A panicking turn is a bug of ours: left to a worker's turn, which
        // handles it as any other.
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.turn_inline()))
            .unwrap_or(None);
        if served.is_some() {
            s.worked();
        } else {
            // The worker's run answers for this notification.
            s.event.store(true, Ordering::SeqCst);
        }
        if served == Some(false) {
            // Done, and asked for the next notification (as a worker does before it
            // goes idle); a kick that came meanwhile queues it for a worker.
            s.state.store(IDLE, Ordering::SeqCst);
            if s.pending.load(Ordering::SeqCst)
                && s.state
                    .compare_exchange(IDLE, QUEUED, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                self.push(q.clone());
            }
            return;
        }
        // More work (or none served here): a worker's.
        s.state.store(QUEUED, Ordering::SeqCst);
        self.push(q.clone());
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

    /// Queues the held-back queues whose delay is over at `now` (lock held);
    /// returns when the next one is due. One that had a notification meanwhile
    /// is served (its rings looked at afresh), the others go idle.
    fn release_due(&self, g: &mut Inner, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut i = 0;
        while i < g.delayed.len() {
            let due = g.delayed[i].0;
            if due > now {
                next = Some(next.map_or(due, |n| n.min(due)));
                i += 1;
                continue;
            }
            let (_, q) = g.delayed.swap_remove(i);
            let s = q.sched();
            // Idle first, then the pending check, as a worker going idle does
            // (a notification in between queues it itself).
            if s.state
                .compare_exchange(DELAYED, IDLE, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
                && s.pending.load(Ordering::SeqCst)
                && s.state
                    .compare_exchange(IDLE, QUEUED, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                g.ready.push_back(q);
            }
        }
        self.waiting.store(g.ready.len(), Ordering::SeqCst);
        next
    }

    /// Holds `q` (whose run just ended) back until `until`.
    fn hold_back(&self, q: Arc<dyn Served>, until: Instant) {
        let mut g = lock(&self.inner);
        // Under the lock, with the entry: a kick that ends the delay (and takes
        // the lock to remove the entry) finds it there.
        q.sched().state.store(DELAYED, Ordering::SeqCst);
        g.delayed.push((until, q));
        // An idle worker may sleep with no timeout: it looks at the new due time.
        if g.idle > 0 {
            drop(g);
            self.cv.notify_one();
        }
    }

    fn worker(&'static self) {
        loop {
            let q = {
                let mut g = lock(&self.inner);
                loop {
                    let next = self.release_due(&mut g, Instant::now());
                    if let Some(q) = g.ready.pop_front() {
                        self.waiting.store(g.ready.len(), Ordering::SeqCst);
                        break q;
                    }
                    if g.queues == 0 {
                        // Whatever is still held back is gone with its device.
                        for (_, q) in std::mem::take(&mut g.delayed) {
                            let _ = q.sched().state.compare_exchange(
                                DELAYED,
                                IDLE,
                                Ordering::SeqCst,
                                Ordering::SeqCst,
                            );
                        }
                        g.workers -= 1;
                        return;
                    }
                    g.idle += 1;
                    g = match next {
                        Some(due) => {
                            let wait = due.saturating_duration_since(Instant::now());
                            self.cv
                                .wait_timeout(g, wait)
                                .unwrap_or_else(|e| e.into_inner())
                                .0
                        }
                        None => self.cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                    };
                    g.idle -= 1;
                }
            };
            let s = q.sched();
            s.state.store(RUNNING, Ordering::SeqCst);
            bump(&s.counters.runs);
            // A panicking turn is a bug of ours, not the guest's: the queue is
            // left off (its device fails through its own error path) and the
            // worker goes on with the others.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(&*q)))
                .unwrap_or(Run {
                    requeue: false,
                    work: false,
                    event: false,
                });
            if run.work {
                s.worked();
            } else if run.event {
                // Spurious: late EOI's back-off (module docs).
                bump(&s.counters.spurious);
                let n = s.in_a_row.load(Ordering::Relaxed).saturating_add(1);
                s.in_a_row.store(n, Ordering::Relaxed);
                if n >= 2 && !run.requeue {
                    bump(&s.counters.backoffs);
                    let delay = Duration::from_nanos(hypercall::evtchn::late_eoi_delay(n));
                    self.hold_back(q, Instant::now() + delay);
                    continue;
                }
            }
            if run.requeue {
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

    /// Serves `q` until it has no work or used its budget (then `requeue`:
    /// back of the run queue).
    fn run(&self, q: &dyn Served) -> Run {
        let s = q.sched();
        let mut done = 0;
        let mut idle_since: Option<Instant> = None;
        let mut run = Run {
            requeue: false,
            work: false,
            event: false,
        };
        loop {
            s.pending.store(false, Ordering::SeqCst);
            // Taken before the look, so a notification after it stays for the
            // next run (`pending` queues it again).
            if s.event.load(Ordering::Relaxed) {
                run.event |= s.event.swap(false, Ordering::SeqCst);
            }
            match q.turn(self.budget - done) {
                Turn::Off => return run,
                Turn::Did(n) if n > 0 => {
                    run.work = true;
                    done += n;
                    if done >= self.budget {
                        run.requeue = true;
                        return run;
                    }
                    idle_since = None;
                    continue;
                }
                Turn::Did(_) => {}
                Turn::Held => {
                    // Work waits on the ring: not spurious.
                    run.work = true;
                    if self.waiting.load(Ordering::SeqCst) > 0 {
                        run.requeue = true;
                        return run;
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
            return run;
        }
    }
}

/// Whether `a` and `b` are the same queue.
fn same(a: &Arc<dyn Served>, b: &Arc<dyn Served>) -> bool {
    std::ptr::eq(Arc::as_ptr(a).cast::<()>(), Arc::as_ptr(b).cast::<()>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A queue with `work` items to do (`u64::MAX`: a ring that never runs dry,
    /// as a flooding frontend's would be if it were always quicker than us).
    #[derive(Default)]
    struct Fake {
        sched: Sched,
        work: AtomicU64,
        served: AtomicU64,
        in_turn: AtomicBool,
        /// Turns that found another worker in this queue's turn.
        overlaps: AtomicU64,
    }

    impl Served for Fake {
        fn turn(&self, budget: usize) -> Turn {
            if self.in_turn.swap(true, Ordering::SeqCst) {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            let w = self.work.load(Ordering::SeqCst);
            let n = w.min(4).min(budget as u64);
            if w != u64::MAX {
                self.work.fetch_sub(n, Ordering::SeqCst);
            }
            self.served.fetch_add(n, Ordering::SeqCst);
            // Long enough for other kicks to come while the turn runs.
            std::thread::yield_now();
            self.in_turn.store(false, Ordering::SeqCst);
            Turn::Did(n as usize)
        }
        fn rearm(&self) -> bool {
            // As if the work came just after the final look: only the kick's
            // `pending` flag brings the queue back.
            false
        }
        fn sched(&self) -> &Sched {
            &self.sched
        }
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    static FAIR: Pool = Pool::new(
        "pool-test-fair",
        16,
        Duration::from_micros(50),
        Duration::ZERO,
    );

    /// More never-ending queues than workers: a queue kicked afterwards is still
    /// served (each run is bounded by the budget), and every flooding queue gets
    /// turns too. Without the bound the workers would never leave the first
    /// queues they took.
    #[test]
    fn queues_that_never_run_dry_do_not_starve_the_others() {
        let floods: Vec<Arc<Fake>> = (0..default_size() + 1)
            .map(|_| {
                let f = Arc::new(Fake::default());
                f.work.store(u64::MAX, Ordering::SeqCst);
                f
            })
            .collect();
        let quiet = Arc::new(Fake::default());
        for f in &floods {
            FAIR.register();
            let s: Arc<dyn Served> = f.clone();
            FAIR.kick(&s);
        }
        FAIR.register();
        wait_for("every flooding queue served", || {
            floods.iter().all(|f| f.served.load(Ordering::SeqCst) > 0)
        });
        quiet.work.store(3, Ordering::SeqCst);
        let s: Arc<dyn Served> = quiet.clone();
        FAIR.kick(&s);
        wait_for("the quiet queue served", || {
            quiet.work.load(Ordering::SeqCst) == 0
        });
        let mid: Vec<u64> = floods
            .iter()
            .map(|f| f.served.load(Ordering::SeqCst))
            .collect();
        wait_for("every flooding queue served again", || {
            floods
                .iter()
                .zip(&mid)
                .all(|(f, m)| f.served.load(Ordering::SeqCst) > *m)
        });
        for f in &floods {
            f.work.store(0, Ordering::SeqCst);
        }
        for _ in 0..floods.len() + 1 {
            FAIR.unregister();
        }
        wait_for("the workers ended", || lock(&FAIR.inner).workers == 0);
        for f in floods.iter().chain([&quiet]) {
            assert_eq!(f.overlaps.load(Ordering::SeqCst), 0);
        }
    }

    static ONE: Pool = Pool::new(
        "pool-test-one",
        16,
        Duration::from_micros(50),
        Duration::ZERO,
    );

    /// Kicks from many threads at once: the queue is served by one worker at a
    /// time, and no kick is lost (all the work is done).
    #[test]
    fn a_queue_is_served_by_one_worker_at_a_time_and_no_kick_is_lost() {
        let q = Arc::new(Fake::default());
        ONE.register();
        let kickers: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        q.work.fetch_add(1, Ordering::SeqCst);
                        let s: Arc<dyn Served> = q.clone();
                        ONE.kick(&s);
                    }
                })
            })
            .collect();
        for k in kickers {
            k.join().unwrap();
        }
        wait_for("all the work done", || q.work.load(Ordering::SeqCst) == 0);
        assert_eq!(q.served.load(Ordering::SeqCst), 8000);
        assert_eq!(q.overlaps.load(Ordering::SeqCst), 0);
        ONE.unregister();
        wait_for("the workers ended", || lock(&ONE.inner).workers == 0);
    }

    /// A queue whose notification comes during its last turn, after it looked
    /// at its ring for the last time (the frontend published just then).
    #[derive(Default)]
    struct Late {
        sched: Sched,
        work: AtomicU64,
        injected: AtomicBool,
        me: std::sync::OnceLock<std::sync::Weak<Late>>,
    }

    static LATE: Pool = Pool::new("pool-test-late", 16, Duration::ZERO, Duration::ZERO);

    impl Served for Late {
        fn turn(&self, _budget: usize) -> Turn {
            if self.work.load(Ordering::SeqCst) > 0 {
                self.work.fetch_sub(1, Ordering::SeqCst);
                return Turn::Did(1);
            }
            if !self.injected.swap(true, Ordering::SeqCst) {
                // Found nothing; the work and its kick arrive right after.
                self.work.fetch_add(1, Ordering::SeqCst);
                if let Some(me) = self.me.get().and_then(|w| w.upgrade()) {
                    let s: Arc<dyn Served> = me;
                    LATE.kick(&s);
                }
            }
            Turn::Did(0)
        }
        fn rearm(&self) -> bool {
            false
        }
        fn sched(&self) -> &Sched {
            &self.sched
        }
    }

    /// A kick that comes while the queue is being served, after its last look
    /// and before it goes idle, is not lost: the queue is served again.
    #[test]
    fn a_kick_during_the_last_turn_is_not_lost() {
        let q = Arc::new(Late::default());
        let _ = q.me.set(Arc::downgrade(&q));
        LATE.register();
        let s: Arc<dyn Served> = q.clone();
        LATE.kick(&s);
        wait_for("the late work done", || {
            q.injected.load(Ordering::SeqCst) && q.work.load(Ordering::SeqCst) == 0
        });
        LATE.unregister();
        wait_for("the workers ended", || lock(&LATE.inner).workers == 0);
    }

    /// A queue with `work` small items that may be served inline (`inline_ok`),
    /// recording who served what.
    #[derive(Default)]
    struct Small {
        sched: Sched,
        work: AtomicU64,
        inline_ok: AtomicBool,
        /// The threads that served an item inline.
        inline_on: Mutex<Vec<std::thread::ThreadId>>,
        by_worker: AtomicU64,
        /// While set, a worker's turn waits (to hold the queue in a turn).
        hold: AtomicBool,
        in_turn: AtomicBool,
        overlaps: AtomicU64,
    }

    impl Served for Small {
        fn turn(&self, _budget: usize) -> Turn {
            if self.in_turn.swap(true, Ordering::SeqCst) {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            while self.hold.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            let n = self.work.swap(0, Ordering::SeqCst);
            self.by_worker.fetch_add(n, Ordering::SeqCst);
            self.in_turn.store(false, Ordering::SeqCst);
            Turn::Did(n as usize)
        }
        fn rearm(&self) -> bool {
            self.work.load(Ordering::SeqCst) > 0
        }
        fn sched(&self) -> &Sched {
            &self.sched
        }
        fn turn_inline(&self) -> Option<bool> {
            if self.in_turn.swap(true, Ordering::SeqCst) {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            let ok = self.inline_ok.load(Ordering::SeqCst)
                && self
                    .work
                    .compare_exchange(1, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
            if ok {
                lock(&self.inline_on).push(std::thread::current().id());
            }
            self.in_turn.store(false, Ordering::SeqCst);
            ok.then(|| self.rearm())
        }
    }

    static INLINE: Pool = Pool::new("pool-test-inline", 16, Duration::ZERO, Duration::ZERO);

    /// `kick_inline`: an idle queue's one small item is served on the kicking
    /// thread and the queue is idle again; what cannot be served inline goes to
    /// a worker; and a queue in a worker's turn is never also served inline.
    #[test]
    fn kick_inline_serves_small_work_on_the_kicking_thread_only_when_idle() {
        let q = Arc::new(Small::default());
        let s: Arc<dyn Served> = q.clone();
        INLINE.register();
        q.inline_ok.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            q.work.store(1, Ordering::SeqCst);
            INLINE.kick_inline(&s);
            assert_eq!(
                q.work.load(Ordering::SeqCst),
                0,
                "served before the kick returned"
            );
            assert_eq!(q.sched.state.load(Ordering::SeqCst), IDLE);
        }
        assert_eq!(
            *lock(&q.inline_on),
            vec![std::thread::current().id(); 3],
            "on the kicking thread"
        );
        assert_eq!(q.by_worker.load(Ordering::SeqCst), 0);
        // Two items: not small, a worker's.
        q.work.store(2, Ordering::SeqCst);
        INLINE.kick_inline(&s);
        wait_for("the worker served both", || {
            q.by_worker.load(Ordering::SeqCst) == 2
        });
        // A queue held in a worker's turn: a kick meanwhile is not served inline,
        // and the worker serves its item afterwards (the kick's `pending`).
        wait_for("the queue idle", || {
            q.sched.state.load(Ordering::SeqCst) == IDLE
        });
        q.hold.store(true, Ordering::SeqCst);
        q.inline_ok.store(false, Ordering::SeqCst);
        q.work.store(1, Ordering::SeqCst);
        INLINE.kick_inline(&s);
        wait_for("a worker in the turn", || q.in_turn.load(Ordering::SeqCst));
        q.inline_ok.store(true, Ordering::SeqCst);
        INLINE.kick_inline(&s);
        assert_eq!(
            lock(&q.inline_on).len(),
            3,
            "not served inline while running"
        );
        q.hold.store(false, Ordering::SeqCst);
        wait_for("the worker served it", || {
            q.by_worker.load(Ordering::SeqCst) == 3
        });
        assert_eq!(q.overlaps.load(Ordering::SeqCst), 0);
        INLINE.unregister();
        wait_for("the workers ended", || lock(&INLINE.inner).workers == 0);
    }

    static STORM: Pool = Pool::new(
        "pool-test-storm",
        16,
        Duration::from_micros(50),
        Duration::ZERO,
    );

    /// The runs a storm of `events` notifications lasting `took` may cost with
    /// the back-off: two free ones, one per doubling of the delay up to 1 s, one
    /// a second after that, and some slack.
    fn storm_runs_allowed(took: Duration) -> u64 {
        16 + 2 * took.as_secs()
    }

    /// Late EOI on the host side: 100 000 notifications that find no work cost a
    /// few runs (not one each), counted as spurious, while another queue of the
    /// same pool is served at once throughout; work published during the storm
    /// is done within the delay in force, and it ends the back-off.
    #[test]
    fn a_storm_of_spurious_notifications_backs_off_and_work_ends_it() {
        let storm = Arc::new(Fake::default());
        let other = Arc::new(Fake::default());
        let (st, ot): (Arc<dyn Served>, Arc<dyn Served>) = (storm.clone(), other.clone());
        STORM.register();
        STORM.register();
        let start = Instant::now();
        for i in 0..100_000u32 {
            STORM.notify(&st);
            if i % 1000 == 0 {
                // The other queue's work is served at once, storm or not: it is
                // never held back, and each item is done before the next.
                other.work.fetch_add(1, Ordering::SeqCst);
                STORM.notify(&ot);
                wait_for("the other queue served", || {
                    other.work.load(Ordering::SeqCst) == 0
                });
            }
            if i % 64 == 0 {
                std::thread::yield_now();
            }
        }
        let took = start.elapsed();
        let c = &storm.sched.counters;
        let (runs, spurious, backoffs) = (c.runs(), c.spurious(), c.backoffs());
        assert!(
            runs <= storm_runs_allowed(took),
            "{runs} runs for 100 000 empty notifications in {took:?}"
        );
        assert!(
            spurious >= 2 && backoffs >= 1,
            "{spurious} spurious, {backoffs} back-offs"
        );
        assert_eq!(
            spurious, runs,
            "every run of the storming queue found nothing"
        );
        assert!(storm.sched.in_a_row.load(Ordering::SeqCst) >= 2);
        assert_eq!(other.served.load(Ordering::SeqCst), 100);
        assert_eq!(other.sched.counters.backoffs(), 0);
        // Work published (and notified) while held back: done when the delay
        // ends (at most 1 s), and the streak is over.
        wait_for("the storming queue held back", || {
            storm.sched.state.load(Ordering::SeqCst) == DELAYED
        });
        storm.work.store(3, Ordering::SeqCst);
        STORM.notify(&st);
        wait_for("the work published during the back-off done", || {
            storm.work.load(Ordering::SeqCst) == 0
        });
        // The run that did it has ended (the streak is reset as it ends).
        wait_for("the run over", || {
            storm.sched.state.load(Ordering::SeqCst) == IDLE
        });
        assert_eq!(storm.sched.in_a_row.load(Ordering::SeqCst), 0);
        assert_eq!(storm.served.load(Ordering::SeqCst), 3);
        assert_eq!(storm.overlaps.load(Ordering::SeqCst), 0);
        STORM.unregister();
        STORM.unregister();
        wait_for("the workers ended", || lock(&STORM.inner).workers == 0);
    }

    static HELD: Pool = Pool::new("pool-test-held", 16, Duration::ZERO, Duration::ZERO);

    /// A queue held back is not served for notifications before its delay ends
    /// (then once, for all of them), but the backend's own kick serves it at
    /// once; the first spurious notification in a row costs no delay; and
    /// another queue is served while one is held back.
    #[test]
    fn held_back_queues_wait_for_the_delay_but_not_for_a_kick() {
        let q = Arc::new(Fake::default());
        let s: Arc<dyn Served> = q.clone();
        let other = Arc::new(Fake::default());
        let o: Arc<dyn Served> = other.clone();
        HELD.register();
        HELD.register();
        let c = &q.sched.counters;
        // One spurious notification: served, counted, not held back.
        HELD.notify(&s);
        wait_for("one run", || {
            c.runs() == 1 && q.sched.state.load(Ordering::SeqCst) == IDLE
        });
        assert_eq!((c.spurious(), c.backoffs()), (1, 0));
        // The second in a row: held back.
        HELD.notify(&s);
        wait_for("held back", || c.backoffs() == 1);
        // Push the delay up (2, 4, ... ms) until it is long enough to look at
        // (512 ms).
        while c.backoffs() < 10 {
            HELD.notify(&s);
            std::thread::sleep(Duration::from_millis(1));
        }
        wait_for("held back", || {
            q.sched.state.load(Ordering::SeqCst) == DELAYED
        });
        let runs = c.runs();
        for _ in 0..1000 {
            HELD.notify(&s);
        }
        // Meanwhile another queue's work is done: the workers do not wait.
        other.work.store(1, Ordering::SeqCst);
        HELD.notify(&o);
        wait_for("the other queue served", || {
            other.work.load(Ordering::SeqCst) == 0
        });
        assert_eq!(c.runs(), runs, "not served while held back");
        assert_eq!(q.sched.state.load(Ordering::SeqCst), DELAYED);
        // The backend's kick: served at once, and its work ends the streak.
        q.work.store(1, Ordering::SeqCst);
        HELD.kick(&s);
        wait_for("the kick's work done", || {
            q.work.load(Ordering::SeqCst) == 0
        });
        wait_for("the run over", || {
            q.sched.state.load(Ordering::SeqCst) == IDLE
        });
        assert_eq!(q.sched.in_a_row.load(Ordering::SeqCst), 0);
        assert!(lock(&HELD.inner).delayed.is_empty());
        assert_eq!(q.overlaps.load(Ordering::SeqCst), 0);
        HELD.unregister();
        HELD.unregister();
        wait_for("the workers ended", || lock(&HELD.inner).workers == 0);
    }

    static INLINE_EOI: Pool = Pool::new("pool-test-inline-eoi", 16, Duration::ZERO, Duration::ZERO);

    /// Work served inline (on the notifying thread) ends a streak of spurious
    /// notifications too; a notification that cannot be served inline is the
    /// worker's to account for.
    #[test]
    fn work_served_inline_ends_the_streak() {
        let q = Arc::new(Small::default());
        let s: Arc<dyn Served> = q.clone();
        INLINE_EOI.register();
        q.inline_ok.store(true, Ordering::SeqCst);
        let c = &q.sched.counters;
        for n in 1..=2 {
            INLINE_EOI.kick_inline(&s);
            wait_for("the worker's run", || {
                c.spurious() == n && q.sched.state.load(Ordering::SeqCst) != RUNNING
            });
        }
        assert_eq!(q.sched.in_a_row.load(Ordering::SeqCst), 2);
        wait_for("idle again", || {
            q.sched.state.load(Ordering::SeqCst) == IDLE
        });
        q.work.store(1, Ordering::SeqCst);
        INLINE_EOI.kick_inline(&s);
        assert_eq!(lock(&q.inline_on).len(), 1, "served inline");
        assert_eq!(q.sched.in_a_row.load(Ordering::SeqCst), 0);
        INLINE_EOI.unregister();
        wait_for("the workers ended", || lock(&INLINE_EOI.inner).workers == 0);
    }
}
