//! Console input as the frontend reads it (xencons): the fuzzer is the console backend,
//! writing any bytes and any `in_prod`/`in_cons` values into the ring page. Reads give
//! bytes or a typed error, never a panic, and nothing beyond what was produced.
#![no_main]

use std::time::Duration;

use hypercall::abi::console as ring;
use hypercall::Port;
use libfuzzer_sys::fuzz_target;
use xencons::{Config, Console};
use xenkit_fuzz::{Cursor, HostPlatform};

fuzz_target!(|data: &[u8]| {
    let host = HostPlatform::default();
    let region = host.pages(1);
    let page = region.mem();
    let mut c = Cursor::new(data);
    let start = c.u32();
    page.store_u32(ring::IN_CONS, start);
    page.store_u32(ring::IN_PROD, start);
    page.store_u32(ring::OUT_CONS, start);
    page.store_u32(ring::OUT_PROD, start);
    let mut con = match Console::new(&host, region.gfn(), Port(2), Config::default()) {
        Ok(c) => c,
        Err(_) => return,
    };
    let mut buf = [0u8; 2048];
    while !c.is_empty() {
        match c.u8() % 4 {
            // Produce some bytes.
            0 | 1 => {
                let n = usize::from(c.u8());
                let bytes = c.bytes(n);
                let prod = page.load_u32(ring::IN_PROD);
                for (i, b) in bytes.iter().enumerate() {
                    let at = ring::IN + (prod.wrapping_add(i as u32) as usize % ring::IN_SIZE);
                    page.write(at, core::slice::from_ref(b));
                }
                page.store_u32(ring::IN_PROD, prod.wrapping_add(bytes.len() as u32));
            }
            // Raw indices.
            2 => {
                let which = if c.u8().is_multiple_of(2) {
                    ring::IN_PROD
                } else {
                    ring::IN_CONS
                };
                page.store_u32(which, c.u32());
            }
            _ => {
                let n = usize::from(c.u16()) % buf.len() + 1;
                if let Ok(got) = con.read_timeout(&mut buf[..n], Duration::from_millis(1)) {
                    assert!(got <= n);
                }
                let _ = con.write(b"x");
            }
        }
    }
});
