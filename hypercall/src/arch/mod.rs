//! Architecture-specific pieces: CPUID access, the hypercall page.

#[cfg(target_arch = "x86_64")]
pub mod x86_64;
