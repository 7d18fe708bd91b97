//! What the domain builder handed over: the `hvm_start_info` block (command line,
//! memory map, modules), read once at boot and copied into the kernel.

use hypercall::abi::memory::E820Entry;
use hypercall::abi::start_info::{MemmapEntry, ModlistEntry, StartInfo, MAGIC, MEMMAP_TYPE_RAM};
use hypercall::Hypercall;
use zerocopy::FromBytes;

use crate::mem::Range;

/// Most memory-map entries kept.
pub const MAX_RANGES: usize = 32;
/// Longest command line kept (longer ones are cut).
pub const MAX_CMDLINE: usize = 1024;

/// The boot information, copied out of guest memory.
pub struct BootInfo {
    /// RAM ranges.
    pub ram: heapless::Vec<Range, MAX_RANGES>,
    /// Memory the kernel must not hand out: the start-info block, the memory map,
    /// the command line and every module.
    pub reserved: heapless::Vec<Range, MAX_RANGES>,
    /// The command line.
    pub cmdline: heapless::String<MAX_CMDLINE>,
    /// `hvm_start_info.version`.
    pub version: u32,
    /// Modules handed over.
    pub modules: u32,
}

/// Reads `len` bytes at guest-physical `addr` (identity-mapped) into a `T`.
fn read_phys<T: FromBytes>(addr: u64) -> Option<T> {
    let len = core::mem::size_of::<T>();
    if addr == 0 || addr.checked_add(len as u64)? > (1 << 32) {
        return None;
    }
    // SAFETY: below 4 GiB is identity-mapped (boot.rs); the domain builder wrote
    // these bytes before the kernel started and nobody else writes them.
    let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, len) };
    T::read_from_bytes(bytes).ok()
}

fn c_string(addr: u64, out: &mut heapless::String<MAX_CMDLINE>) -> u64 {
    let mut n = 0u64;
    while (n as usize) < MAX_CMDLINE - 1 {
        match read_phys::<u8>(addr + n) {
            Some(0) | None => break,
            Some(b) => {
                let _ = out.push(if b.is_ascii() && !b.is_ascii_control() {
                    char::from(b)
                } else {
                    '?'
                });
            }
        }
        n += 1;
    }
    n + 1
}

/// Parses the start-info block at `paddr`. Without a memory map (version 0) the
/// RAM ranges come from `XENMEM_memory_map`.
pub fn read(paddr: u32, hc: &impl Hypercall) -> Result<BootInfo, &'static str> {
    let si: StartInfo = read_phys(u64::from(paddr)).ok_or("no hvm_start_info (%ebx)")?;
    if si.magic != MAGIC {
        return Err("hvm_start_info has a bad magic: not started as a PVH guest");
    }
    let mut b = BootInfo {
        ram: heapless::Vec::new(),
        reserved: heapless::Vec::new(),
        cmdline: heapless::String::new(),
        version: si.version,
        modules: si.nr_modules,
    };
    let _ = b.reserved.push(Range {
        start: u64::from(paddr),
        end: u64::from(paddr) + 56,
    });
    if si.cmdline_paddr != 0 {
        let len = c_string(si.cmdline_paddr, &mut b.cmdline);
        let _ = b.reserved.push(Range {
            start: si.cmdline_paddr,
            end: si.cmdline_paddr + len,
        });
    }
    for i in 0..u64::from(si.nr_modules.min(8)) {
        let at = si.modlist_paddr + i * 32;
        if let Some(m) = read_phys::<ModlistEntry>(at) {
            let _ = b.reserved.push(Range {
                start: m.paddr,
                end: m.paddr.saturating_add(m.size),
            });
        }
        let _ = b.reserved.push(Range {
            start: at,
            end: at + 32,
        });
    }
    if si.version >= 1 && si.memmap_entries > 0 {
        for i in 0..u64::from(si.memmap_entries.min(MAX_RANGES as u32)) {
            let at = si.memmap_paddr + i * 24;
            let e: MemmapEntry = read_phys(at).ok_or("memory map outside RAM")?;
            if e.kind == MEMMAP_TYPE_RAM {
                let _ = b.ram.push(Range {
                    start: e.addr,
                    end: e.addr.saturating_add(e.size),
                });
            }
        }
        let _ = b.reserved.push(Range {
            start: si.memmap_paddr,
            end: si.memmap_paddr + 24 * u64::from(si.memmap_entries),
        });
    } else {
        let mut map = [E820Entry::default(); MAX_RANGES];
        let n = hypercall::Xen(hc)
            .memory_map(&mut map)
            .map_err(|_| "no memory map (start info version 0 and XENMEM_memory_map failed)")?;
        for e in map.iter().take(n) {
            if e.ty == MEMMAP_TYPE_RAM {
                let _ = b.ram.push(Range {
                    start: e.addr,
                    end: e.addr.saturating_add(e.size),
                });
            }
        }
    }
    if b.ram.is_empty() {
        return Err("the memory map has no RAM");
    }
    Ok(b)
}

/// The value of `key=` on the command line (words split at ASCII white space), if
/// present.
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_ascii_whitespace().find_map(|w| {
        let (k, v) = w.split_once('=')?;
        (k == key).then_some(v)
    })
}
