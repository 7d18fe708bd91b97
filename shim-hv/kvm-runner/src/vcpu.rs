//! The vCPU thread: `KVM_RUN`, exits, hypercalls, upcall injection, halting.
//!
//! ```text
//!  loop:  map new hole pages · refresh vcpu_time_info · inject or ask for a window
//!         KVM_RUN ─▶ IoOut(HYPERCALL_PORT)  → Hypervisor::hypercall, rax = result
//!                    IoOut(0xE9)            → debug console line
//!                    WRMSR(HYPERCALL_MSR)   → fill the hypercall page
//!                    HLT                    → wait for an upcall, the timer, the end
//!                    IRQ window / EINTR     → (loop top injects)
//!                    triple fault, emulation failure, other exits → crash
//! ```
//!
//! Upcalls use Xen's callback-vector mode (`HVM_PARAM_CALLBACK_IRQ` with type 2):
//! no local APIC, the vector is injected with `KVM_INTERRUPT` whenever
//! `evtchn_upcall_pending` is set and the guest has interrupts enabled, level-like
//! and without EOI, as Xen's `hvm_vcpu_has_pending_irq` delivers it. A vCPU running
//! guest code is kicked out of `KVM_RUN` by a signal whose handler sets
//! `immediate_exit`, so a kick that lands just before entry is not lost.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hypercall::abi::{hvm, hypercall_nr as nr};
use hypercall::Gfn;
use kvm_bindings::{kvm_interrupt, kvm_run, kvm_userspace_memory_region, Msrs};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use super::access::VirtAccess;
use super::clock;
use super::xenabi::{self, DEBUGCON_PORT, HYPERCALL_MSR, HYPERCALL_PORT};
use super::LogFn;
use xen_model::{Domain, Hypervisor};

vmm_sys_util::ioctl_iow_nr!(
    KVM_INTERRUPT,
    kvm_bindings::KVMIO,
    0x86,
    kvm_bindings::kvm_interrupt
);

/// `MSR_IA32_TSC`
const MSR_IA32_TSC: u32 = 0x10;
/// EFER.LMA
const EFER_LMA: u64 = 1 << 10;
/// Longest one wait of a halted vCPU (it re-checks the domain's state after it).
const HALT_SLICE: Duration = Duration::from_millis(100);
/// How long a halted vCPU that an event woke waits before it runs the guest again.
/// A backend publishes responses one at a time as they complete, and the guest,
/// which re-arms its event and halts whenever its ring is empty, would otherwise
/// wake (and exit again) for nearly every response of a burst; this moment lets the
/// burst land. With it, reads at depth 32 cost about 0.035 exits per request
/// instead of 0.2 to 0.25 (benches/kvm.rs); the price is 20 µs of latency per wake
/// from an idle halt.
const WAKE_COALESCE: Duration = Duration::from_micros(20);
/// Longest line kept from the debug console before it is flushed.
const DEBUG_LINE_MAX: usize = 256;
/// Bytes of debug-console output a guest's record keeps.
const DEBUG_KEEP: usize = 64 * 1024;
/// Most debug-console lines a guest may put in the log per second (as Xen rate-limits
/// guest output); the rest are counted and the count logged.
const DEBUG_LINES_PER_S: u32 = 100;

/// A guest's debug console (port 0xE9).
#[derive(Default)]
struct DebugCon {
    /// The bytes kept (the last [`DEBUG_KEEP`]).
    kept: Vec<u8>,
    /// The line being written.
    line: Vec<u8>,
    /// Start of the current rate window, lines logged in it, lines dropped.
    window: Option<Instant>,
    logged: u32,
    dropped: u64,
}

thread_local! {
    /// This thread's `kvm_run`, for the kick signal's handler.
    static RUN: Cell<*mut kvm_run> = const { Cell::new(core::ptr::null_mut()) };
}

/// The kick signal's handler: makes the interrupted or the next `KVM_RUN` of this
/// thread return at once.
extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let p = RUN.with(Cell::get);
    if !p.is_null() {
        // SAFETY: RUN is set by the vCPU thread to its own live kvm_run mapping and
        // cleared before that mapping goes; the handler runs on that same thread, and
        // immediate_exit is a plain byte KVM reads on entry (a volatile store).
        unsafe { core::ptr::addr_of_mut!((*p).immediate_exit).write_volatile(1) };
    }
}

/// The signal that kicks vCPU threads.
pub(super) fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 2
}

/// Installs the kick handler (once per process).
pub(super) fn install_kick_handler() -> Result<(), String> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
            .map_err(|e| format!("installing the vCPU kick signal handler: {e}"))
    })
    .clone()
}

/// VM exits by reason, and vCPU time.
#[derive(Debug, Default)]
pub(super) struct Counters {
    by_reason: Mutex<BTreeMap<&'static str, u64>>,
    total: AtomicU64,
    cpu_ns: AtomicU64,
    /// Upcall vectors injected (not exits).
    pub(super) injections: AtomicU64,
}

impl Counters {
    fn count(&self, reason: &'static str) {
        *super::lock(&self.by_reason).entry(reason).or_insert(0) += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> (BTreeMap<String, u64>, u64, Duration) {
        let m = super::lock(&self.by_reason)
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        (
            m,
            self.total.load(Ordering::Relaxed),
            Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed)),
        )
    }
}

/// What the handle, the vCPU thread and the timer thread share.
pub(super) struct Shared {
    pub(super) counters: Counters,
    /// The vCPU thread's id while it runs (`None` before and after).
    thread: Mutex<Option<libc::pthread_t>>,
    /// Set while the vCPU thread is inside (or about to enter) `KVM_RUN`.
    in_run: AtomicBool,
    /// Set to stop the threads (handle dropped).
    pub(super) stop: AtomicBool,
    /// Bumped when the guest re-arms its timer; the timer thread waits on it.
    timer_epoch: (Mutex<u64>, Condvar),
    /// Debug-console output (port 0xE9).
    debug: Mutex<DebugCon>,
    /// Total exits when the guest wrote its first console byte (port 0xE9,
    /// `CONSOLEIO_write`), for the exit-count benchmark.
    pub(super) first_output_exits: Mutex<Option<u64>>,
    pub(super) log: LogFn,
    pub(super) domid: u16,
}

impl Shared {
    pub(super) fn new(log: LogFn, domid: u16) -> Self {
        Shared {
            counters: Counters::default(),
            thread: Mutex::new(None),
            in_run: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            timer_epoch: (Mutex::new(0), Condvar::new()),
            debug: Mutex::new(DebugCon::default()),
            first_output_exits: Mutex::new(None),
            log,
            domid,
        }
    }

    /// Makes the vCPU leave `KVM_RUN` if it is in there (or about to enter).
    pub(super) fn kick(&self) {
        if !self.in_run.load(Ordering::SeqCst) {
            return;
        }
        let t = super::lock(&self.thread);
        if let Some(tid) = *t {
            // SAFETY: tid is the vCPU thread's id, published by that thread while it
            // runs and withdrawn (under this lock) before it ends, so it names a live
            // thread; the signal's handler only sets immediate_exit.
            unsafe { libc::pthread_kill(tid, kick_signal()) };
        }
    }

    /// Wakes the timer thread (the deadline changed or the guest ends).
    pub(super) fn poke_timer(&self) {
        let (m, cv) = &self.timer_epoch;
        *super::lock(m) += 1;
        cv.notify_all();
    }

    /// Waits up to `d` for [`Shared::poke_timer`] after epoch `seen`.
    pub(super) fn wait_timer(&self, seen: u64, d: Duration) -> u64 {
        let (m, cv) = &self.timer_epoch;
        let g = super::lock(m);
        let (g, _) = cv
            .wait_timeout_while(g, d, |e| *e == seen)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }

    pub(super) fn timer_epoch(&self) -> u64 {
        *super::lock(&self.timer_epoch.0)
    }

    pub(super) fn debug_output(&self) -> Vec<u8> {
        super::lock(&self.debug).kept.clone()
    }

    fn debug_byte(&self, b: u8) {
        let (line, dropped) = {
            let mut d = super::lock(&self.debug);
            d.kept.push(b);
            let excess = d.kept.len().saturating_sub(DEBUG_KEEP);
            d.kept.drain(..excess);
            if b != b'\n' && d.line.len() < DEBUG_LINE_MAX {
                if b != b'\r' {
                    d.line.push(b);
                }
                return;
            }
            let line = std::mem::take(&mut d.line);
            if b != b'\n' && b != b'\r' {
                d.line.push(b); // a long line goes on in the next one
            }
            let now = Instant::now();
            let mut dropped = 0;
            if d.window
                .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1))
            {
                d.window = Some(now);
                d.logged = 0;
                dropped = std::mem::take(&mut d.dropped);
            }
            if d.logged >= DEBUG_LINES_PER_S {
                d.dropped += 1;
                (None, dropped)
            } else {
                d.logged += 1;
                (Some(line), dropped)
            }
        };
        if dropped > 0 {
            (self.log)(&format!(
                "(d{}) [{dropped} debug console lines not logged: over {DEBUG_LINES_PER_S} per second]",
                self.domid
            ));
        }
        if let Some(l) = line {
            (self.log)(&format!(
                "(d{}) {}",
                self.domid,
                String::from_utf8_lossy(&l)
            ));
        }
    }

    fn note_output(&self) {
        let mut f = super::lock(&self.first_output_exits);
        if f.is_none() {
            *f = Some(self.counters.total.load(Ordering::Relaxed));
        }
    }
}

/// An exit, copied out of `kvm_run` so the vCPU can be borrowed again.
enum Exit {
    Hypercall(u32),
    Debug(u8),
    Halt,
    Window,
    Interrupted,
    Handled,
    Crash(String),
}

/// One vCPU and everything its loop needs.
pub(super) struct Vcpu {
    // Field order is drop order: the vCPU and VM go before the domain's memory.
    pub(super) fd: VcpuFd,
    pub(super) vm: Arc<VmFd>,
    pub(super) hv: Arc<Hypervisor>,
    pub(super) dom: Arc<Domain>,
    pub(super) shared: Arc<Shared>,
    pub(super) tsc_scale: (u32, i8),
    pub(super) boot_unix_ns: u128,
    clock_at: Option<Instant>,
    clock_page: *mut u8,
    hole_generation: u64,
    next_slot: u32,
    enosys_seen: HashSet<(u32, usize)>,
    unhandled_seen: HashSet<String>,
    /// Time the last hypercall spent blocked (`SCHEDOP_block`/`poll`): not vCPU time.
    blocked: Duration,
}

// SAFETY: `clock_page` is only compared, never dereferenced (a marker of where
// vcpu_time_info was last written); everything else is Send.
unsafe impl Send for Vcpu {}

impl Vcpu {
    pub(super) fn new(
        fd: VcpuFd,
        vm: Arc<VmFd>,
        hv: Arc<Hypervisor>,
        dom: Arc<Domain>,
        shared: Arc<Shared>,
        tsc_khz: u32,
    ) -> Self {
        let boot = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            .saturating_sub(u128::from(hv.now_ns()));
        Vcpu {
            fd,
            vm,
            hv,
            dom,
            shared,
            tsc_scale: clock::time_scale(tsc_khz),
            boot_unix_ns: boot,
            clock_at: None,
            clock_page: core::ptr::null_mut(),
            hole_generation: 0,
            next_slot: 1,
            enosys_seen: HashSet::new(),
            unhandled_seen: HashSet::new(),
            blocked: Duration::ZERO,
        }
    }

    fn log(&self, msg: &str) {
        (self.shared.log)(&format!("domain {}: {msg}", self.dom.id().0));
    }

    fn crash(&self, why: String) {
        self.log(&format!("crashed: {why}"));
        self.hv.crash_domain(&self.dom, why);
    }

    /// Runs the guest until its domain is finished or the handle stops it.
    pub(super) fn run(mut self) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        *super::lock(&self.shared.thread) = Some(me);
        let run_ptr: *mut kvm_run = self.fd.get_kvm_run();
        RUN.with(|r| r.set(run_ptr));
        let hv = self.hv.clone();
        let shared = self.shared.clone();
        hv.set_upcall_hook(
            self.dom.id(),
            Some(Arc::new(move || shared.kick()) as xen_model::Dom0Handler),
        );
        self.run_loop();
        hv.set_upcall_hook(self.dom.id(), None);
        *super::lock(&self.shared.thread) = None;
        RUN.with(|r| r.set(core::ptr::null_mut()));
        self.shared.in_run.store(false, Ordering::SeqCst);
        self.shared.poke_timer();
    }

    fn finished(&self) -> bool {
        self.dom.is_finished() || self.shared.stop.load(Ordering::SeqCst)
    }

    fn run_loop(&mut self) {
        loop {
            if self.finished() {
                return;
            }
            if self.dom.is_paused() {
                // A paused domain's vCPU does not run (its timer still fires).
                self.dom.wait_unpaused();
                continue;
            }
            if let Err(e) = self.map_hole_pages() {
                self.crash(e);
                return;
            }
            self.refresh_clock(false);
            // Announce the entry before looking at the upcall flag: a kicker that
            // raised it after our look sees `in_run` and signals.
            self.shared.in_run.store(true, Ordering::SeqCst);
            self.prepare_injection();
            if self.finished() {
                self.shared.in_run.store(false, Ordering::SeqCst);
                return;
            }
            let t0 = Instant::now();
            let exit = self.enter();
            self.shared.in_run.store(false, Ordering::SeqCst);
            let exit = match exit {
                Ok(e) => e,
                Err(why) => {
                    self.crash(why);
                    return;
                }
            };
            let spent = t0.elapsed();
            let halted = matches!(exit, Exit::Halt);
            match exit {
                Exit::Hypercall(nr) => self.hypercall(nr),
                Exit::Debug(b) => {
                    self.shared.note_output();
                    self.shared.debug_byte(b);
                }
                Exit::Halt => self.halt(),
                Exit::Window | Exit::Interrupted | Exit::Handled => {}
                Exit::Crash(why) => {
                    self.crash(why);
                    return;
                }
            }
            // vCPU time: guest execution plus exit handling, not halted waits.
            let busy = if halted {
                spent
            } else {
                t0.elapsed()
                    .saturating_sub(std::mem::take(&mut self.blocked))
            };
            self.shared
                .counters
                .cpu_ns
                .fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// One `KVM_RUN`; exits that need only the exit data are completed here.
    fn enter(&mut self) -> Result<Exit, String> {
        let counters = &self.shared.counters;
        let exit = match self.fd.run() {
            Ok(e) => e,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
                counters.count("interrupted");
                return Ok(Exit::Interrupted);
            }
            Err(e) => return Err(format!("KVM_RUN failed: {e}")),
        };
        let r = match exit {
            VcpuExit::IoOut(HYPERCALL_PORT, data) => {
                counters.count("io_hypercall");
                let mut b = [0u8; 4];
                let n = data.len().min(4);
                b[..n].copy_from_slice(&data[..n]);
                Exit::Hypercall(u32::from_le_bytes(b))
            }
            VcpuExit::IoOut(DEBUGCON_PORT, data) => {
                counters.count("io_debugcon");
                Exit::Debug(data.first().copied().unwrap_or(0))
            }
            VcpuExit::IoOut(port, _) => {
                counters.count("io_other");
                let key = format!("out to port {port:#x}");
                return Ok(self.unhandled_once(key));
            }
            VcpuExit::IoIn(port, data) => {
                counters.count("io_other");
                data.fill(0xff);
                let key = format!("in from port {port:#x}");
                return Ok(self.unhandled_once(key));
            }
            VcpuExit::MmioRead(addr, data) => {
                counters.count("mmio");
                data.fill(0xff);
                let key = format!("MMIO read at {addr:#x}");
                return Ok(self.unhandled_once(key));
            }
            VcpuExit::MmioWrite(addr, _) => {
                counters.count("mmio");
                let key = format!("MMIO write at {addr:#x}");
                return Ok(self.unhandled_once(key));
            }
            VcpuExit::X86Wrmsr(w) => {
                counters.count("msr");
                if w.index == HYPERCALL_MSR {
                    let ok = install_hypercall_page(&self.dom, w.data);
                    *w.error = u8::from(!ok);
                } else {
                    *w.error = 1;
                }
                Exit::Handled
            }
            VcpuExit::X86Rdmsr(r) => {
                counters.count("msr");
                *r.data = 0;
                *r.error = u8::from(r.index != HYPERCALL_MSR);
                Exit::Handled
            }
            VcpuExit::Hlt => {
                counters.count("hlt");
                Exit::Halt
            }
            VcpuExit::IrqWindowOpen => {
                counters.count("irq_window");
                Exit::Window
            }
            VcpuExit::Intr => {
                counters.count("interrupted");
                Exit::Interrupted
            }
            VcpuExit::Shutdown => {
                counters.count("shutdown");
                Exit::Crash("triple fault (KVM_EXIT_SHUTDOWN)".into())
            }
            VcpuExit::InternalError => {
                counters.count("internal_error");
                Exit::Crash(String::new())
            }
            VcpuExit::FailEntry(reason, cpu) => {
                counters.count("fail_entry");
                Exit::Crash(format!(
                    "VM entry failed (hardware reason {reason:#x}, cpu {cpu})"
                ))
            }
            other => {
                counters.count("other");
                Exit::Crash(format!("unhandled VM exit {other:?}"))
            }
        };
        if let Exit::Crash(s) = &r {
            if s.is_empty() {
                return Ok(Exit::Crash(self.internal_error()));
            }
            let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(0);
            return Ok(Exit::Crash(format!("{s} at rip {rip:#x}")));
        }
        Ok(r)
    }

    /// Port I/O or MMIO nothing serves: ignored (reads give all ones), as Xen does
    /// for a PVH domain without a device model; logged once per port or address.
    fn unhandled_once(&mut self, key: String) -> Exit {
        if self.unhandled_seen.len() < 64 && self.unhandled_seen.insert(key.clone()) {
            self.log(&format!("{key} ignored (no device there; logged once)"));
        }
        Exit::Handled
    }

    fn internal_error(&mut self) -> String {
        let run = self.fd.get_kvm_run();
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the
        // union member KVM filled.
        let ie = unsafe { run.__bindgen_anon_1.internal };
        let regs = self.fd.get_regs().ok();
        let rip = regs.map_or(0, |r| r.rip);
        let mut insn = String::new();
        if let Ok(t) = self.fd.translate_gva(rip) {
            if t.valid != 0 {
                let mut b = [0u8; 8];
                if self.dom.memory().read(t.physical_address, &mut b).is_ok() {
                    insn = b.iter().map(|x| format!(" {x:02x}")).collect();
                    insn = format!(", instruction bytes{insn}");
                }
            }
        }
        let what = match ie.suberror {
            1 => "instruction emulation failed",
            2 => "simultaneous exceptions",
            3 => "delivery event failure",
            _ => "internal error",
        };
        format!(
            "KVM {what} (suberror {}) at rip {rip:#x}{insn}",
            ie.suberror
        )
    }

    fn hypercall(&mut self, nr: u32) {
        let (mut regs, sregs) = match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(r), Ok(s)) => (r, s),
            (Err(e), _) | (_, Err(e)) => {
                self.crash(format!("reading registers: {e}"));
                return;
            }
        };
        let long = sregs.efer & EFER_LMA != 0 && sregs.cs.l != 0;
        let args: [usize; 5] = if long {
            [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8].map(|r| r as usize)
        } else {
            [regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi].map(|r| (r & 0xffff_ffff) as usize)
        };
        let result = if sregs.cs.dpl != 0 {
            // As Xen: hypercalls from guest user mode are refused.
            -hypercall::abi::errno::EPERM
        } else {
            if nr == nr::CONSOLE_IO {
                self.shared.note_output();
            }
            let access = VirtAccess::new(&self.fd, self.dom.memory(), long);
            let t = Instant::now();
            let r = self.hv.hypercall(&self.dom, nr, args, &access);
            if nr == nr::SCHED_OP {
                self.blocked = t.elapsed(); // block, poll, yield: waiting, not running
            }
            r
        };
        if result == -hypercall::abi::errno::ENOSYS {
            let key = (nr, args[0]);
            if self.enosys_seen.len() < 256 && self.enosys_seen.insert(key) {
                self.log(&format!(
                    "hypercall {nr} (command {}) is not implemented: -ENOSYS (logged once)",
                    args[0]
                ));
            }
        }
        regs.rax = if long {
            result as i64 as u64
        } else {
            u64::from(result as i32 as u32)
        };
        if let Err(e) = self.fd.set_regs(&regs) {
            self.crash(format!("writing registers: {e}"));
            return;
        }
        match nr {
            nr::SET_TIMER_OP | nr::VCPU_OP => self.shared.poke_timer(),
            nr::MEMORY_OP => self.refresh_clock(true),
            nr::HVM_OP if result == 0 => self.check_upcall_mode(args[0]),
            _ => {}
        }
    }

    /// Says once when the guest asks for an upcall delivery this runner does not
    /// provide (it would otherwise wait for events that never come).
    fn check_upcall_mode(&mut self, cmd: usize) {
        let msg = if cmd == hvm::OP_SET_EVTCHN_UPCALL_VECTOR as usize {
            Some(
                "per-vCPU upcall vectors (HVMOP_set_evtchn_upcall_vector) need a local APIC, \
                 which this runner does not give: use HVM_PARAM_CALLBACK_IRQ with type vector"
                    .to_string(),
            )
        } else {
            let v = self.dom.hvm_param(hvm::PARAM_CALLBACK_IRQ).unwrap_or(0);
            let ty = v >> hvm::CALLBACK_IRQ_TYPE_SHIFT;
            (v != 0 && ty != hvm::CALLBACK_TYPE_VECTOR).then(|| {
                format!(
                    "HVM_PARAM_CALLBACK_IRQ = {v:#x} (type {ty}): only type {} (vector) is \
                     delivered here; this guest will get no upcalls",
                    hvm::CALLBACK_TYPE_VECTOR
                )
            })
        };
        if let Some(m) = msg {
            if self.unhandled_seen.len() < 64 && self.unhandled_seen.insert(m.clone()) {
                self.log(&m);
            }
        }
    }

    /// The callback vector, if the guest chose vector delivery.
    fn callback_vector(&self) -> Option<u8> {
        let v = self.dom.hvm_param(hvm::PARAM_CALLBACK_IRQ)?;
        (v >> hvm::CALLBACK_IRQ_TYPE_SHIFT == hvm::CALLBACK_TYPE_VECTOR)
            .then_some((v & 0xff) as u8)
            .filter(|v| *v >= 0x10)
    }

    fn prepare_injection(&mut self) {
        let vector = self.callback_vector();
        let pending = vector.is_some() && self.hv.upcall_pending(self.dom.id());
        let run = self.fd.get_kvm_run();
        if !pending {
            run.request_interrupt_window = 0;
            return;
        }
        if run.ready_for_interrupt_injection != 0 && run.if_flag != 0 {
            run.request_interrupt_window = 0;
            self.refresh_clock(true);
            let irq = kvm_interrupt {
                irq: u32::from(vector.unwrap_or(0)),
            };
            // SAFETY: KVM_INTERRUPT takes a kvm_interrupt by pointer and only reads
            // it; the fd is this vCPU's. EEXIST (one already queued) is harmless.
            unsafe { vmm_sys_util::ioctl::ioctl_with_ref(&self.fd, KVM_INTERRUPT(), &irq) };
            self.shared
                .counters
                .injections
                .fetch_add(1, Ordering::Relaxed);
        } else {
            run.request_interrupt_window = 1;
        }
    }

    /// `HLT`: waits until an upcall can be delivered, the timer fires, or the domain
    /// ends. With interrupts off or no callback vector only the end wakes it. After a
    /// real wait, [`WAKE_COALESCE`] passes before the guest runs.
    fn halt(&mut self) {
        let if_flag = self.fd.get_kvm_run().if_flag != 0;
        let mut slept = false;
        loop {
            if self.finished() {
                return;
            }
            let due = self.hv.check_timer(&self.dom);
            let seen = self.dom.signal().epoch();
            if if_flag && self.callback_vector().is_some() && self.hv.upcall_pending(self.dom.id())
            {
                if slept {
                    // Give the event's producer a moment to finish its burst.
                    std::thread::sleep(WAKE_COALESCE);
                }
                return;
            }
            slept = true;
            let wait = due.map_or(HALT_SLICE, |d| d.min(HALT_SLICE));
            self.dom.signal().wait_change(seen, wait);
        }
    }

    /// Gives KVM a memory slot for each page the guest placed in a hole.
    fn map_hole_pages(&mut self) -> Result<(), String> {
        let mem = self.dom.memory().clone();
        let generation = mem.hole_generation();
        if generation == self.hole_generation {
            return Ok(());
        }
        self.hole_generation = generation;
        let pages = mem.hole_pages();
        for (gfn, page) in pages.iter().skip((self.next_slot - 1) as usize) {
            let region = kvm_userspace_memory_region {
                slot: self.next_slot,
                flags: 0,
                guest_phys_addr: gfn.addr(),
                memory_size: hypercall::PAGE_SIZE as u64,
                userspace_addr: page.as_ptr() as u64,
            };
            // SAFETY: the page is a private host page owned by the domain's memory,
            // which lives (Arc) until after this VM is closed (field order of Vcpu);
            // it lies outside every other slot (GuestMemory::place only makes pages
            // outside RAM, each gfn once).
            unsafe { self.vm.set_user_memory_region(region) }
                .map_err(|e| format!("mapping frame {:#x} into the VM: {e}", gfn.0))?;
            self.next_slot += 1;
        }
        Ok(())
    }

    /// Writes `vcpu_time_info` (and, when `shared_info` moved, the wall clock) if
    /// `force`, if it is stale, or if the page moved.
    fn refresh_clock(&mut self, force: bool) {
        let Ok(region) = self.hv.shared_info(self.dom.id()) else {
            return;
        };
        let shinfo = region.mem();
        if self.dom.shared_info_gfn().is_none() {
            return; // still the private page: the guest cannot see it
        }
        let moved = shinfo.as_ptr() != self.clock_page;
        let stale = self.clock_at.is_none_or(|t| t.elapsed() >= clock::REFRESH);
        if !(force || moved || stale) {
            return;
        }
        let mut msrs = match Msrs::from_entries(&[kvm_bindings::kvm_msr_entry {
            index: MSR_IA32_TSC,
            ..Default::default()
        }]) {
            Ok(m) => m,
            Err(_) => return,
        };
        let now = self.hv.now_ns();
        if !matches!(self.fd.get_msrs(&mut msrs), Ok(1)) {
            return;
        }
        let tsc = msrs.as_slice()[0].data;
        let (mul, shift) = self.tsc_scale;
        clock::publish(&shinfo, 0, tsc, now, mul, shift);
        if moved {
            clock::publish_wallclock(&shinfo, self.boot_unix_ns);
            self.clock_page = shinfo.as_ptr();
        }
        self.clock_at = Some(Instant::now());
    }
}

/// Fills the guest page at `gpa` with the hypercall stubs. False (the guest gets
/// #GP, as from Xen) if `gpa` is not page-aligned RAM.
fn install_hypercall_page(dom: &Domain, gpa: u64) -> bool {
    if gpa & 0xfff != 0 {
        return false;
    }
    match dom.memory().page(Gfn(gpa >> 12)) {
        Ok(p) => {
            p.write(0, &xenabi::hypercall_page());
            true
        }
        Err(_) => false,
    }
}
