//! Shared by the KVM tests: the /dev/kvm check (skip with one line where it is
//! absent or unusable), building the small assembler guests, running them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_runner::{self as kvm, boot::BootSpec, KvmGuest, LogFn};
use xen_backends::console::{Console, ConsoleBackend, ConsoleConfig, Sink};
use xen_model::{Domain, DomainState, Hypervisor, HypervisorConfig};

/// Whether KVM tests can run here; prints one line and returns false if not.
pub fn kvm_usable(test: &str) -> bool {
    match kvm::probe() {
        Ok(()) => true,
        Err(why) => {
            println!("skipping {test}: {why}");
            false
        }
    }
}

/// Assembles `tests/kvm_guests/<name>.S` (with `guest.ld`) into an ELF64 PVH kernel.
pub fn build_guest(name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kvm_guests");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.elf"));
    let st = Command::new("cc")
        .args(["-nostdlib", "-static", "-no-pie", "-Wl,--build-id=none"])
        .arg("-Wl,--no-warn-rwx-segments")
        .arg(format!("-Wl,-T,{}", src.join("guest.ld").display()))
        .arg("-o")
        .arg(&out)
        .arg(src.join(format!("{name}.S")))
        .status()
        .expect("running cc (needed to build the test guests)");
    assert!(st.success(), "assembling {name}.S failed");
    out
}

/// Collected log lines.
#[derive(Clone, Default)]
pub struct Log(pub Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn func(&self) -> LogFn {
        let l = self.0.clone();
        Arc::new(move |s: &str| l.lock().unwrap().push(s.to_string()))
    }
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A hypervisor, a console backend, one KVM domain.
pub struct Vm {
    pub hv: Arc<Hypervisor>,
    pub consoles: Arc<ConsoleBackend>,
    pub dom: Arc<Domain>,
    pub console: Arc<Console>,
    pub guest: Option<KvmGuest>,
    pub log: Log,
}

impl Vm {
    pub fn new(name: &str, mib: u64) -> Vm {
        let hv = Hypervisor::new(HypervisorConfig::default());
        let consoles = ConsoleBackend::new(&hv, ConsoleConfig::default());
        let mut spec = kvm::domain_spec(name, mib);
        spec.console_sink = Some(consoles.early_sink());
        let dom = hv.create_domain(spec).unwrap();
        let console = consoles.start(&dom, Sink::None).unwrap();
        Vm {
            hv,
            consoles,
            dom,
            console,
            guest: None,
            log: Log::default(),
        }
    }

    pub fn boot(&mut self, kernel: &Path, cmdline: &str) -> Result<(), kvm::KvmError> {
        let spec = BootSpec {
            kernel: kernel.to_path_buf(),
            ramdisk: None,
            cmdline: cmdline.into(),
        };
        self.guest = Some(KvmGuest::start(
            &self.hv,
            self.dom.clone(),
            &spec,
            self.log.func(),
        )?);
        Ok(())
    }

    pub fn guest(&self) -> &KvmGuest {
        self.guest.as_ref().unwrap()
    }

    /// Waits until the domain is finished; panics after `t`.
    pub fn wait_end(&self, t: Duration) -> DomainState {
        let s = self
            .dom
            .wait_state(t, |s| s.is_finished())
            .unwrap_or_else(|| {
                panic!(
                    "guest did not finish in {t:?}; debug output {:?}, console {:?}, log {:?}",
                    String::from_utf8_lossy(&self.guest().debug_output()),
                    String::from_utf8_lossy(&self.console.history()),
                    self.log.lines()
                )
            });
        s
    }

    /// Waits until the debug console (0xE9) shows `needle`.
    pub fn wait_debug(&self, needle: &str, t: Duration) -> String {
        let end = Instant::now() + t;
        loop {
            let out = String::from_utf8_lossy(&self.guest().debug_output()).into_owned();
            if out.contains(needle) {
                return out;
            }
            assert!(
                Instant::now() < end,
                "no {needle:?} on the debug console in {t:?}: {out:?}; state {:?}; log {:?}",
                self.dom.state(),
                self.log.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A loadable segment for [`elf64`]: physical address, bytes, memory size.
pub struct Seg<'a> {
    pub paddr: u64,
    pub bytes: &'a [u8],
    pub memsz: u64,
}

/// A minimal ELF64 x86_64 executable: the segments, and a PVH note with `entry`
/// (no note if `None`), written to the test's temporary directory as `name`.
pub fn elf64(name: &str, segs: &[Seg], entry: Option<u32>) -> PathBuf {
    let phnum = segs.len() + usize::from(entry.is_some());
    let mut data_off = 64 + 56 * phnum;
    let mut ph = Vec::new();
    let mut body = Vec::new();
    for s in segs {
        ph.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        ph.extend_from_slice(&7u32.to_le_bytes()); // RWX
        ph.extend_from_slice(&(data_off as u64).to_le_bytes());
        ph.extend_from_slice(&s.paddr.to_le_bytes()); // vaddr
        ph.extend_from_slice(&s.paddr.to_le_bytes()); // paddr
        ph.extend_from_slice(&(s.bytes.len() as u64).to_le_bytes());
        ph.extend_from_slice(&s.memsz.to_le_bytes());
        ph.extend_from_slice(&4096u64.to_le_bytes());
        body.extend_from_slice(s.bytes);
        data_off += s.bytes.len();
    }
    if let Some(e) = entry {
        let mut note = Vec::new();
        for v in [4u32, 4, 18] {
            note.extend_from_slice(&v.to_le_bytes());
        }
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&e.to_le_bytes());
        ph.extend_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        ph.extend_from_slice(&4u32.to_le_bytes());
        ph.extend_from_slice(&(data_off as u64).to_le_bytes());
        ph.extend_from_slice(&0u64.to_le_bytes());
        ph.extend_from_slice(&0u64.to_le_bytes());
        ph.extend_from_slice(&(note.len() as u64).to_le_bytes());
        ph.extend_from_slice(&(note.len() as u64).to_le_bytes());
        ph.extend_from_slice(&4u64.to_le_bytes());
        body.extend_from_slice(&note);
    }
    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&62u16.to_le_bytes()); // x86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&u64::from(entry.unwrap_or(0)).to_le_bytes());
    f.extend_from_slice(&64u64.to_le_bytes()); // phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // shoff
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&64u16.to_le_bytes());
    f.extend_from_slice(&56u16.to_le_bytes());
    f.extend_from_slice(&(phnum as u16).to_le_bytes());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ph);
    f.extend_from_slice(&body);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&out, f).unwrap();
    out
}

/// examples/unikernel, built (or brought up to date) once per test binary with its
/// own `cargo build --release`; the path of its ELF.
pub fn unikernel() -> PathBuf {
    static ELF: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ELF.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/unikernel");
        let st = Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet"])
            .current_dir(&dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .status()
            .expect("running cargo for examples/unikernel");
        assert!(st.success(), "building examples/unikernel failed");
        dir.join("target/x86_64-unknown-none/release/unikernel")
    })
    .clone()
}
