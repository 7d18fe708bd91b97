//! Loading a PVH kernel into a domain's RAM: the ELF (checked here, loaded by
//! rust-vmm's `linux-loader`), the ramdisk as module 0, the command line, the
//! memory map and `hvm_start_info`; then the vCPU state the PVH boot ABI gives.
//!
//! Guest-physical layout (RAM starts at 0; see docs/kvm.md):
//!
//! | address | what |
//! |---|---|
//! | `0x500` | boot GDT: null, flat code32 `0x08`, flat data `0x10`, TSS `0x18` |
//! | `0x6000` | `hvm_start_info` (56 bytes), then the module list |
//! | `0x7000` | memory map |
//! | `0x8000` | command line (at most [`CMDLINE_MAX`] bytes with its NUL) |
//! | `0x10000`.. | kernel segments (at their `p_paddr`), then the ramdisk |
//! | top 8 pages | xenstore and console rings (reserved in the memory map) |

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use xen_model::Domain;

/// Boot GDT address.
pub const GDT_ADDR: u64 = 0x500;
/// `hvm_start_info` address (what `ebx` points to at entry).
pub const START_INFO_ADDR: u64 = 0x6000;
/// Module list address (right after `hvm_start_info`).
pub const MODLIST_ADDR: u64 = 0x6040;
/// Memory map address.
pub const MEMMAP_ADDR: u64 = 0x7000;
/// Command line address.
pub const CMDLINE_ADDR: u64 = 0x8000;
/// Longest command line, NUL included.
pub const CMDLINE_MAX: usize = 4096;
/// Kernel segments must start here or above (below is the boot information).
pub const KERNEL_MIN: u64 = 0x1_0000;
/// `XEN_HVM_START_MAGIC_VALUE`
pub const START_MAGIC: u32 = 0x336e_c578;
/// `XEN_HVM_MEMMAP_TYPE_RAM`
const MEMMAP_RAM: u32 = 1;
/// `XEN_HVM_MEMMAP_TYPE_RESERVED`
const MEMMAP_RESERVED: u32 = 2;
/// Most program headers accepted.
const MAX_PHDRS: u16 = 128;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
/// `XEN_ELFNOTE_PHYS32_ENTRY`
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const EM_X86_64: u16 = 62;

/// What to boot.
#[derive(Clone, Debug, Default)]
pub struct BootSpec {
    /// The PVH kernel (ELF64 with a `XEN_ELFNOTE_PHYS32_ENTRY` note).
    pub kernel: PathBuf,
    /// An initial ramdisk, given to the kernel as module 0.
    pub ramdisk: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
}

/// Why a kernel could not be loaded: one line naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// The kernel file is unusable (what is wrong with it).
    #[error("kernel {}: {why}", .path.display())]
    Kernel {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The ramdisk file is unusable.
    #[error("ramdisk {}: {why}", .path.display())]
    Ramdisk {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The domain's memory cannot hold what it must.
    #[error(
        "kernel {}: memory = {have_mib} MiB is too little ({what}); give it at least {need_mib} MiB",
        .path.display()
    )]
    TooLittleMemory {
        /// The kernel.
        path: PathBuf,
        /// The domain's RAM in MiB.
        have_mib: u64,
        /// What it needs at least, in MiB.
        need_mib: u64,
        /// What does not fit.
        what: String,
    },
    /// The command line is too long.
    #[error(
        "command line of {0} bytes is too long (at most {max} bytes)",
        max = CMDLINE_MAX - 1
    )]
    Cmdline(usize),
}

/// A loaded kernel: where to enter it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The PVH entry (32-bit physical).
    pub entry: u64,
    /// One past the last byte of the kernel image in memory.
    pub kernel_end: u64,
}

/// One loadable segment, as checked before loading.
#[derive(Clone, Copy, Debug)]
struct Segment {
    paddr: u64,
    memsz: u64,
}

fn kernel_err(path: &Path, why: impl Into<String>) -> BootError {
    BootError::Kernel {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(x)
}

/// What [`check_elf`] found in the PT_NOTE segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PvhNote {
    /// No `Xen`/18 note at all.
    Missing,
    /// In the last PT_NOTE segment, with this entry.
    Usable(u32),
    /// Only in an earlier PT_NOTE segment (the loader reads the last one only).
    NotLast,
}

/// Finds a `Xen`/`XEN_ELFNOTE_PHYS32_ENTRY` note in the notes `buf`.
fn find_pvh_note(buf: &[u8]) -> Option<u32> {
    let mut at = 0usize;
    while at + 12 <= buf.len() {
        let namesz = u32_at(buf, at) as usize;
        let descsz = u32_at(buf, at + 4) as usize;
        let ty = u32_at(buf, at + 8);
        let name_at = at + 12;
        let desc_at = name_at.checked_add(namesz.next_multiple_of(4))?;
        let next = desc_at.checked_add(descsz.next_multiple_of(4))?;
        if desc_at.checked_add(descsz)? > buf.len() {
            return None;
        }
        if ty == XEN_ELFNOTE_PHYS32_ENTRY
            && namesz == 4
            && &buf[name_at..name_at + 4] == b"Xen\0"
            && descsz >= 4
        {
            return Some(u32_at(buf, desc_at));
        }
        at = next;
    }
    None
}

/// Checks a kernel file the way [`load`] will, without a domain: for `create` to
/// refuse a bad kernel before anything starts. `memory_mib` is the domain's RAM.
pub fn check_kernel(path: &Path, memory_mib: u64) -> Result<(), BootError> {
    let pages = (memory_mib as usize) << 8;
    let ram_end = (pages as u64)
        .saturating_sub(xen_model::domain::SPECIAL_PAGES)
        .saturating_mul(4096);
    let mut file = File::open(path).map_err(|e| kernel_err(path, e.to_string()))?;
    match check_elf(path, &mut file, ram_end, memory_mib)? {
        PvhNote::Usable(_) => Ok(()),
        n => Err(kernel_err(path, note_message(n))),
    }
}

fn note_message(n: PvhNote) -> &'static str {
    match n {
        PvhNote::NotLast => {
            "its PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) is not in the last PT_NOTE segment, \
             the only one the loader reads"
        }
        _ => "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, type 18): not a PVH kernel",
    }
}

/// Reads the ELF header and program headers and checks what the loader does not:
/// an ELF64 x86_64 file, segments inside the file, `p_filesz <= p_memsz`, segments
/// not overlapping each other, and inside `KERNEL_MIN..ram_end`; finds the PVH note.
fn check_elf(
    path: &Path,
    file: &mut File,
    ram_end: u64,
    ram_mib: u64,
) -> Result<PvhNote, BootError> {
    let len = file
        .metadata()
        .map_err(|e| kernel_err(path, e.to_string()))?
        .len();
    let ph = read_program_headers(path, file, len)?;
    let bounds = Bounds {
        file_len: len,
        ram_end,
        ram_mib,
    };
    let mut segs: Vec<Segment> = Vec::new();
    let mut notes: Vec<Option<u32>> = Vec::new();
    for (i, h) in ph.chunks_exact(56).enumerate() {
        match u32_at(h, 0) {
            PT_NOTE => {
                let (off, size) = (u64_at(h, 8), u64_at(h, 32));
                let mut buf = vec![0u8; size.min(64 << 10) as usize];
                let got =
                    read_upto(file, off, &mut buf).map_err(|e| kernel_err(path, e.to_string()))?;
                notes.push(find_pvh_note(&buf[..got]));
            }
            PT_LOAD => {
                if let Some(s) = check_segment(path, i, h, &bounds, &segs)? {
                    segs.push(s);
                }
            }
            _ => {}
        }
    }
    if segs.is_empty() {
        return Err(kernel_err(path, "no loadable segment"));
    }
    Ok(match notes.last() {
        Some(Some(e)) => PvhNote::Usable(*e),
        _ if notes.iter().any(Option::is_some) => PvhNote::NotLast,
        _ => PvhNote::Missing,
    })
}

/// The ELF header's checks (ELF64, little-endian, x86_64, a program header table
/// inside the file); returns the program header table (`phnum` * 56 bytes).
fn read_program_headers(path: &Path, file: &mut File, len: u64) -> Result<Vec<u8>, BootError> {
    let mut eh = [0u8; 64];
    let n = read_upto(file, 0, &mut eh).map_err(|e| kernel_err(path, e.to_string()))?;
    if n < 4 || eh[..4] != *b"\x7fELF" {
        return Err(kernel_err(
            path,
            "not an ELF file (shim-hv boots PVH ELF kernels)",
        ));
    }
    if eh[4] != 2 {
        return Err(kernel_err(
            path,
            "a 32-bit ELF; shim-hv loads ELF64 PVH kernels (link it as elf_x86_64)",
        ));
    }
    if n < 64 {
        return Err(kernel_err(path, "truncated ELF header"));
    }
    if eh[5] != 1 {
        return Err(kernel_err(path, "a big-endian ELF"));
    }
    let machine = u16_at(&eh, 18);
    if machine != EM_X86_64 {
        return Err(kernel_err(
            path,
            format!("ELF machine {machine}, not x86_64 (62)"),
        ));
    }
    let phoff = u64_at(&eh, 32);
    let phentsize = u16_at(&eh, 54);
    let phnum = u16_at(&eh, 56);
    if phentsize != 56 {
        return Err(kernel_err(
            path,
            format!("program header size {phentsize}, not 56"),
        ));
    }
    if phnum == 0 || phnum > MAX_PHDRS {
        return Err(kernel_err(
            path,
            format!("{phnum} program headers (1..={MAX_PHDRS})"),
        ));
    }
    let ph_end = phoff
        .checked_add(u64::from(phnum) * 56)
        .filter(|e| *e <= len);
    if ph_end.is_none() || phoff < 64 {
        return Err(kernel_err(path, "program headers lie outside the file"));
    }
    let mut ph = vec![0u8; usize::from(phnum) * 56];
    let got = read_upto(file, phoff, &mut ph).map_err(|e| kernel_err(path, e.to_string()))?;
    if got != ph.len() {
        return Err(kernel_err(path, "program headers lie outside the file"));
    }
    Ok(ph)
}

/// What a loadable segment must fit in.
struct Bounds {
    /// The kernel file's size.
    file_len: u64,
    /// End of the RAM the kernel may occupy.
    ram_end: u64,
    /// The domain's RAM in MiB (for the message).
    ram_mib: u64,
}

/// Checks program header `i` (a `PT_LOAD`, bytes `h`) against the file, the RAM and
/// the loadable segments `before` it; `None` for an empty one (nothing to load).
fn check_segment(
    path: &Path,
    i: usize,
    h: &[u8],
    b: &Bounds,
    before: &[Segment],
) -> Result<Option<Segment>, BootError> {
    let offset = u64_at(h, 8);
    let paddr = u64_at(h, 24);
    let filesz = u64_at(h, 32);
    let memsz = u64_at(h, 40);
    if memsz == 0 {
        return Ok(None);
    }
    if filesz > memsz {
        return Err(kernel_err(
            path,
            format!("segment {i}: file size {filesz:#x} exceeds memory size {memsz:#x}"),
        ));
    }
    if offset.checked_add(filesz).is_none_or(|e| e > b.file_len) {
        return Err(kernel_err(
            path,
            format!("segment {i}: its bytes lie outside the file"),
        ));
    }
    let Some(end) = paddr.checked_add(memsz) else {
        return Err(kernel_err(
            path,
            format!("segment {i}: address {paddr:#x} + size {memsz:#x} overflows"),
        ));
    };
    if paddr < KERNEL_MIN {
        return Err(kernel_err(
            path,
            format!(
                "segment {i} at {paddr:#x} overlaps the boot information below {KERNEL_MIN:#x}"
            ),
        ));
    }
    if end > b.ram_end {
        let need = end.div_ceil(1 << 20) + 1;
        if end <= xen_model::mem::GuestMemory::MAX_PAGES as u64 * 4096 {
            return Err(BootError::TooLittleMemory {
                path: path.to_path_buf(),
                have_mib: b.ram_mib,
                need_mib: need,
                what: format!(
                    "segment {i} ends at {end:#x}, RAM for the kernel ends at {:#x}",
                    b.ram_end
                ),
            });
        }
        return Err(kernel_err(
            path,
            format!("segment {i} ({paddr:#x}..{end:#x}) lies outside any RAM shim-hv can give"),
        ));
    }
    if let Some((j, o)) = before
        .iter()
        .enumerate()
        .find(|(_, s)| paddr < s.paddr + s.memsz && s.paddr < end)
    {
        return Err(kernel_err(
            path,
            format!(
                "segments overlap: {paddr:#x}..{end:#x} and {:#x}..{:#x} (loadable segments {j} and {})",
                o.paddr,
                o.paddr + o.memsz,
                before.len()
            ),
        ));
    }
    Ok(Some(Segment { paddr, memsz }))
}

fn read_upto(file: &mut File, at: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    file.seek(SeekFrom::Start(at))?;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A `vm-memory` view of the domain's RAM for `linux-loader` (no copy, no
/// ownership: the domain's [`xen_model::mem::GuestMemory`] owns the mapping).
fn ram_view(dom: &Domain) -> Result<GuestMemoryMmap, String> {
    let mem = dom.memory();
    // SAFETY: host_base..+size is the domain's live RAM mapping (anonymous, private,
    // read-write, MAP_NORESERVE, as mem.rs maps it); `dom` keeps it mapped for as
    // long as the caller borrows it, which outlives this view (dropped in `load`);
    // the region is not owned, so dropping it unmaps nothing.
    let region = unsafe {
        MmapRegion::<()>::build_raw(
            mem.host_base().as_ptr(),
            mem.size(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        )
    }
    .map_err(|e| e.to_string())?;
    let region = GuestRegionMmap::new(region, GuestAddress(mem.first_gfn().addr()))
        .ok_or("guest RAM overflows")?;
    GuestMemoryMmap::from_regions(vec![region]).map_err(|e| e.to_string())
}

/// Loads `spec` into `dom`'s RAM (which starts at gfn 0) and writes the boot
/// information. Checks everything before writing guest memory.
pub fn load(dom: &Domain, spec: &BootSpec) -> Result<Loaded, BootError> {
    let path = spec.kernel.as_path();
    let mem = dom.memory();
    let ram_end = dom.special_base().addr();
    let ram_mib = (mem.size() >> 20) as u64;
    if mem.first_gfn().0 != 0 {
        return Err(kernel_err(path, "the domain's RAM does not start at 0"));
    }
    if spec.cmdline.len() + 1 > CMDLINE_MAX || spec.cmdline.contains('\0') {
        return Err(BootError::Cmdline(spec.cmdline.len()));
    }
    let mut file = File::open(path).map_err(|e| kernel_err(path, e.to_string()))?;
    if ram_end <= KERNEL_MIN {
        return Err(BootError::TooLittleMemory {
            path: path.to_path_buf(),
            have_mib: ram_mib,
            need_mib: 1,
            what: "no room for a kernel".into(),
        });
    }
    let note = check_elf(path, &mut file, ram_end, ram_mib)?;
    if !matches!(note, PvhNote::Usable(_)) {
        return Err(kernel_err(path, note_message(note)));
    }
    let view = ram_view(dom).map_err(|e| kernel_err(path, e))?;
    let r = Elf::load(&view, None, &mut file, None)
        .map_err(|e| kernel_err(path, format!("cannot load: {e}")))?;
    let entry = match r.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(a) => a.0,
        _ => return Err(kernel_err(
            path,
            "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, type 18, in the last PT_NOTE segment)",
        )),
    };
    if !(KERNEL_MIN..ram_end).contains(&entry) || entry > u64::from(u32::MAX) {
        return Err(kernel_err(
            path,
            format!("PVH entry {entry:#x} is outside the kernel's RAM"),
        ));
    }
    let kernel_end = r.kernel_end;

    // The ramdisk, page-aligned after the kernel.
    let mut modules = Vec::new();
    if let Some(rd) = &spec.ramdisk {
        let rd_err = |why: String| BootError::Ramdisk {
            path: rd.clone(),
            why,
        };
        let data = std::fs::read(rd).map_err(|e| rd_err(e.to_string()))?;
        if data.is_empty() {
            return Err(rd_err("empty file".into()));
        }
        let at = kernel_end.next_multiple_of(4096);
        let end = at + data.len() as u64;
        if end > ram_end {
            return Err(BootError::TooLittleMemory {
                path: path.to_path_buf(),
                have_mib: ram_mib,
                need_mib: (end + 8 * 4096).div_ceil(1 << 20),
                what: format!(
                    "ramdisk {} ({} bytes) does not fit after the kernel",
                    rd.display(),
                    data.len()
                ),
            });
        }
        mem.write(at, &data).map_err(|e| rd_err(e.to_string()))?;
        modules.push(hvm_modlist_entry {
            paddr: at,
            size: data.len() as u64,
            cmdline_paddr: 0,
            reserved: 0,
        });
    }

    // Command line.
    let mut cmd = spec.cmdline.clone().into_bytes();
    cmd.push(0);
    mem.write(CMDLINE_ADDR, &cmd)
        .map_err(|e| kernel_err(path, e.to_string()))?;

    // Memory map: RAM up to the special pages, which are reserved.
    let end = mem.end_gfn().addr();
    let memmap = [
        hvm_memmap_table_entry {
            addr: 0,
            size: ram_end,
            type_: MEMMAP_RAM,
            reserved: 0,
        },
        hvm_memmap_table_entry {
            addr: ram_end,
            size: end - ram_end,
            type_: MEMMAP_RESERVED,
            reserved: 0,
        },
    ];
    let start = hvm_start_info {
        magic: START_MAGIC,
        version: 1,
        flags: 0,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() { 0 } else { MODLIST_ADDR },
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: 0,
        memmap_paddr: MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    let mut params = BootParams::new(&start, GuestAddress(START_INFO_ADDR));
    params.set_sections(&memmap, GuestAddress(MEMMAP_ADDR));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(MODLIST_ADDR));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, &view)
        .map_err(|e| kernel_err(path, e.to_string()))?;

    // The boot GDT (the PVH ABI leaves the GDT to the guest; this one matches the
    // segment state we enter with, so a reload of the same selectors works).
    let gdt: [u64; 4] = [
        0,
        0x00cf_9b00_0000_ffff, // code32: base 0, limit 4G, present, ring 0, read/exec
        0x00cf_9300_0000_ffff, // data: base 0, limit 4G, read/write
        0x0000_8b00_0000_0067, // TSS: busy 32-bit, limit 0x67
    ];
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write(GDT_ADDR, &gdt_bytes)
        .map_err(|e| kernel_err(path, e.to_string()))?;
    Ok(Loaded { entry, kernel_end })
}

fn segment(selector: u16, type_: u8, s: u8, limit: u32, g: u8, db: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db,
        s,
        l: 0,
        g,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// The PVH entry state (`docs/misc/pvh.pandoc`): 32-bit flat protected mode, paging
/// off, `ebx` = `hvm_start_info`, interrupts off.
pub fn entry_state(mut sregs: kvm_sregs, loaded: &Loaded) -> (kvm_sregs, kvm_regs, kvm_fpu) {
    let code = segment(0x08, 0xb, 1, 0xffff_ffff, 1, 1);
    let data = segment(0x10, 0x3, 1, 0xffff_ffff, 1, 1);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(0x18, 0xb, 0, 0x67, 0, 0);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = 4 * 8 - 1;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = 0x11; // PE | ET
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    let regs = kvm_regs {
        rip: loaded.entry,
        rflags: 0x2,
        rbx: START_INFO_ADDR,
        ..Default::default()
    };
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    (sregs, regs, fpu)
}
