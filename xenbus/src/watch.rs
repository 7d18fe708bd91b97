//! Watch events and the bounded queue that holds them until the caller asks.
//!
//! xenstored may send `XS_WATCH_EVENT` messages at any time, in particular while we
//! wait for the reply to a request. They are queued here; the queue has a fixed
//! capacity and drops the *oldest* event when full (docs/hostile-input.md row 30: a flood costs
//! memory only up to the bound). Every loss is counted, so a consumer that may have
//! missed its event re-reads the state it watches.

use heapless::{Deque, String};

/// Events the queue holds.
pub const WATCH_QUEUE_LEN: usize = 32;
/// Longest event path kept (longer events are dropped and counted as lost).
pub const WATCH_PATH_MAX: usize = 256;
/// Longest token (watch registration refuses longer ones).
pub const WATCH_TOKEN_MAX: usize = 64;

/// One `XS_WATCH_EVENT`: the node that changed and the token of the watch that fired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    path: String<WATCH_PATH_MAX>,
    token: String<WATCH_TOKEN_MAX>,
}

impl WatchEvent {
    /// Builds an event; `None` if a part is too long.
    pub fn new(path: &str, token: &str) -> Option<WatchEvent> {
        let mut p = String::new();
        p.push_str(path).ok()?;
        let mut t = String::new();
        t.push_str(token).ok()?;
        Some(WatchEvent { path: p, token: t })
    }

    /// Parses an event payload `path\0token\0` (the final NUL optional).
    pub(crate) fn parse(payload: &[u8]) -> Option<WatchEvent> {
        let mut parts = payload.split(|&b| b == 0);
        let path = core::str::from_utf8(parts.next()?).ok()?;
        let token = core::str::from_utf8(parts.next()?).ok()?;
        // Anything after the token's NUL must be empty.
        if parts.any(|rest| !rest.is_empty()) {
            return None;
        }
        WatchEvent::new(path, token)
    }

    /// The path that changed (relative if the watch was registered relative).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The token given to [`crate::Xenstore::watch`].
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// A bounded FIFO of watch events that drops the oldest on overflow.
pub(crate) struct WatchQueue {
    events: Deque<WatchEvent, WATCH_QUEUE_LEN>,
    lost: u64,
    /// Moves whenever an event is queued or lost (monotonic, wraps).
    received: u64,
    overflowed: bool,
}

impl WatchQueue {
    pub(crate) const fn new() -> WatchQueue {
        WatchQueue {
            events: Deque::new(),
            lost: 0,
            received: 0,
            overflowed: false,
        }
    }

    /// Drops every queued event and the loss record.
    pub(crate) fn clear(&mut self) {
        self.events.clear();
        self.lost = 0;
        self.overflowed = false;
    }

    /// Records that an event was lost (dropped or unparseable).
    pub(crate) fn lose(&mut self) {
        self.lost = self.lost.wrapping_add(1);
        self.received = self.received.wrapping_add(1);
        self.overflowed = true;
    }

    pub(crate) fn push(&mut self, ev: WatchEvent) {
        self.received = self.received.wrapping_add(1);
        if self.events.is_full() {
            self.events.pop_front();
            self.lose();
        }
        // Cannot fail: there is room now.
        let _ = self.events.push_back(ev);
    }

    pub(crate) fn pop(&mut self) -> Option<WatchEvent> {
        self.events.pop_front()
    }

    /// Removes and returns the oldest event with `token`, keeping the others in order.
    pub(crate) fn take(&mut self, token: &str) -> Option<WatchEvent> {
        let mut found = None;
        for _ in 0..self.events.len() {
            let Some(ev) = self.events.pop_front() else {
                break;
            };
            if found.is_none() && ev.token() == token {
                found = Some(ev);
            } else {
                let _ = self.events.push_back(ev);
            }
        }
        found
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn lost(&self) -> u64 {
        self.lost
    }

    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    pub(crate) fn take_overflowed(&mut self) -> bool {
        core::mem::replace(&mut self.overflowed, false)
    }

    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_the_wire_form_only() {
        let ev = WatchEvent::parse(b"device/vbd\0tok\0").unwrap();
        assert_eq!((ev.path(), ev.token()), ("device/vbd", "tok"));
        assert!(WatchEvent::parse(b"a\0b").is_some());
        assert!(WatchEvent::parse(b"no-token").is_none());
        assert!(WatchEvent::parse(b"a\0b\0extra\0").is_none());
        assert!(WatchEvent::parse(b"\xff\0b\0").is_none());
        let long = [b'a'; WATCH_PATH_MAX + 1];
        let mut p = std::vec::Vec::from(&long[..]);
        p.extend_from_slice(b"\0t\0");
        assert!(WatchEvent::parse(&p).is_none());
    }

    #[test]
    fn queue_drops_oldest_and_take_keeps_order() {
        extern crate std;
        let mut q = WatchQueue::new();
        for i in 0..WATCH_QUEUE_LEN + 3 {
            q.push(
                WatchEvent::new(&std::format!("p{i}"), if i % 2 == 0 { "a" } else { "b" }).unwrap(),
            );
        }
        assert_eq!(q.len(), WATCH_QUEUE_LEN);
        assert_eq!(q.lost(), 3);
        assert!(q.take_overflowed());
        assert!(!q.overflowed());
        // Oldest kept is p3 (a "b"); first "a" is p4.
        assert_eq!(q.take("a").unwrap().path(), "p4");
        assert_eq!(q.pop().unwrap().path(), "p3");
        assert_eq!(q.pop().unwrap().path(), "p5");
    }
}
