//! `consback.*`: the console page driven raw, and the console cases.

use hypercall::abi::console as cons;

use super::*;

fn console_page(w: &dyn FrontendWorld) -> R<(FrontPage<'_>, Port)> {
    w.console()
        .ok_or_else(|| "the world has no console page".into())
}

/// Writes `bytes` to the output ring from `out_prod` on and notifies.
fn cons_put(p: &SharedMem<'_>, port: Port, w: &dyn FrontendWorld, bytes: &[u8]) -> R<()> {
    let prod = p.load_u32(cons::OUT_PROD);
    let mut k = 0;
    while k < bytes.len() {
        let c = p.load_u32(cons::OUT_CONS);
        let used = prod.wrapping_add(k as u32).wrapping_sub(c) as usize;
        let Some(room) = cons::OUT_SIZE.checked_sub(used) else {
            return Err(format!("the backend moved out_cons to {c}, past out_prod"));
        };
        if room == 0 {
            if !w.wait() {
                return Err("the backend stopped taking output".into());
            }
            continue;
        }
        for _ in 0..room.min(bytes.len() - k) {
            let at = cons::OUT + prod.wrapping_add(k as u32) as usize % cons::OUT_SIZE;
            p.write(at, &bytes[k..k + 1]);
            k += 1;
        }
        p.store_u32(cons::OUT_PROD, prod.wrapping_add(k as u32));
        w.notify(port)?;
    }
    Ok(())
}

fn cons_output_has(w: &dyn FrontendWorld, want: &[u8]) -> R<()> {
    let mut got = Vec::new();
    until(w, "the output to reach the backend's clients", || {
        got = w.console_output();
        got.windows(want.len()).any(|x| x == want)
    })
    .map_err(|e| format!("{e} ({} bytes so far)", got.len()))
}

fn cons_neighbour_ok(w: &dyn FrontendWorld) -> R<String> {
    let n = w.neighbour().map_err(|e| format!("neighbour: {e}"))?;
    let (p, port) = console_page(&*n)?;
    cons_put(&p.mem, port, &*n, b"still fine\n")?;
    cons_output_has(&*n, b"still fine\n").map_err(|e| format!("neighbour: {e}"))?;
    Ok("another console still carries output".into())
}

/// The backend has failed this console: the page says disconnected.
fn cons_disconnected(w: &dyn FrontendWorld, p: &SharedMem<'_>) -> R<()> {
    until(w, "the page's connection to read DISCONNECTED", || {
        p.load_u8(cons::CONNECTION) == cons::DISCONNECTED
    })
}

fn cons_out_indices(w: &dyn FrontendWorld, ahead: bool) -> R<String> {
    let (p, port) = console_page(w)?;
    let p = p.mem;
    cons_put(&p, port, w, b"ok so far")?;
    cons_output_has(w, b"ok so far")?;
    until(w, "the backend to take the output", || {
        p.load_u32(cons::OUT_CONS) == p.load_u32(cons::OUT_PROD)
    })?;
    let prod = p.load_u32(cons::OUT_PROD);
    let bad = if ahead {
        prod.wrapping_add(5000)
    } else {
        prod.wrapping_sub(2)
    };
    p.store_u32(cons::OUT_PROD, bad);
    w.notify(port)?;
    cons_disconnected(w, &p)?;
    let out = w.console_output();
    if !out.ends_with(b"ok so far") {
        return Err(format!(
            "output after the violation: {:?}",
            String::from_utf8_lossy(&out)
        ));
    }
    Ok(format!(
        "out_prod {prod} -> {bad}: the console failed (page DISCONNECTED), earlier output kept; {}",
        cons_neighbour_ok(w)?
    ))
}

fn cons_in_cons(w: &dyn FrontendWorld) -> R<String> {
    let (p, _port) = console_page(w)?;
    let p = p.mem;
    p.store_u32(cons::IN_CONS, 2000);
    let n = w.console_input(b"x");
    cons_disconnected(w, &p)?;
    let prod = p.load_u32(cons::IN_PROD);
    if prod != 0 {
        return Err(format!(
            "the backend wrote input past a bad in_cons (in_prod {prod})"
        ));
    }
    Ok(format!(
        "in_cons 2000 > in_prod 0: the console failed when a client sent input (send returned {n}), nothing written to the ring; {}",
        cons_neighbour_ok(w)?
    ))
}

fn cons_storm(w: &dyn FrontendWorld) -> R<String> {
    let (p, port) = console_page(w)?;
    for _ in 0..20_000 {
        w.notify(port)?;
    }
    cons_put(&p.mem, port, w, b"after the storm\n")?;
    cons_output_has(w, b"after the storm\n")?;
    if p.mem.load_u8(cons::CONNECTION) != cons::CONNECTED {
        return Err("the storm failed the console".into());
    }
    Ok(format!(
        "20000 empty notifications, then output flows; {}",
        cons_neighbour_ok(w)?
    ))
}

fn cons_binary(w: &dyn FrontendWorld) -> R<String> {
    let (p, port) = console_page(w)?;
    let all: Vec<u8> = (0..=255u8).cycle().take(4096 + 37).collect();
    cons_put(&p.mem, port, w, &all)?;
    let mut got = Vec::new();
    until(w, "every byte at the client", || {
        got = w.console_output();
        got.len() >= all.len()
    })
    .map_err(|e| format!("{e} ({} of {})", got.len(), all.len()))?;
    if got != all {
        let at = got.iter().zip(&all).position(|(a, b)| a != b);
        return Err(format!("{} bytes, first difference at {at:?}", got.len()));
    }
    Ok(format!(
        "{} bytes of every value (more than the ring holds) delivered unchanged",
        all.len()
    ))
}

fn cons_input(w: &dyn FrontendWorld) -> R<String> {
    let (p, port) = console_page(w)?;
    let p = p.mem;
    // Test data repeating every 251 bytes, a period prime to the ring's size: bytes
    // put at the wrong place in the ring do not read back the same.
    let data: Vec<u8> = (0..251u8).cycle().take(3000).collect();
    let mut sent = 0;
    let mut got = Vec::new();
    let mut idle = 0;
    while got.len() < data.len() {
        let rest = &data[sent..];
        if !rest.is_empty() {
            // Never past the end, whatever the world claims it accepted.
            sent = (sent + w.console_input(rest)).min(data.len());
        }
        let (c, pr) = (p.load_u32(cons::IN_CONS), p.load_u32(cons::IN_PROD));
        let avail = pr.wrapping_sub(c) as usize;
        if avail > cons::IN_SIZE {
            return Err(format!(
                "the backend put in_prod {pr} {avail} bytes past in_cons {c}"
            ));
        }
        for k in 0..avail {
            let mut b = [0u8];
            p.read(
                cons::IN + c.wrapping_add(k as u32) as usize % cons::IN_SIZE,
                &mut b,
            );
            got.push(b[0]);
        }
        p.store_u32(cons::IN_CONS, pr);
        w.notify(port)?;
        if avail == 0 {
            idle += 1;
            if !w.wait() {
                return Err(format!(
                    "{} of {} input bytes came ({idle} idle turns)",
                    got.len(),
                    data.len()
                ));
            }
        }
    }
    if got != data {
        let at = got.iter().zip(&data).position(|(a, b)| a != b);
        return Err(format!(
            "input differs: {} of {} bytes, first difference at {at:?}",
            got.len(),
            data.len()
        ));
    }
    // Row 36 from the host's side: a guest that stops reading does not make the
    // backend queue without bound.
    let flood = vec![b'z'; 1 << 20];
    let mut accepted = 0;
    for _ in 0..8 {
        accepted = w.console_input(&flood).saturating_add(accepted);
    }
    if accepted >= 8 << 20 {
        return Err("8 MiB of input queued for a guest that never reads".into());
    }
    Ok(format!(
        "3000 bytes of input (3 rings' worth) arrived in order; a guest not reading: \
         {accepted} of 8 MiB accepted, the rest refused"
    ))
}

/// The `consback.*` cases.
pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "consback.out_prod_far_ahead (row 37, C1)",
            class: Class::Console,
            front: "writes output, then claims 5000 bytes waiting (more than the ring)",
            expect: "that console failed (page DISCONNECTED), earlier output kept; others fine",
            run: |w| cons_out_indices(w, true),
        },
        Case {
            name: "consback.out_prod_backwards (row 2)",
            class: Class::Console,
            front: "moves out_prod two bytes back behind out_cons",
            expect: "that console failed (page DISCONNECTED), earlier output kept",
            run: |w| cons_out_indices(w, false),
        },
        Case {
            name: "consback.in_cons_scribbled (C1)",
            class: Class::Console,
            front: "sets in_cons past in_prod; then a client sends input",
            expect: "the console failed, no input written past the bad index; others fine",
            run: cons_in_cons,
        },
        Case {
            name: "consback.event_storm (C2, row 24)",
            class: Class::Console,
            front: "20000 notifications with no bytes moving, then output",
            expect: "the output still arrives, the console stays connected",
            run: cons_storm,
        },
        Case {
            name: "consback.binary_and_input (C3, row 36)",
            class: Class::Console,
            front: "writes every byte value (more than the ring holds); takes 3000 bytes of \
                input; then stops reading input while clients send 8 MiB",
            expect: "output delivered unchanged; input in order; input queued for a guest \
                 that does not read is bounded",
            run: |w| Ok(format!("{}; {}", cons_binary(w)?, cons_input(w)?)),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::super::tests::Scripted;
    use super::*;

    fn page(w: &Scripted) -> SharedMem<'_> {
        w.alloc_page().expect("a page").mem
    }

    #[test]
    fn cons_put_writes_at_out_prod_and_wraps() {
        let w = Scripted::new();
        let p = page(&w);
        p.store_u32(cons::OUT_CONS, 2040);
        p.store_u32(cons::OUT_PROD, 2040);
        cons_put(&p, Port(3), &w, b"0123456789abcdef").unwrap();
        assert_eq!(p.load_u32(cons::OUT_PROD), 2056);
        let mut ring = vec![0u8; cons::OUT_SIZE];
        p.read(cons::OUT, &mut ring);
        assert_eq!(&ring[2040..], b"01234567");
        assert_eq!(&ring[..8], b"89abcdef");
        assert!(ring[8..2040].iter().all(|&b| b == 0));
    }

    #[test]
    fn cons_put_stops_at_a_full_ring_and_a_bad_out_cons() {
        let w = Scripted::new();
        let p = page(&w);
        // Room for 3 bytes; the backend never takes more.
        p.store_u32(cons::OUT_CONS, 10);
        p.store_u32(cons::OUT_PROD, 10 + cons::OUT_SIZE as u32 - 3);
        let e = cons_put(&p, Port(3), &w, b"12345").unwrap_err();
        assert_eq!(e, "the backend stopped taking output");
        assert_eq!(p.load_u32(cons::OUT_PROD), 10 + cons::OUT_SIZE as u32);
        assert_eq!(w.waits.get(), 10);
        // out_cons one past out_prod.
        let w = Scripted::new();
        let p = page(&w);
        p.store_u32(cons::OUT_CONS, 11);
        p.store_u32(cons::OUT_PROD, 10);
        let e = cons_put(&p, Port(3), &w, b"x").unwrap_err();
        assert_eq!(e, "the backend moved out_cons to 11, past out_prod");
        assert_eq!(p.load_u32(cons::OUT_PROD), 10);
    }

    #[test]
    fn the_output_must_hold_the_bytes_and_the_page_say_disconnected() {
        let w = Scripted {
            output: b"<ok so far>".to_vec(),
            ..Scripted::new()
        };
        cons_output_has(&w, b"ok so far").unwrap();
        let w = Scripted {
            output: b"ok so fa".to_vec(),
            ..Scripted::new()
        };
        let e = cons_output_has(&w, b"ok so far").unwrap_err();
        assert!(e.ends_with("(8 bytes so far)"), "{e}");

        let w = Scripted::new();
        let p = page(&w);
        p.store_u8(cons::CONNECTION, cons::CONNECTED);
        let e = cons_disconnected(&w, &p).unwrap_err();
        assert!(e.contains("DISCONNECTED"), "{e}");
        p.store_u8(cons::CONNECTION, cons::DISCONNECTED);
        cons_disconnected(&w, &p).unwrap();
    }
}
