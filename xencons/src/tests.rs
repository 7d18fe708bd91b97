//! Unit tests against an in-crate fake: one console page in host memory, a fake
//! hypervisor for the few hypercalls the console makes, and a fake backend that runs
//! inside `Platform::wait` (deterministic, single-threaded, with a fake clock).
#![allow(unsafe_code)]

extern crate std;

use core::cell::{Cell, RefCell};
use core::fmt::Write as _;
use core::ptr::NonNull;
use core::time::Duration;
use std::vec;
use std::vec::Vec;

use hypercall::abi::{console as abi, errno, evtchn, hvm, hypercall_nr as nr};
use hypercall::{Gfn, Hypercall, Platform, Port, SharedMem};

use crate::{Config, Console, EarlyConsole, EarlyPath, Error, Fault, WriteError};

const GFN: u64 = 0xfeff7;
const PORT: u32 = 5;
const WAIT_NS: u64 = 1_000_000;
/// Where the reserved part of the console page starts (after `connection`).
const RESERVED: usize = abi::CONNECTION + 1;

/// What the fake backend does on each `wait()`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    /// Consumes up to this many output bytes per wait.
    Drain(usize),
    /// Never consumes (stuck / vanished backend).
    Stuck,
}

/// A hook run after every wait: (page, number of waits so far).
type OnWait = std::boxed::Box<dyn FnMut(&SharedMem<'static>, u32)>;

struct Fake {
    _backing: Vec<u64>,
    /// Borrowed from `_backing`, which the fake owns (a test-only owner-based
    /// design: `'static` stands for "as long as the fake").
    page: SharedMem<'static>,
    params: RefCell<[u64; 40]>,
    clock: Cell<u64>,
    backend: Cell<Backend>,
    /// What the backend consumed.
    seen: RefCell<Vec<u8>>,
    sends: Cell<u32>,
    waits: Cell<u32>,
    console_io: RefCell<Vec<u8>>,
    console_io_rc: Cell<isize>,
    /// Run after every wait (tests inject misbehaviour here).
    on_wait: RefCell<Option<OnWait>>,
}

impl Fake {
    fn new(backend: Backend) -> Fake {
        let mut backing = vec![0u64; 512];
        let ptr = NonNull::new(backing.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `backing` lives as long as `Fake` and is only accessed through `page`.
        let page = unsafe { SharedMem::new(ptr, 4096) };
        let mut params = [0u64; 40];
        params[hvm::PARAM_CONSOLE_PFN as usize] = GFN;
        params[hvm::PARAM_CONSOLE_EVTCHN as usize] = PORT as u64;
        Fake {
            _backing: backing,
            page,
            params: RefCell::new(params),
            clock: Cell::new(1_000),
            backend: Cell::new(backend),
            seen: RefCell::new(Vec::new()),
            sends: Cell::new(0),
            waits: Cell::new(0),
            console_io: RefCell::new(Vec::new()),
            console_io_rc: Cell::new(0),
            on_wait: RefCell::new(None),
        }
    }

    /// The backend's half of the output ring: consume up to `max` bytes. Like all
    /// the backend's work, not recorded by the read audit.
    fn drain(&self, max: usize) {
        hypercall::audit::paused(|| self.drain_inner(max));
    }

    /// R7: the page past `connection` is reserved; the guest never writes there.
    /// Checked when the fake goes away (every test) and by the R7 test.
    fn check_reserved(&self) {
        let mut tail = vec![0u8; 4096 - RESERVED];
        hypercall::audit::paused(|| self.page.read(RESERVED, &mut tail));
        // Compared whole (one `memcmp`; a loop per byte costs Miri in every test).
        assert!(
            tail == [0u8; 4096 - RESERVED],
            "R7: the reserved part of the console page was written"
        );
    }

    fn drain_inner(&self, max: usize) {
        let cons = self.page.load_u32(abi::OUT_CONS);
        let prod = self.page.load_u32(abi::OUT_PROD);
        let n = (prod.wrapping_sub(cons) as usize).min(max);
        // At most two pieces (before and after the ring's end), not a byte at a
        // time: a loop per byte made the fake most of some tests' cost under Miri.
        let start = cons as usize & (abi::OUT_SIZE - 1);
        let first = n.min(abi::OUT_SIZE - start);
        let mut bytes = vec![0u8; n];
        self.page.read(abi::OUT + start, &mut bytes[..first]);
        self.page.read(abi::OUT, &mut bytes[first..]);
        self.seen.borrow_mut().extend_from_slice(&bytes);
        self.page
            .store_u32(abi::OUT_CONS, cons.wrapping_add(n as u32));
    }

    /// The backend's half of the input ring: put `bytes` (all must fit).
    fn type_in(&self, bytes: &[u8]) {
        hypercall::audit::paused(|| self.type_in_inner(bytes));
    }

    fn type_in_inner(&self, bytes: &[u8]) {
        let prod = self.page.load_u32(abi::IN_PROD);
        // At most two pieces, as in `drain_inner`.
        assert!(bytes.len() <= abi::IN_SIZE, "typed input must fit the ring");
        let start = prod as usize & (abi::IN_SIZE - 1);
        let first = bytes.len().min(abi::IN_SIZE - start);
        self.page.write(abi::IN + start, &bytes[..first]);
        self.page.write(abi::IN, &bytes[first..]);
        self.page
            .store_u32(abi::IN_PROD, prod.wrapping_add(bytes.len() as u32));
    }

    fn seen(&self) -> Vec<u8> {
        self.seen.borrow().clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.check_reserved();
        }
    }
}

impl Hypercall for Fake {
    unsafe fn hypercall(&self, op: u32, args: [usize; 5]) -> isize {
        match (op, args[0] as u32) {
            (nr::HVM_OP, hvm::OP_GET_PARAM) => {
                let p = args[1] as *mut hvm::Param;
                // SAFETY: (test) the wrapper passes a live Param on its stack.
                let mut param = unsafe { p.read_unaligned() };
                match self.params.borrow().get(param.index as usize) {
                    Some(v) => param.value = *v,
                    None => return -errno::EINVAL,
                }
                // SAFETY: as above.
                unsafe { p.write_unaligned(param) };
                0
            }
            (nr::EVENT_CHANNEL_OP, evtchn::OP_SEND) => {
                // SAFETY: (test) the wrapper passes a live PortArg.
                let a = unsafe { (args[1] as *const evtchn::PortArg).read_unaligned() };
                if a.port != PORT {
                    return -errno::EINVAL;
                }
                self.sends.set(self.sends.get() + 1);
                0
            }
            (nr::CONSOLE_IO, abi::CONSOLEIO_WRITE) => {
                let rc = self.console_io_rc.get();
                if rc == 0 {
                    // SAFETY: (test) the wrapper passes a live byte slice.
                    let s = unsafe { core::slice::from_raw_parts(args[2] as *const u8, args[1]) };
                    self.console_io.borrow_mut().extend_from_slice(s);
                }
                rc
            }
            _ => -errno::ENOSYS,
        }
    }
}

// SAFETY: (test) `gfn_to_virt` hands out only the console page, which `Fake` owns and
// keeps mapped for its whole life.
unsafe impl Platform for Fake {
    fn alloc_pages(&self, _count: usize) -> Option<NonNull<u8>> {
        None
    }
    unsafe fn free_pages(&self, _ptr: NonNull<u8>, _count: usize) {}
    fn virt_to_gfn(&self, _addr: NonNull<u8>) -> Option<Gfn> {
        None
    }
    fn gfn_to_virt(&self, gfn: Gfn) -> Option<NonNull<u8>> {
        (gfn.0 == GFN).then(|| self.page.as_non_null())
    }
    fn wait(&self) {
        self.waits.set(self.waits.get() + 1);
        self.clock.set(self.clock.get() + WAIT_NS);
        if let Backend::Drain(n) = self.backend.get() {
            self.drain(n);
        }
        if let Some(f) = self.on_wait.borrow_mut().as_mut() {
            hypercall::audit::paused(|| f(&self.page, self.waits.get()));
        }
    }
    fn now_ns(&self) -> u64 {
        self.clock.get()
    }
}

/// `i * 31 % 251` for `i` in `0..251`, computed by the compiler.
const PERIOD: [u8; 251] = {
    let mut p = [0u8; 251];
    let mut i = 0;
    while i < 251 {
        p[i] = (i * 31 % 251) as u8;
        i += 1;
    }
    p
};

/// Byte `i` is `i * 31 % 251`: the compile-time period copied, not computed per
/// byte (a loop per byte was a good part of some tests' cost under Miri).
fn pattern(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let k = (n - v.len()).min(PERIOD.len());
        v.extend_from_slice(&PERIOD[..k]);
    }
    v
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a check of test data without unsafe code, run natively"
)]
fn pattern_is_the_formula() {
    for n in [0, 1, 250, 251, 252, 3000] {
        let p = pattern(n);
        assert_eq!(p.len(), n);
        assert!(p
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i * 31 % 251) as u8));
    }
}

fn console(f: &Fake) -> Console<&Fake> {
    Console::from_hvm_params(f).unwrap()
}

// ---- setup ----------------------------------------------------------------------

#[test]
fn from_hvm_params_maps_the_page_and_uses_the_port() {
    let f = Fake::new(Backend::Drain(4096));
    let mut c = console(&f);
    assert_eq!(c.port(), Port(PORT));
    c.write(b"hi").unwrap();
    assert_eq!(f.sends.get(), 1, "one notification for one write");
    f.drain(100);
    assert_eq!(f.seen(), b"hi");
}

#[test]
fn unset_params_are_not_configured() {
    let f = Fake::new(Backend::Stuck);
    f.params.borrow_mut()[hvm::PARAM_CONSOLE_PFN as usize] = 0;
    assert_eq!(
        Console::from_hvm_params(&f).unwrap_err(),
        Error::NotConfigured {
            param: hvm::PARAM_CONSOLE_PFN
        }
    );
    let f = Fake::new(Backend::Stuck);
    f.params.borrow_mut()[hvm::PARAM_CONSOLE_EVTCHN as usize] = 0;
    assert_eq!(
        Console::from_hvm_params(&f).unwrap_err(),
        Error::NotConfigured {
            param: hvm::PARAM_CONSOLE_EVTCHN
        }
    );
    let f = Fake::new(Backend::Stuck);
    f.params.borrow_mut()[hvm::PARAM_CONSOLE_EVTCHN as usize] = 1 << 40;
    assert!(matches!(
        Console::from_hvm_params(&f).unwrap_err(),
        Error::BadParam { .. }
    ));
    let f = Fake::new(Backend::Stuck);
    f.params.borrow_mut()[hvm::PARAM_CONSOLE_PFN as usize] = GFN + 1;
    assert_eq!(
        Console::from_hvm_params(&f).unwrap_err(),
        Error::Unmapped(Gfn(GFN + 1))
    );
}

#[test]
fn a_page_with_illegal_indices_is_refused_at_attach() {
    let f = Fake::new(Backend::Stuck);
    f.page.store_u32(abi::OUT_PROD, 5000);
    assert!(matches!(
        Console::from_hvm_params(&f).unwrap_err(),
        Error::Failed(Fault::OutIndices { .. })
    ));
}

#[test]
fn adopts_indices_left_by_an_earlier_stage() {
    let f = Fake::new(Backend::Drain(4096));
    f.page.store_u32(abi::OUT_PROD, 100);
    f.page.store_u32(abi::OUT_CONS, 100);
    let mut c = console(&f);
    c.write(b"abc").unwrap();
    assert_eq!(c.out_prod(), 103);
    assert_eq!(f.page.load_u32(abi::OUT_PROD), 103);
}

#[test]
fn a_frame_the_platform_does_not_map_is_refused() {
    let f = Fake::new(Backend::Stuck);
    assert_eq!(
        Console::new(&f, Gfn(GFN + 1), Port(PORT), Config::default()).unwrap_err(),
        Error::Unmapped(Gfn(GFN + 1))
    );
    assert!(Console::new(&f, Gfn(GFN), Port(PORT), Config::default()).is_ok());
}

// ---- output ---------------------------------------------------------------------

#[test]
fn fmt_write_puts_exactly_the_bytes() {
    let f = Fake::new(Backend::Drain(4096));
    let mut c = console(&f);
    writeln!(c, "x = {}, {}", 42, "y".len()).unwrap();
    f.drain(4096);
    assert_eq!(f.seen(), b"x = 42, 1\n");
}

#[test]
fn crlf_translation_is_opt_in_and_fmt_only() {
    let f = Fake::new(Backend::Drain(4096));
    let mut c = Console::from_hvm_params_with(&f, Config::default().with_crlf(true)).unwrap();
    write!(c, "a\nb\n\nc").unwrap();
    c.write(b"raw\n").unwrap();
    f.drain(4096);
    assert_eq!(f.seen(), b"a\r\nb\r\n\r\ncraw\n");
}

#[test]
fn slow_backend_writer_waits_then_completes_with_nothing_lost() {
    // Row 36: the backend drains 7 bytes per wait; 10 KiB must come through whole.
    // (3 KiB and over 100 waits under Miri, where each wait costs thousands of
    // basic blocks: still more than the 2 KiB ring.)
    let (len, min_waits) = if cfg!(miri) {
        (3 * 1024, 100)
    } else {
        (10 * 1024, 1000)
    };
    let f = Fake::new(Backend::Drain(7));
    let mut c = console(&f);
    let data = pattern(len);
    c.write(&data).unwrap();
    assert!(
        f.waits.get() > min_waits,
        "the writer had to wait for the backend"
    );
    f.drain(4096);
    assert_eq!(f.seen(), data);
    assert_eq!(c.stats().written, data.len() as u64);
    assert_eq!(c.pending_output().unwrap(), 0);
}

#[test]
fn more_than_a_ring_in_one_burst() {
    let f = Fake::new(Backend::Drain(4096));
    let mut c = console(&f);
    let data = pattern(2 * abi::OUT_SIZE + 123);
    c.write(&data).unwrap();
    f.drain(4096);
    assert_eq!(f.seen(), data);
}

#[test]
fn vanished_backend_gives_a_typed_error_after_the_stall_timeout() {
    // Row 36: nobody drains. The writer fills the ring, waits, and gives up after the
    // stall timeout (fake clock: 1 ms per wait), saying how much went out.
    let f = Fake::new(Backend::Stuck);
    let mut c = Console::from_hvm_params_with(
        &f,
        Config::default().with_stall_timeout(Duration::from_millis(50)),
    )
    .unwrap();
    let data = pattern(3000);
    let e = c.write(&data).unwrap_err();
    assert_eq!(e.written, abi::OUT_SIZE);
    let Error::BackendGone { stalled_ns } = e.error else {
        panic!("{e:?}")
    };
    assert!(stalled_ns >= 50 * WAIT_NS);
    let waits = f.waits.get();
    assert!((50..60).contains(&waits), "bounded wait: {waits}");
    // The bytes that went out are intact.
    f.drain(4096);
    assert_eq!(f.seen(), &data[..abi::OUT_SIZE]);
}

/// A writer stuck on a full ring notifies the backend once more (in case it missed
/// the first event), and only once per stall: a stalled ring costs no event storm.
#[test]
fn a_stalled_writer_kicks_the_backend_exactly_once() {
    let f = Fake::new(Backend::Stuck);
    let mut c = Console::from_hvm_params_with(
        &f,
        Config::default().with_stall_timeout(Duration::from_millis(50)),
    )
    .unwrap();
    assert!(c.write(&pattern(3000)).is_err());
    let s = c.stats();
    assert!(s.waits >= 50, "{s:?}");
    assert_eq!(s.notifies, 2, "one for the bytes written, one kick: {s:?}");
}

#[test]
fn a_gone_backend_fails_later_writes_fast_until_it_moves() {
    let f = Fake::new(Backend::Stuck);
    let mut c = Console::from_hvm_params_with(
        &f,
        Config::default().with_stall_timeout(Duration::from_millis(20)),
    )
    .unwrap();
    let _ = c.write(&pattern(3000)).unwrap_err();
    let waits = f.waits.get();
    let e = c.write(b"more").unwrap_err();
    assert!(matches!(e.error, Error::BackendGone { .. }));
    assert_eq!(e.written, 0);
    assert_eq!(f.waits.get(), waits, "no second timeout wait");
    // The backend comes back: writes work again.
    f.drain(10);
    c.write(b"more").unwrap();
    f.drain(4096);
    assert!(f.seen().ends_with(b"more"));
}

#[test]
fn progress_restarts_the_stall_clock() {
    // A backend that consumes one byte every 30 ms (fake) is slow, not gone, with a
    // 50 ms stall timeout.
    let f = Fake::new(Backend::Stuck);
    *f.on_wait.borrow_mut() = Some(std::boxed::Box::new(|page: &SharedMem, n: u32| {
        if n.is_multiple_of(30) {
            let c = page.load_u32(abi::OUT_CONS);
            page.store_u32(abi::OUT_CONS, c.wrapping_add(1));
        }
    }));
    let mut c = Console::from_hvm_params_with(
        &f,
        Config::default().with_stall_timeout(Duration::from_millis(50)),
    )
    .unwrap();
    c.write(&pattern(abi::OUT_SIZE + 5)).unwrap();
}

#[test]
fn disconnected_backend_is_a_typed_error() {
    let f = Fake::new(Backend::Stuck);
    let mut c = console(&f);
    f.page.store_u8(abi::CONNECTION, abi::DISCONNECTED);
    assert!(c.is_disconnected());
    assert_eq!(
        c.write(b"x").unwrap_err(),
        WriteError {
            written: 0,
            error: Error::Disconnected
        }
    );
    // Marked closed while a writer waits.
    f.page.store_u8(abi::CONNECTION, abi::CONNECTED);
    *f.on_wait.borrow_mut() = Some(std::boxed::Box::new(|page: &SharedMem, n: u32| {
        if n == 3 {
            page.store_u8(abi::CONNECTION, abi::DISCONNECTED);
        }
    }));
    let e = c.write(&pattern(2100)).unwrap_err();
    assert_eq!(e.error, Error::Disconnected);
    assert_eq!(e.written, 2048);
}

#[test]
fn out_cons_ahead_of_out_prod_fails_the_console() {
    // Row 37.
    let f = Fake::new(Backend::Stuck);
    let mut c = console(&f);
    c.write(b"hello").unwrap();
    f.page.store_u32(abi::OUT_CONS, 6);
    let e = c.write(b"x").unwrap_err();
    assert_eq!(
        e.error,
        Error::Failed(Fault::OutIndices { cons: 6, prod: 5 })
    );
    // Failed for good, even once the indices look sane again; nothing more written.
    f.page.store_u32(abi::OUT_CONS, 5);
    assert!(matches!(c.write(b"y").unwrap_err().error, Error::Failed(_)));
    assert!(matches!(c.read(&mut [0; 4]).unwrap_err(), Error::Failed(_)));
    assert_eq!(f.page.load_u32(abi::OUT_PROD), 5);
    assert_eq!(c.fault(), Some(Fault::OutIndices { cons: 6, prod: 5 }));
}

#[test]
fn out_cons_far_behind_fails_the_console() {
    let f = Fake::new(Backend::Stuck);
    let mut c = console(&f);
    c.write(b"hello").unwrap();
    f.page.store_u32(abi::OUT_CONS, 5u32.wrapping_sub(2049));
    assert!(matches!(
        c.write(b"x").unwrap_err().error,
        Error::Failed(Fault::OutIndices { .. })
    ));
}

#[test]
fn bad_indices_while_waiting_fail_the_writer() {
    let f = Fake::new(Backend::Stuck);
    *f.on_wait.borrow_mut() = Some(std::boxed::Box::new(|page: &SharedMem, n: u32| {
        if n == 2 {
            page.store_u32(abi::OUT_CONS, 0xdead_beef);
        }
    }));
    let mut c = console(&f);
    let e = c.write(&pattern(3000)).unwrap_err();
    assert_eq!(e.written, 2048);
    assert!(matches!(e.error, Error::Failed(Fault::OutIndices { .. })));
}

#[test]
fn ring_wraps_and_indices_wrap_at_2_pow_32() {
    // Row 4: start near u32::MAX so out_prod wraps, and at an odd offset so the
    // slots wrap too.
    let f = Fake::new(Backend::Drain(333));
    let start = u32::MAX - 700;
    f.page.store_u32(abi::OUT_PROD, start);
    f.page.store_u32(abi::OUT_CONS, start);
    f.page.store_u32(abi::IN_PROD, start);
    f.page.store_u32(abi::IN_CONS, start);
    let mut c = console(&f);
    let data = pattern(5000);
    c.write(&data).unwrap();
    f.drain(4096);
    assert_eq!(f.seen(), data);
    assert_eq!(c.out_prod(), start.wrapping_add(5000));

    // Input across the wrap, in pieces.
    let mut got = Vec::new();
    for chunk in pattern(3000).chunks(700) {
        f.type_in(chunk);
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, pattern(3000));
    assert_eq!(f.page.load_u32(abi::IN_CONS), start.wrapping_add(3000));
}

// ---- input ----------------------------------------------------------------------

#[test]
fn read_is_non_blocking_and_notifies_after_consuming() {
    let f = Fake::new(Backend::Stuck);
    let mut c = console(&f);
    let mut buf = [0u8; 8];
    assert_eq!(c.read(&mut buf).unwrap(), 0);
    assert_eq!(f.sends.get(), 0);
    f.type_in(b"hello world");
    assert_eq!(c.pending_input().unwrap(), 11);
    assert_eq!(c.read(&mut buf).unwrap(), 8);
    assert_eq!(&buf, b"hello wo");
    assert_eq!(f.sends.get(), 1);
    assert_eq!(c.read(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"rld");
    assert_eq!(f.waits.get(), 0);
}

#[test]
fn read_timeout_waits_for_input_or_times_out() {
    let f = Fake::new(Backend::Stuck);
    let mut c = console(&f);
    let mut buf = [0u8; 8];
    assert_eq!(
        c.read_timeout(&mut buf, Duration::from_millis(20))
            .unwrap_err(),
        Error::Timeout
    );
    assert!((20..25).contains(&f.waits.get()));
    *f.on_wait.borrow_mut() = Some(std::boxed::Box::new(|page: &SharedMem, n: u32| {
        if n == 30 {
            page.store_u8(abi::IN, b'k');
            page.store_u32(abi::IN_PROD, 1);
        }
    }));
    assert_eq!(c.read_timeout(&mut buf, Duration::from_secs(1)).unwrap(), 1);
    assert_eq!(buf[0], b'k');
}

#[test]
fn in_prod_too_far_ahead_fails_the_console() {
    let f = Fake::new(Backend::Stuck);
    let mut c = console(&f);
    f.page.store_u32(abi::IN_PROD, 1025);
    assert_eq!(
        c.read(&mut [0; 4]).unwrap_err(),
        Error::Failed(Fault::InIndices {
            cons: 0,
            prod: 1025
        })
    );
    assert!(matches!(c.write(b"x").unwrap_err().error, Error::Failed(_)));
}

#[test]
fn in_prod_behind_in_cons_fails_the_console() {
    let f = Fake::new(Backend::Stuck);
    let mut c = console(&f);
    f.type_in(b"ab");
    c.read(&mut [0; 4]).unwrap();
    f.page.store_u32(abi::IN_PROD, 1);
    assert!(matches!(
        c.read(&mut [0; 4]).unwrap_err(),
        Error::Failed(Fault::InIndices { cons: 2, prod: 1 })
    ));
}

#[test]
fn backend_scribbling_our_indices_changes_nothing() {
    // out_prod and in_cons are ours: a backend overwriting them is ignored.
    let f = Fake::new(Backend::Stuck);
    let mut c = console(&f);
    c.write(b"abc").unwrap();
    f.page.store_u32(abi::OUT_PROD, 1000);
    c.write(b"d").unwrap();
    assert_eq!(f.page.load_u32(abi::OUT_PROD), 4);
    f.drain(10);
    assert_eq!(f.seen(), b"abcd");
}

// ---- flush ----------------------------------------------------------------------

#[test]
fn flush_waits_for_the_backend() {
    let f = Fake::new(Backend::Drain(5));
    let mut c = console(&f);
    c.write(&pattern(100)).unwrap();
    c.flush(Duration::from_secs(1)).unwrap();
    assert_eq!(f.seen(), pattern(100));

    let f = Fake::new(Backend::Stuck);
    let mut c = Console::from_hvm_params_with(
        &f,
        Config::default().with_stall_timeout(Duration::from_millis(30)),
    )
    .unwrap();
    c.write(b"x").unwrap();
    assert!(matches!(
        c.flush(Duration::from_secs(1)).unwrap_err(),
        Error::BackendGone { .. }
    ));
    assert_eq!(
        c.flush(Duration::from_millis(5)).unwrap_err(),
        Error::Timeout
    );
}

#[test]
fn fmt_errors_keep_the_typed_error() {
    let f = Fake::new(Backend::Stuck);
    let mut c = console(&f);
    f.page.store_u8(abi::CONNECTION, abi::DISCONNECTED);
    assert!(write!(c, "lost").is_err());
    assert_eq!(
        c.take_error(),
        Some(WriteError {
            written: 0,
            error: Error::Disconnected
        })
    );
    assert_eq!(c.take_error(), None);
}

// ---- early console ----------------------------------------------------------------

#[test]
fn early_console_uses_consoleio_write_when_it_works() {
    let f = Fake::new(Backend::Stuck);
    let port = RefCell::new(Vec::new());
    let e = EarlyConsole::new(&f, |b: &[u8]| port.borrow_mut().extend_from_slice(b));
    assert_eq!(e.write(b"boot "), EarlyPath::Hypercall);
    write!(&e, "{}", 1).unwrap();
    assert_eq!(*f.console_io.borrow(), b"boot 1");
    assert!(port.borrow().is_empty());
}

#[test]
fn early_console_falls_back_to_the_debug_port_for_good() {
    // Non-debug Xen: CONSOLEIO_write from a domU fails with EPERM.
    let f = Fake::new(Backend::Stuck);
    f.console_io_rc.set(-errno::EPERM);
    let port = RefCell::new(Vec::new());
    let mut e = EarlyConsole::new(&f, |b: &[u8]| port.borrow_mut().extend_from_slice(b));
    assert_eq!(e.write(b"a"), EarlyPath::DebugPort);
    writeln!(e, "b").unwrap();
    assert_eq!(e.path(), EarlyPath::DebugPort);
    assert_eq!(*port.borrow(), b"ab\n");
    // Only the first write tried the hypercall.
    f.console_io_rc.set(0);
    e.write(b"c");
    assert!(f.console_io.borrow().is_empty());
}

// ---- docs/hostile-input.md C3, E4 ---------------------------------------------------------

/// C3: input with NULs, invalid UTF-8 and ANSI escapes arrives byte for byte (the
/// console never treats input as text), and 1 MiB of it streams through in bounded
/// reads.
#[test]
fn c3_binary_input_arrives_as_bytes() {
    let f = Fake::new(Backend::Stuck);
    let mut c = console(&f);
    let nasty: &[u8] = b"\0\0a\xff\xfe\xc3\x28\xed\xa0\x80\x1b[2J\x1b]0;t\x07\r\n\0";
    f.type_in(nasty);
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], nasty);
    // 1 MiB of every byte value, fed as the ring has room; each read is bounded by
    // the caller's buffer.
    // (16 KiB under Miri: fed byte by byte, 1 MiB takes Miri over 20 minutes.)
    let total = if cfg!(miri) { 1usize << 14 } else { 1 << 20 };
    let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 256) as u8).collect();
    let mut got = Vec::new();
    let mut fed = 0;
    while got.len() < data.len() {
        let room = abi::IN_SIZE - c.pending_input().unwrap();
        let k = room.min(data.len() - fed);
        f.type_in(&data[fed..fed + k]);
        fed += k;
        let mut small = [0u8; 333];
        let n = c.read(&mut small).unwrap();
        assert!(n <= small.len());
        got.extend_from_slice(&small[..n]);
    }
    assert!(got == data, "input altered");
    assert_eq!(c.stats().read, (nasty.len() + data.len()) as u64);
    assert!(c.fault().is_none());
}

/// E4: every `EVTCHNOP_send` fails (the port is not bound on the other end). Output
/// and input still work (the backend polls), each failure is counted, nothing panics.
#[test]
fn e4_failed_notifications_are_counted_not_fatal() {
    let f = Fake::new(Backend::Drain(4096));
    // The fake refuses sends on any port but PORT.
    f.params.borrow_mut()[hvm::PARAM_CONSOLE_EVTCHN as usize] = u64::from(PORT) + 1;
    let mut c = console(&f);
    c.write(b"hello").unwrap();
    f.drain(100);
    assert_eq!(f.seen(), b"hello");
    f.type_in(b"in");
    let mut buf = [0u8; 8];
    assert_eq!(c.read(&mut buf).unwrap(), 2);
    assert_eq!(&buf[..2], b"in");
    let s = c.stats();
    assert_eq!(f.sends.get(), 0, "no send succeeded");
    assert!(s.notifies >= 2);
    assert_eq!(s.notify_errors, s.notifies, "every failure counted");
    assert!(c.fault().is_none());
}

// ---- read audit (docs/hostile-input.md row 3, docs/hostile-input.md R4, R5) and R7 ----------------------

mod read_audit {
    use super::*;
    use hypercall::audit::{self, check_byte_ring, Access};

    /// The console's accesses in a log: every input byte read once, in order, after
    /// `in_prod` showed it; output bytes and our own indices never read back; and
    /// (R7) writes only into `out[]`, `out_prod` and `in_cons`. Returns input bytes
    /// consumed.
    fn check_console(log: &[Access], page: &SharedMem, in_cons: u32) -> u32 {
        let n = check_byte_ring(
            log,
            page,
            abi::IN,
            abi::IN_SIZE,
            abi::IN_PROD,
            abi::IN_CONS,
            in_cons,
        )
        .unwrap_or_else(|v| panic!("input ring: {v}"));
        let out = abi::OUT..abi::OUT + abi::OUT_SIZE;
        for a in log {
            let Some(off) = a.offset_in(page) else {
                continue;
            };
            if a.reads() {
                let own = off == abi::OUT_PROD || off == abi::IN_CONS;
                assert!(!own && !out.contains(&off), "read back: {a:?} at {off}");
            } else {
                let mine = off == abi::OUT_PROD
                    || off == abi::IN_CONS
                    || (out.contains(&off) && off + a.len <= out.end);
                assert!(mine, "R7: write outside the guest's fields: {a:?} at {off}");
            }
        }
        n
    }

    #[test]
    fn row3_each_input_byte_read_once_and_writes_stay_in_place() {
        let f = Fake::new(Backend::Drain(333));
        let start = u32::MAX - 700;
        for off in [abi::OUT_PROD, abi::OUT_CONS, abi::IN_PROD, abi::IN_CONS] {
            f.page.store_u32(off, start);
        }
        let mut c = console(&f);
        audit::start();
        c.write(&pattern(5000)).unwrap();
        let mut got = Vec::new();
        for (k, chunk) in pattern(3000).chunks(700).enumerate() {
            f.type_in(chunk);
            let mut buf = [0u8; 1024];
            // Read in two pieces sometimes: still each byte once.
            if k % 2 == 1 {
                let n = c.read(&mut buf[..100]).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            let n = c.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            c.write(b"echo").unwrap();
        }
        c.flush(Duration::from_secs(1)).unwrap();
        let log = audit::take();
        assert_eq!(got, pattern(3000));
        assert_eq!(check_console(&log, &f.page, start), 3000);
    }

    /// Row 3 / R4 with a flipper thread: while the console reads input, another
    /// thread keeps rewriting the published bytes between two strings. Each byte is
    /// read once (audit) and what the reader gets is exactly the published count,
    /// each byte from one of the two strings; nothing is read again afterwards.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn row3_flipper_rewriting_input() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let (a, b) = ([b'a'; 300], [b'B'; 300]);
        for round in 0..100u32 {
            let f = Fake::new(Backend::Stuck);
            let start = round.wrapping_mul(977);
            f.page.store_u32(abi::IN_PROD, start);
            f.page.store_u32(abi::IN_CONS, start);
            let mut c = console(&f);
            f.type_in(&a);
            let page = f.page;
            let at = start as usize % abi::IN_SIZE;
            let put = |bytes: &[u8]| {
                let first = bytes.len().min(abi::IN_SIZE - at);
                page.write(abi::IN + at, &bytes[..first]);
                page.write(abi::IN, &bytes[first..]);
            };
            let stop = AtomicBool::new(false);
            let flips = AtomicU64::new(0);
            let mut buf = [0u8; 1024];
            let (n, log) = std::thread::scope(|sc| {
                sc.spawn(|| {
                    let mut k = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        put(if k.is_multiple_of(2) { &b } else { &a });
                        k += 1;
                        flips.store(k, Ordering::Relaxed);
                    }
                });
                while flips.load(Ordering::Relaxed) < 2 {
                    std::hint::spin_loop();
                }
                audit::start();
                let n = c.read(&mut buf).unwrap();
                assert_eq!(c.read(&mut buf[n..]).unwrap(), 0, "nothing more");
                let log = audit::take();
                stop.store(true, Ordering::Relaxed);
                (n, log)
            });
            assert_eq!(n, 300);
            // A torn copy (some bytes of each) is possible and fine: each byte was
            // read once and came from one of the two.
            assert!(buf[..n].iter().all(|&x| x == b'a' || x == b'B'));
            assert_eq!(check_console(&log, &page, start), 300, "round {round}");
        }
    }

    /// R7: the fake checks at the end of every test that the reserved part of the
    /// page is zero (the write audit above checks the guest writes nowhere else);
    /// the check can fail.
    #[test]
    fn r7_reserved_bytes_are_checked() {
        let f = Fake::new(Backend::Drain(4096));
        let mut c = console(&f);
        c.write(b"fine").unwrap();
        f.drain(100);
        f.check_reserved();
        f.page.store_u8(RESERVED + 7, 1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.check_reserved()));
        assert!(r.is_err(), "a dirty reserved byte was not caught");
        f.page.store_u8(RESERVED + 7, 0);
    }
}

/// Tests written for mutants cargo-mutants found missed (docs/mutants.md): each fails
/// on the mutant named in its comment.
mod mutants {
    use super::*;
    use std::format;

    /// Both faults name the indices (mutant: `Fault`'s `Display::fmt` -> `Ok(())`).
    #[test]
    fn faults_display_their_indices() {
        let out = Fault::OutIndices {
            cons: 0x900,
            prod: 0x10,
        };
        assert_eq!(
            format!("{out}"),
            "illegal output ring indices: out_cons 0x900, out_prod 0x10"
        );
        let inp = Fault::InIndices {
            cons: 0x10,
            prod: 0x1000,
        };
        assert_eq!(
            format!("{inp}"),
            "illegal input ring indices: in_cons 0x10, in_prod 0x1000"
        );
    }

    /// The console page runs through `connection` at byte 3088 of `io/console.h`'s
    /// layout: in[1024], out[2048], four u32 indices, then the u8 (mutants:
    /// `PAGE_BYTES = CONNECTION + 1` with `-` or `*`).
    #[test]
    fn page_bytes_cover_the_connection_byte() {
        assert_eq!(abi::CONNECTION, 1024 + 2048 + 4 * 4);
        assert_eq!(crate::ring::PAGE_BYTES, 3089);
    }

    /// `config()` gives back what the console was built with, and a console on a
    /// connected page is not disconnected (mutants: `config` -> `Default::default()`,
    /// `is_disconnected` -> `true`).
    #[test]
    fn config_is_kept_and_a_connected_console_is_not_disconnected() {
        let f = Fake::new(Backend::Drain(4096));
        let cfg = Config::default()
            .with_stall_timeout(Duration::from_millis(7))
            .with_crlf(true);
        let c = Console::from_hvm_params_with(&f, cfg).unwrap();
        assert_eq!(c.config(), cfg);
        assert_eq!(c.config().stall_timeout, Duration::from_millis(7));
        assert!(c.config().crlf);
        assert!(!c.is_disconnected());
    }

    /// An empty write to a failed console reports the failure, as `try_write` does
    /// (found through the mutant `done < bytes.len()` -> `<=` in `write`, which made an
    /// empty write call `try_write` and fail while the original returned `Ok`; with
    /// the check up front both behave alike, see mutants/accepted.txt).
    #[test]
    fn empty_write_to_a_failed_console_fails() {
        let f = Fake::new(Backend::Drain(4096));
        let mut c = console(&f);
        assert_eq!(c.write(b""), Ok(()));
        f.page.store_u32(abi::OUT_CONS, 0x1000);
        assert!(c.pending_output().is_err());
        let fault = c.fault().unwrap();
        assert_eq!(c.try_write(b""), Err(Error::Failed(fault)));
        assert_eq!(
            c.write(b""),
            Err(WriteError {
                written: 0,
                error: Error::Failed(fault)
            })
        );
    }

    /// Every stall of a long write gets its own kick: once the backend made room and
    /// the writer filled it again, the next stall notifies again (mutant: `n > 0` ->
    /// `n < 0` in `write`, which kept the first stall's `kicked` for the whole write).
    #[test]
    fn each_stall_of_a_long_write_kicks_once() {
        let f = Fake::new(Backend::Drain(1000));
        let mut c = console(&f);
        let data = pattern(5000);
        c.write(&data).unwrap();
        let s = c.stats();
        assert_eq!((s.written, s.waits), (5000, 3));
        // Writes that moved data: 2048, 1000, 1000, 952; one kick for each stall.
        assert_eq!(s.notifies, 4 + 3);
        assert_eq!(f.sends.get(), 7);
        f.drain(5000);
        assert_eq!(f.seen(), data);
    }

    /// Output the backend has not consumed yet is counted (mutant: `pending_output`
    /// -> `Ok(0)`).
    #[test]
    fn pending_output_counts_unconsumed_bytes() {
        let f = Fake::new(Backend::Stuck);
        let mut c = console(&f);
        assert_eq!(c.pending_output(), Ok(0));
        assert_eq!(c.try_write(b"hello"), Ok(5));
        assert_eq!(c.pending_output(), Ok(5));
        f.drain(2);
        assert_eq!(c.pending_output(), Ok(3));
    }

    /// `Debug` shows the port, the fault, the stall mark and the counters (mutant:
    /// `Console`'s `Debug::fmt` -> `Ok(())`).
    #[test]
    fn console_debug_shows_its_state() {
        let f = Fake::new(Backend::Drain(4096));
        let mut c = console(&f);
        c.write(b"abc").unwrap();
        assert_eq!(
            format!("{c:?}"),
            "Console { port: Port(5), failed: None, gone_at: None, stats: Stats { \
             written: 3, read: 0, notifies: 1, waits: 0, notify_errors: 0 }, .. }"
        );
    }
}
