//! docs/hostile-input.md E5: events are routed per port and devices do not interfere. Six
//! consoles (six guests, six dom0 ports) share one console backend; the first one's
//! sink is stuck (its buffer, then its ring, fill up and its guest waits, kicking its
//! port) while the five others write 16 KiB each: all of it arrives, in order, and
//! those guests finish while the first is still stuck. Then the stuck sink is
//! released and the first guest's output arrives whole.

mod console_util;

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex};

use console_util::{join_poweroff, pattern, setup, Capture, LONG};
use xen_backends::console::{ConsoleConfig, Sink};
use xencons::Console;

/// A sink that accepts nothing until opened (bounded: after 4 × LONG it opens by
/// itself, so a failing test cannot hang), then records like `Capture`.
#[derive(Clone)]
struct Gate {
    open: Arc<(Mutex<bool>, Condvar)>,
    cap: Capture,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            open: Arc::new((Mutex::new(false), Condvar::new())),
            cap: Capture::new(),
        }
    }

    fn open(&self) {
        *self.open.0.lock().unwrap() = true;
        self.open.1.notify_all();
    }
}

impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (m, cv) = &*self.open;
        let g = m.lock().unwrap();
        let _g = cv.wait_timeout_while(g, 4 * LONG, |open| !*open).unwrap();
        self.cap.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn e5_a_stuck_console_does_not_hold_up_the_others() {
    const N: usize = 6;
    const LEN: usize = 16 * 1024;
    let cfg = ConsoleConfig {
        buffer_bytes: 512,
        ..ConsoleConfig::default()
    };
    let t = setup(cfg);
    let gate = Gate::new();
    let mut caps = Vec::new();
    let mut consoles = Vec::new();
    let mut guests = Vec::new();
    for i in 0..N {
        let dom = t.domain(&format!("e5-{i}"));
        let sink: Box<dyn Write + Send> = if i == 0 {
            Box::new(gate.clone())
        } else {
            let c = Capture::new();
            caps.push(c.clone());
            Box::new(c)
        };
        consoles.push(t.consoles.start(&dom, Sink::Writer(sink)).unwrap());
        let data = pattern(LEN, i as u8);
        let h =
            t.hv.spawn_guest(dom, move |g| {
                let cfg = xencons::Config::default().with_stall_timeout(4 * LONG);
                let mut c = Console::from_hvm_params_with(&*g, cfg).expect("console");
                c.write(&data).expect("write");
                if i == 0 {
                    assert!(
                        c.stats().waits > 0,
                        "the stuck console's guest never waited"
                    );
                }
            })
            .unwrap();
        guests.push(h);
    }
    let mut guests = guests.into_iter();
    let stuck = guests.next().unwrap();
    for (i, h) in guests.enumerate() {
        join_poweroff(h);
        assert_eq!(
            caps[i].wait_len(LEN),
            pattern(LEN, i as u8 + 1),
            "console {}",
            i + 1
        );
    }
    // The others are done; the stuck one still waits (its sink took nothing).
    assert!(!stuck.is_finished(), "the stuck console's guest finished");
    assert!(gate.cap.get().is_empty());
    let st = consoles[0].stats();
    assert!(st.backpressure > 0, "{st:?}");
    gate.open();
    join_poweroff(stuck);
    assert_eq!(gate.cap.wait_len(LEN), pattern(LEN, 0));
    for c in &consoles {
        assert_eq!(c.stats().dropped, 0);
    }
}
