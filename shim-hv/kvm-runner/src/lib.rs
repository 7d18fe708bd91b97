//! The KVM runner: a PVH kernel boots in a KVM virtual machine and finds the Xen ABI
//! there, served by the same xen model, xenstored and backends as in-process guests.
//!
//! ```text
//!  shim-hv process (dom0 + "Xen")                        KVM VM (domain N)
//!  ┌─────────────────────────────────────┐   RAM = GuestMemory of the domain
//!  │ Hypervisor: evtchn · gnttab · params│◀── I/O exit on port 0xF5 ── call hypercall_page+32*nr
//!  │ xenstored · blkback · netback · cons│   KVM_INTERRUPT(callback vector) ──▶ upcall handler
//!  │ vCPU thread (KVM_RUN loop)          │◀── HLT exit ── `sti; hlt`
//!  │ timer thread (singleshot → VIRQ)    │   WRMSR 0x40000000 ─▶ stubs written into the page
//!  └─────────────────────────────────────┘   CPUID 0x40000000.. "XenVMMXenVMM"
//! ```
//!
//! How it fits together (docs/kvm.md has the why and the measurements):
//! - [`domain_spec`] makes the domain: RAM from guest-physical 0, and room for
//!   `shared_info` and grant frames the guest maps into holes of its address space.
//! - [`KvmGuest::start`] checks `/dev/kvm`, creates the VM with the domain's RAM as
//!   memory slot 0, loads the kernel ([`boot`]), sets the Xen CPUID leaves
//!   ([`xenabi`]), traps the hypercall-page MSR (`KVM_X86_SET_MSR_FILTER` with
//!   `KVM_CAP_X86_USER_SPACE_MSR`), puts the vCPU in the PVH entry state, and starts
//!   the vCPU and timer threads. Bad kernels fail here, with one line naming the file.
//! - The vCPU thread (`vcpu.rs`) serves exits; hypercalls go to
//!   [`Hypervisor::hypercall`] with pointer arguments translated through the guest's
//!   page tables ([`access`]); `vcpu_time_info` is kept current ([`clock`]).
//! - The domain ends as in-process ones do: `SCHEDOP_shutdown`, destroy, or a crash
//!   (triple fault, emulation failure, an exit nothing handles). A guest spinning
//!   without exits is still stopped: destroy kicks its vCPU out of `KVM_RUN`.
//!
//! ```no_run
//! use kvm_runner::{self as kvm, boot::BootSpec, KvmGuest};
//! use xen_model::{Hypervisor, HypervisorConfig};
//!
//! kvm::probe().expect("usable /dev/kvm");
//! let hv = Hypervisor::new(HypervisorConfig::default());
//! let dom = hv.create_domain(kvm::domain_spec("pvh", 32)).unwrap();
//! let boot = BootSpec { kernel: "kernel.elf".into(), ..Default::default() };
//! let guest = KvmGuest::start(&hv, dom, &boot, kvm::stderr_log()).unwrap();
//! while !guest.is_finished() {
//!     std::thread::sleep(std::time::Duration::from_millis(100));
//! }
//! println!("exits: {:?}", guest.stats().by_reason);
//! println!("{:?}", guest.join());
//! ```

pub mod access;
pub mod boot;
pub mod clock;
mod vcpu;
pub mod xenabi;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{kvm_cpuid_entry2, kvm_enable_cap, kvm_userspace_memory_region, CpuId};
use kvm_ioctls::{Cap, Kvm, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags};

use boot::{BootError, BootSpec};
use vcpu::{Shared, Vcpu};
use xen_model::{Domain, DomainSpec, DomainState, Hypervisor};

/// Where the runner's log lines go (the daemon's log, stderr, a test's buffer).
pub type LogFn = Arc<dyn Fn(&str) + Send + Sync>;

/// A [`LogFn`] that writes to stderr.
pub fn stderr_log() -> LogFn {
    Arc::new(|s: &str| eprintln!("{s}"))
}

/// Address of the TSS pages KVM wants on Intel hosts (3 pages below the BIOS area,
/// outside any RAM a domain can have).
const TSS_ADDR: usize = 0xfffb_d000;
/// `KVM_CAP_X86_USER_SPACE_MSR`
const CAP_USER_SPACE_MSR: u32 = kvm_bindings::KVM_CAP_X86_USER_SPACE_MSR;
/// `KVM_MSR_EXIT_REASON_FILTER`
const MSR_EXIT_REASON_FILTER: u64 = kvm_bindings::KVM_MSR_EXIT_REASON_FILTER as u64;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a KVM guest could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvmError {
    /// `/dev/kvm` is absent or lacks what the runner needs.
    #[error("/dev/kvm is not usable: {0}")]
    Unusable(String),
    /// A KVM call failed while setting the VM up.
    #[error("KVM: {what}: {err}")]
    Setup {
        /// What was being done.
        what: &'static str,
        /// The error.
        err: String,
    },
    /// The kernel, ramdisk, command line or memory size is unusable.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// A thread could not be started.
    #[error("starting a vCPU thread: {0}")]
    Thread(std::io::Error),
}

fn setup(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    move |e| KvmError::Setup {
        what,
        err: e.to_string(),
    }
}

/// Checks that `/dev/kvm` can run guests here: it opens, makes a VM, and has the
/// user-space MSR exits and MSR filter the hypercall page needs. The error says why
/// not (tests print it and skip; the CLI falls back or refuses with it).
pub fn probe() -> Result<(), String> {
    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let vm = kvm
        .create_vm()
        .map_err(|e| format!("cannot create a VM: {e}"))?;
    if !vm.check_extension(Cap::X86UserSpaceMsr) || !vm.check_extension(Cap::X86MsrFilter) {
        return Err("KVM lacks user-space MSR exits or the MSR filter (Linux 5.10+)".into());
    }
    vm.create_vcpu(0)
        .map_err(|e| format!("cannot create a vCPU: {e}"))?;
    Ok(())
}

/// The spec of a domain for the KVM runner: RAM from guest-physical 0, and room
/// for `shared_info` plus every grant frame in holes of the address space.
pub fn domain_spec(name: impl Into<String>, memory_mib: u64) -> DomainSpec {
    let mut s = DomainSpec::new(name, memory_mib);
    s.first_gfn = hypercall::Gfn(0);
    s.hole_pages = s.max_grant_frames as usize + 1;
    s
}

/// VM exits of one guest, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitStats {
    /// Exits by reason (`io_hypercall`, `io_debugcon`, `hlt`, `msr`, ...).
    pub by_reason: BTreeMap<String, u64>,
    /// All exits.
    pub total: u64,
    /// Upcall vectors injected.
    pub injections: u64,
    /// Exits before the guest's first console output (port 0xE9 or
    /// `CONSOLEIO_write`), if there was any.
    pub first_output_exits: Option<u64>,
    /// Time the vCPU ran guest code or was served by us (not halted).
    pub cpu_time: Duration,
}

/// A guest running in a KVM VM.
pub struct KvmGuest {
    dom: Arc<Domain>,
    shared: Arc<Shared>,
    vcpu: Option<JoinHandle<()>>,
    timer: Option<JoinHandle<()>>,
}

impl fmt::Debug for KvmGuest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvmGuest")
            .field("domain", &self.dom.id().0)
            .finish_non_exhaustive()
    }
}

impl KvmGuest {
    /// Boots `boot` as domain `dom` (made with [`domain_spec`]) and starts it.
    /// Nothing runs if this fails; the domain is left to the caller.
    pub fn start(
        hv: &Arc<Hypervisor>,
        dom: Arc<Domain>,
        boot: &BootSpec,
        log: LogFn,
    ) -> Result<KvmGuest, KvmError> {
        vcpu::install_kick_handler().map_err(KvmError::Unusable)?;
        let kvm =
            Kvm::new().map_err(|e| KvmError::Unusable(format!("cannot open /dev/kvm: {e}")))?;
        let vm = kvm
            .create_vm()
            .map_err(|e| KvmError::Unusable(format!("cannot create a VM: {e}")))?;
        if !vm.check_extension(Cap::X86UserSpaceMsr) || !vm.check_extension(Cap::X86MsrFilter) {
            return Err(KvmError::Unusable(
                "KVM lacks user-space MSR exits or the MSR filter".into(),
            ));
        }
        // Check and load the kernel before any more KVM work: bad input is the
        // common failure.
        let loaded = boot::load(&dom, boot)?;

        vm.set_tss_address(TSS_ADDR)
            .map_err(setup("setting the TSS address"))?;
        let mem = dom.memory();
        let ram = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: mem.first_gfn().addr(),
            memory_size: mem.size() as u64,
            userspace_addr: mem.host_base().as_ptr() as u64,
        };
        // SAFETY: the region is the domain's RAM mapping, which the vCPU thread keeps
        // alive (Arc<Domain>) until after the VM's file descriptors are closed (field
        // order of Vcpu); no other slot overlaps it.
        unsafe { vm.set_user_memory_region(ram) }.map_err(setup("giving the VM its memory"))?;
        vm.enable_cap(&kvm_enable_cap {
            cap: CAP_USER_SPACE_MSR,
            args: [MSR_EXIT_REASON_FILTER, 0, 0, 0],
            ..Default::default()
        })
        .map_err(setup("enabling user-space MSR exits"))?;
        // Deny (so: exit to us) reads and writes of the hypercall MSR only.
        let deny = [0u8; 1];
        vm.set_msr_filter(
            MsrFilterDefaultAction::ALLOW,
            &[MsrFilterRange {
                flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
                base: xenabi::HYPERCALL_MSR,
                msr_count: 1,
                bitmap: &deny,
            }],
        )
        .map_err(setup("trapping the hypercall-page MSR"))?;

        let fd = vm.create_vcpu(0).map_err(setup("creating the vCPU"))?;
        let cpuid = cpuid_table(&kvm, hv, &dom)?;
        fd.set_cpuid2(&cpuid).map_err(setup("setting CPUID"))?;
        let sregs = fd.get_sregs().map_err(setup("reading the vCPU state"))?;
        let (sregs, regs, fpu) = boot::entry_state(sregs, &loaded);
        fd.set_sregs(&sregs)
            .map_err(setup("setting the PVH entry state"))?;
        fd.set_regs(&regs)
            .map_err(setup("setting the PVH entry registers"))?;
        fd.set_fpu(&fpu).map_err(setup("setting the FPU state"))?;
        let tsc_khz = fd.get_tsc_khz().unwrap_or(1_000_000);

        let shared = Arc::new(Shared::new(log, dom.id().0));
        let vcpu = Vcpu::new(
            fd,
            Arc::new(vm),
            hv.clone(),
            dom.clone(),
            shared.clone(),
            tsc_khz,
        );
        let id = dom.id().0;
        let vcpu = std::thread::Builder::new()
            .name(format!("dom{id}-vcpu0"))
            .spawn(move || vcpu.run())
            .map_err(KvmError::Thread)?;
        let (hv2, dom2, sh2) = (hv.clone(), dom.clone(), shared.clone());
        let timer = std::thread::Builder::new()
            .name(format!("dom{id}-timer"))
            .spawn(move || timer_thread(&hv2, &dom2, &sh2));
        let timer = match timer {
            Ok(t) => t,
            Err(e) => {
                shared.stop.store(true, Ordering::SeqCst);
                shared.kick();
                let _ = vcpu.join();
                return Err(KvmError::Thread(e));
            }
        };
        Ok(KvmGuest {
            dom,
            shared,
            vcpu: Some(vcpu),
            timer: Some(timer),
        })
    }

    /// The domain.
    pub fn domain(&self) -> &Arc<Domain> {
        &self.dom
    }

    /// VM exits so far.
    pub fn stats(&self) -> ExitStats {
        let (by_reason, total, cpu_time) = self.shared.counters.snapshot();
        ExitStats {
            by_reason,
            total,
            injections: self.shared.counters.injections.load(Ordering::Relaxed),
            first_output_exits: *lock(&self.shared.first_output_exits),
            cpu_time,
        }
    }

    /// What the guest wrote to the debug console (port 0xE9), the last 64 KiB.
    pub fn debug_output(&self) -> Vec<u8> {
        self.shared.debug_output()
    }

    /// Whether the vCPU has stopped (the domain is finished).
    pub fn is_finished(&self) -> bool {
        self.vcpu.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits until the vCPU stops; returns the domain's state then.
    pub fn join(mut self) -> DomainState {
        self.join_threads(false);
        self.dom.state()
    }

    fn join_threads(&mut self, stop: bool) {
        if stop {
            self.shared.stop.store(true, Ordering::SeqCst);
            self.shared.kick();
            self.shared.poke_timer();
            self.dom.signal().raise();
        }
        if let Some(v) = self.vcpu.take() {
            let _ = v.join();
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.poke_timer();
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
    }
}

impl Drop for KvmGuest {
    /// Stops the VM (if it still runs) and waits for its threads.
    fn drop(&mut self) {
        self.join_threads(true);
    }
}

/// KVM's supported CPUID minus its own hypervisor leaves, plus Xen's; no local APIC.
fn cpuid_table(kvm: &Kvm, hv: &Hypervisor, dom: &Domain) -> Result<CpuId, KvmError> {
    let supported = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(setup("reading the supported CPUID"))?;
    let mut entries: Vec<kvm_cpuid_entry2> = supported
        .as_slice()
        .iter()
        .filter(|e| !xenabi::is_hypervisor_leaf(e.function))
        .copied()
        .collect();
    for e in &mut entries {
        if e.function == 1 {
            e.edx &= !xenabi::LEAF1_EDX_CLEAR;
            e.ecx &= !xenabi::LEAF1_ECX_CLEAR;
            e.ecx |= 1 << 31; // a hypervisor is present
        }
    }
    for l in xenabi::xen_leaves(hv.config().xen_version, dom.id().0, 0) {
        entries.push(kvm_cpuid_entry2 {
            function: l.function,
            index: l.index,
            flags: 0,
            eax: l.regs[0],
            ebx: l.regs[1],
            ecx: l.regs[2],
            edx: l.regs[3],
            ..Default::default()
        });
    }
    CpuId::from_entries(&entries).map_err(|e| KvmError::Setup {
        what: "building the CPUID table",
        err: format!("{e:?}"),
    })
}

/// Fires the singleshot timer while the vCPU runs guest code (a halted vCPU fires
/// it itself), and stops the vCPU when the domain ends while it spins.
fn timer_thread(hv: &Hypervisor, dom: &Domain, shared: &Shared) {
    const SLICE: Duration = Duration::from_millis(50);
    loop {
        if dom.is_finished() || shared.stop.load(Ordering::SeqCst) {
            shared.kick();
            return;
        }
        if dom.is_paused() {
            // Out of KVM_RUN: the vCPU loop then holds until unpaused.
            shared.kick();
        }
        let seen = shared.timer_epoch();
        // Raising VIRQ_TIMER runs the upcall hook, which kicks the vCPU.
        let due = hv.check_timer(dom);
        let wait = due.map_or(SLICE, |d| d.min(SLICE));
        shared.wait_timer(seen, wait);
    }
}
