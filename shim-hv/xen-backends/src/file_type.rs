//! What a file type is called in an error message.
//!
//! xl-config words its own path checks the same way; the backends do not depend on
//! the config reader for these few words.

use std::os::unix::fs::FileTypeExt;

/// `ft` as a message names it: "a FIFO", "a directory", ...
pub(crate) fn name(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "an unknown file type"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_what_it_finds() {
        let meta = |p: &str| std::fs::metadata(p).unwrap().file_type();
        assert_eq!(super::name(meta("/")), "a directory");
        assert_eq!(super::name(meta("/dev/null")), "a character device");
        assert_eq!(
            super::name(meta(env!("CARGO_MANIFEST_PATH"))),
            "a regular file"
        );
    }
}
