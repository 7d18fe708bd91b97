//! xl/xm domain config text (shim-hv's parser): any bytes give a config or a one-line
//! error naming the file, never a panic; a parsed config's disk targets, vifs and
//! channels are displayable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xl_config::DomainConfig;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match DomainConfig::parse_str("fuzz.cfg", &text) {
        Ok(cfg) => {
            let _ = format!("{cfg:?}");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            assert!(
                msg.starts_with("fuzz.cfg"),
                "error does not name the file: {msg}"
            );
            assert!(!msg.contains('\n'), "error is not one line: {msg:?}");
        }
    }
});
